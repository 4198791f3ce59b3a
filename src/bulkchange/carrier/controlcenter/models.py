"""Wire models of the Cisco IoT Control Center REST API v1 (the part bulkchange uses) and client results.

Tolerant by design: unknown fields are kept (``model_extra``) and never an error, identifiers that
arrive as JSON numbers keep their digits, status values are upper-cased, and dates are read in every
form the service is known to write: ``2016-06-29 00:21:33.339+0000`` (device fields),
``2016-06-29T00:21:33.339+0000`` (audit trail) and RFC 3339 ``2016-06-29T00:21:33.339+00:00``. An empty
or unreadable date is None rather than a failed answer: no decision of bulkchange rests on a date.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import AliasChoices, BaseModel, BeforeValidator, ConfigDict, Field, SecretStr, field_validator
from pydantic.alias_generators import to_camel

from bulkchange.domain.carriers import POD19_BASE_URL
from bulkchange.security.transport import require_https

__all__ = [
    "POD19_BASE_URL",
    "STATUSES",
    "AuditRecord",
    "AuditTrailPage",
    "ControlCenterConnection",
    "ControlCenterDevice",
    "DeviceSearchPage",
    "DeviceSummary",
    "DeviceUsage",
    "EditAccepted",
    "normalise_status",
    "parse_cc_datetime",
]


#: Every SIM status value Control Center's REST API is known to use.
STATUSES: frozenset[str] = frozenset(
    {
        "INVENTORY",
        "TEST_READY",
        "ACTIVATION_READY",
        "ACTIVATED",
        "DEACTIVATED",
        "RETIRED",
        "PURGED",
        "REPLACED",
        "GLOBAL_IN_TRANSFER",
    }
)
_SEPARATORS = re.compile(r"[\s\-]+")


def normalise_status(value: str) -> str:
    """The REST spelling of a status value: upper case, words joined by ``_``.

    ``"activated"``, ``" Activation-Ready "`` and ``"ACTIVATION_READY"`` all become REST values; anything
    that is not a known status raises ``ValueError`` (nothing unknown is ever sent to the carrier).
    """
    status = _SEPARATORS.sub("_", value.strip()).upper()
    if status not in STATUSES:
        raise ValueError(f"{value!r} is not a Control Center status (one of {', '.join(sorted(STATUSES))})")
    return status


def parse_cc_datetime(value: Any) -> datetime | None:
    """A Control Center date as an aware datetime (UTC when the text has no offset); None if empty or unreadable."""
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _text(value: Any) -> Any:
    """Identifiers sometimes arrive as JSON numbers; keep their digits as text."""
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


CCDateTime = Annotated[datetime | None, BeforeValidator(parse_cc_datetime)]
Text = Annotated[str | None, BeforeValidator(_text)]


class _Wire(BaseModel):
    """camelCase on the wire, snake_case in Python; unknown fields kept, never an error."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="allow")


class _Status(_Wire):
    status: str | None = None

    @field_validator("status", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.strip().upper() if isinstance(value, str) else value


class ControlCenterDevice(_Status):
    """Get Device Details. Custom fields (``accountCustom1`` …) stay available in ``model_extra``."""

    iccid: Text = None
    imsi: Text = None
    msisdn: Text = None
    imei: Text = None
    rate_plan: str | None = None
    communication_plan: str | None = None
    customer: str | None = None
    end_consumer_id: Text = None
    date_activated: CCDateTime = None
    date_added: CCDateTime = None
    date_updated: CCDateTime = None
    date_shipped: CCDateTime = None
    account_id: Text = None
    fixed_ip_address: str | None = Field(default=None, alias="fixedIPAddress")
    fixed_ipv6_address: str | None = None
    sim_notes: str | None = None
    device_id: Text = Field(default=None, validation_alias=AliasChoices("deviceID", "deviceId"), alias="deviceID")
    modem_id: Text = Field(default=None, validation_alias=AliasChoices("modemID", "modemId"), alias="modemID")
    global_sim_type: str | None = None
    eid: Text = None
    sim_profile_id: Text = None


class DeviceSummary(_Status):
    """A device in a Search Devices answer (only these four fields come back)."""

    iccid: Text = None
    rate_plan: str | None = None
    communication_plan: str | None = None


class DeviceSearchPage(_Wire):
    """One page of Search Devices, oldest modification first."""

    devices: list[DeviceSummary] = Field(default_factory=list)
    page_number: int | None = None
    last_page: bool


class DeviceUsage(_Status):
    """Get Device Usage (``/devices/{iccid}/ctdUsages``): the current cycle's usage so far.

    ``ctd_data_usage`` is in bytes; Control Center refreshes usage every few hours, so it may lag.
    """

    iccid: Text = None
    imsi: Text = None
    msisdn: Text = None
    imei: Text = None
    rate_plan: str | None = None
    communication_plan: str | None = None
    ctd_data_usage: int | None = None
    ctd_sms_usage: int | None = Field(default=None, alias="ctdSMSUsage")
    ctd_voice_usage: int | None = None
    ctd_session_count: int | None = None
    overage_limit_reached: bool | None = None
    overage_limit_override: str | None = None

    @property
    def data_mb(self) -> float:
        """Cycle-to-date data in MB (2**20 bytes); 0 when not reported."""
        return (self.ctd_data_usage or 0) / 1_048_576


class AuditRecord(_Wire):
    """One change record of a device's audit trail.

    ``status`` is ``Executed`` for a change that was made; a change the carrier accepted but did not make
    shows an error status here. The exact error spelling is not published, so :attr:`is_error` accepts
    anything starting with "error" or "fail", case-insensitively.
    """

    field: str | None = None
    prior_value: Text = None
    value: Text = None
    effective_date: CCDateTime = None
    status: str | None = None
    user_name: str | None = None

    @property
    def is_error(self) -> bool:
        text = (self.status or "").strip().lower()
        return text.startswith(("error", "fail"))


class AuditTrailPage(_Wire):
    """One page of Get Device Audit History, most recent record first."""

    iccid: Text = None
    timestamp: CCDateTime = None
    page_number: int | None = None
    last_page: bool
    device_audit_trails: list[AuditRecord] = Field(default_factory=list)

    @field_validator("device_audit_trails", mode="before")
    @classmethod
    def _none_is_empty(cls, value: Any) -> Any:
        return [] if value is None else value


class EditAccepted(BaseModel):
    """Control Center accepted an Edit Device Details call (what the engine logs comes with it).

    ``scheduled`` is True for a 202 answer (a future ``effectiveDate``): the change is made on that date.
    Acceptance is not proof the change was made; verify by reading the device (and its audit trail).
    """

    model_config = ConfigDict(frozen=True)

    iccid: str
    http_status: int
    scheduled: bool
    request_text: str
    response_text: str


class ControlCenterConnection(BaseModel):
    """Where and as whom to talk to Control Center.

    ``base_url`` is the REST root up to ``/rws/api`` (for AT&T POD 19, :data:`POD19_BASE_URL`); a trailing
    ``/v1`` is dropped. It must be https (plain http only on loopback, for the simulator).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    base_url: str
    username: str
    api_key: SecretStr

    @field_validator("base_url")
    @classmethod
    def _https_root(cls, value: str) -> str:
        root = require_https(value, "Control Center base URL").strip().rstrip("/")
        return root[: -len("/v1")] if root.endswith("/v1") else root

    @property
    def api_url(self) -> str:
        """The versioned root every call goes under."""
        return f"{self.base_url}/v1"
