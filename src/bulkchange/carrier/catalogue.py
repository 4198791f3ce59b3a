"""Every carrier API bulkchange speaks, by name: the one module that knows the adapter packages.

The engine names a carrier with ``CarrierName`` (a service provider's ``IntegrationId`` gives it) and talks
to it only through ``bulkchange.carrier.port``; it never imports ``carrier.thingspace`` or
``carrier.controlcenter`` (an import-linter contract holds it to that). Adding a carrier means adding its
adapter package, which passes the conformance suite, and one entry here.

The account builders are here too because each carrier keeps different settings (ThingSpace: token and
session URLs, client id; Control Center: username, API key, TPS, the rate-plan pre-step); they all return
the neutral ``CarrierAccount``.
"""

from __future__ import annotations

from bulkchange.domain.carriers import CarrierName

from .controlcenter.adapter import ControlCenterCarrier, controlcenter_account
from .controlcenter.models import POD19_BASE_URL
from .controlcenter.prestep import RatePlanOption
from .port import Carrier, ReceivesCallbacks, RegistersCallbacks
from .thingspace.adapter import ThingSpaceCarrier, thingspace_account

__all__ = [
    "POD19_BASE_URL",
    "RatePlanOption",
    "all_steps",
    "callback_reader",
    "callback_registrar",
    "carrier",
    "carriers",
    "controlcenter_account",
    "thingspace_account",
]


def carriers() -> dict[str, Carrier]:
    """A new adapter of every carrier, keyed by ``Carrier.name`` (the ``CarrierName`` value)."""
    every: list[Carrier] = [ThingSpaceCarrier(), ControlCenterCarrier()]
    return {adapter.name: adapter for adapter in every}


def all_steps() -> tuple[str, ...]:
    """Every carrier's step names, each carrier's in its plan order (what the dashboard may filter on)."""
    return tuple(step for adapter in carriers().values() for step in adapter.steps)


def carrier(name: CarrierName) -> Carrier:
    """A new adapter of one carrier."""
    return carriers()[name.value]


def callback_reader(name: CarrierName) -> ReceivesCallbacks:
    """The adapter of a carrier that pushes results to a callback listener; ``ValueError`` for one that
    does not (Control Center is read back, never calls us)."""
    adapter = carrier(name)
    if not isinstance(adapter, ReceivesCallbacks):
        raise ValueError(f"{name.display_name} sends no callbacks")
    return adapter


def callback_registrar(name: CarrierName) -> RegistersCallbacks:
    """The adapter of a carrier whose callback listener is registered through its API; ``ValueError`` for one
    that has none (Control Center is read back: there is nothing to register)."""
    adapter = carrier(name)
    if not isinstance(adapter, RegistersCallbacks):
        raise ValueError(f"{name.display_name} sends no callbacks: its changes are read back from the carrier")
    return adapter
