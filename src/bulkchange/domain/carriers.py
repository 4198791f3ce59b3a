"""Which carrier API a service provider speaks: ``ServiceProvider.IntegrationId`` ↔ a carrier name.

The name is what the code keys on (the adapter's ``Carrier.name``, ``--carrier`` on the command line); the
number is only how the provider row stores it. The original system's integration numbers are not public,
so these are bulkchange's own: 1 has always meant ThingSpace here, Control Center is 2.
"""

from __future__ import annotations

from enum import IntEnum, StrEnum

#: The REST root of AT&T Control Center POD 19 (a default to offer when configuring a provider; the pod
#: is configuration, so nothing calls it unless a connection names it).
POD19_BASE_URL = "https://restapi19.att.com/rws/api"


class CarrierName(StrEnum):
    """A carrier API bulkchange speaks (the adapter's ``Carrier.name``)."""

    THINGSPACE = "thingspace"
    CONTROLCENTER = "controlcenter"

    @property
    def integration_id(self) -> int:
        return int(IntegrationId[self.name])

    @property
    def display_name(self) -> str:
        return _DISPLAY[self]

    @classmethod
    def parse(cls, raw: str) -> CarrierName:
        """An operator's carrier name (any case; ``jasper`` / ``pod19`` / ``att`` name Control Center)."""
        text = raw.strip().lower().replace("-", "").replace("_", "").replace(" ", "")
        text = _ALIASES.get(text, text)
        for member in cls:
            if member.value == text:
                return member
        raise ValueError(f"unknown carrier {raw!r}; one of: {', '.join(m.value for m in cls)}")

    @classmethod
    def of_integration(cls, integration_id: int) -> CarrierName:
        """The carrier a ``ServiceProvider.IntegrationId`` names; ``ValueError`` for an unknown id."""
        try:
            return cls[IntegrationId(integration_id).name]
        except ValueError:
            raise ValueError(f"unknown IntegrationId {integration_id}") from None


class IntegrationId(IntEnum):
    """``ServiceProvider.IntegrationId`` values."""

    THINGSPACE = 1
    CONTROLCENTER = 2


_DISPLAY = {
    CarrierName.THINGSPACE: "Verizon ThingSpace",
    CarrierName.CONTROLCENTER: "Cisco Control Center (AT&T POD 19)",
}
_ALIASES = {
    "verizon": "thingspace",
    "jasper": "controlcenter",
    "pod19": "controlcenter",
    "att": "controlcenter",
    "ciscocontrolcenter": "controlcenter",
}
