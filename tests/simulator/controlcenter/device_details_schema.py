"""Control Center's Device Details answer, written down as a JSON Schema for the tests.

Facts taken from the published third-party OpenAPI description of the API: every field is a string;
only ``customer``, ``endConsumerId``, the two fixed IP addresses, ``simNotes``, ``deviceID`` and ``eid``
may be null; no field is required; ``accountId`` is a string; the fixed IPv4 address is an IPv4 address.

Dates: that description types them as RFC 3339 date-times, but its own example answer (and Cisco's
sandbox sample) writes ``2016-06-29 00:21:33.339+0000``, a space instead of ``T`` and no colon in the
offset. The simulator writes the example's form, so the schema checks that form.

``EXAMPLE_KEYS`` are the keys of that example answer: a faithful answer carries all of them.
"""

from __future__ import annotations

from typing import Any

DATE_PATTERN = r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d{3}\+0000$"

_TEXT = {"type": "string"}
_NULLABLE = {"type": ["string", "null"]}
_DATE = {"type": "string", "pattern": DATE_PATTERN}

NULLABLE = ("customer", "endConsumerId", "simNotes", "deviceID", "eid")
TEXT = (
    "iccid",
    "imsi",
    "msisdn",
    "imei",
    "status",
    "ratePlan",
    "communicationPlan",
    "accountId",
    "modemID",
    "globalSimType",
    "simProfileId",
    *(f"operatorCustom{i}" for i in range(1, 6)),
    *(f"accountCustom{i}" for i in range(1, 11)),
    *(f"customerCustom{i}" for i in range(1, 6)),
)
DATES = ("dateActivated", "dateAdded", "dateUpdated", "dateShipped")

DEVICE_DETAILS_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "properties": {
        **{name: _TEXT for name in TEXT},
        **{name: _NULLABLE for name in NULLABLE},
        **{name: _DATE for name in DATES},
        "fixedIPAddress": {"type": ["string", "null"], "format": "ipv4"},
        "fixedIpv6Address": {"type": ["string", "null"], "format": "ipv6"},
    },
}

EXAMPLE_KEYS: tuple[str, ...] = (
    "iccid",
    "imsi",
    "msisdn",
    "imei",
    "status",
    "ratePlan",
    "communicationPlan",
    "customer",
    "endConsumerId",
    "dateActivated",
    "dateAdded",
    "dateUpdated",
    "dateShipped",
    "accountId",
    "fixedIPAddress",
    "fixedIpv6Address",
    *(f"accountCustom{i}" for i in range(1, 11)),
    "simNotes",
    "deviceID",
    "modemID",
    "globalSimType",
)
