"""What the conformance suite needs from each carrier: its adapter, a running simulator, and a way to drive it.

A harness is started by the suite (``with Harness() as h``), serves its simulator on loopback for the
block, and speaks the carrier's own words for device states; the suite never does. Add a carrier to the
suite by writing its harness and listing it in ``conftest.HARNESSES``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from enum import Enum
from typing import Any, Protocol

from bulkchange.carrier.port import Carrier, CarrierAccount
from bulkchange.domain.change_request import StatusUpdateRequest
from bulkchange.domain.outcomes import CarrierFacts
from bulkchange.domain.statuses import TargetStatus


class Fault(Enum):
    """A failure the simulator puts on the next carrier call(s) that touch devices (not on logins)."""

    RATE_LIMITED = "rate limited"  # refused before doing anything, with the harness's ``retry_after_s``
    SERVER_ERROR = "server error"  # 5xx before doing anything
    TIMEOUT_AFTER_SEND = "timeout after send"  # the work is done, the answer comes after ``timeout_s``
    REFUSED = "refused"  # a permanent refusal of the whole request, nothing done


@dataclass(frozen=True)
class TargetCase:
    """How one supported target status looks at the carrier."""

    start: str | None  # the carrier state a device starts in (None: the carrier does not know it yet)
    end: str  # the carrier state once every step of the plan took effect
    line: bool = False  # the last step gives the device a line: its answer reports the MSISDN and IP address


class CarrierHarness(AbstractContextManager["CarrierHarness"], Protocol):
    """One carrier's adapter and simulator, started for the ``with`` block."""

    carrier: Carrier
    cases: Mapping[TargetStatus, TargetCase]  # every target status the carrier supports
    max_request: int  # the most devices the carrier accepts in one request
    retry_after_s: float | None  # what the simulator's rate-limit answer asks for (None: it says nothing)
    timeout_s: float  # a session time budget that ``TIMEOUT_AFTER_SEND`` exceeds and nothing else does

    def account(self) -> CarrierAccount:
        """The simulator's account, with working credentials."""
        ...

    def other_account(self) -> CarrierAccount:
        """Another account at the same carrier (its own limits)."""
        ...

    def new_device(self) -> tuple[str, str | None]:
        """ICCID and IMEI of a device nobody used yet (unknown to the carrier until preloaded)."""
        ...

    def preload(self, iccid: str, imei: str | None, state: str) -> None:
        """Put the device into the account, in carrier state ``state``."""
        ...

    def state(self, iccid: str) -> str | None:
        """The device's carrier state at the simulator (None: not there)."""
        ...

    def facts(self, iccid: str) -> CarrierFacts:
        """The device's line at the simulator (MSISDN, IP address)."""
        ...

    def request(self, target: TargetStatus, iccid: str, imei: str | None, *, variant: int = 0) -> StatusUpdateRequest:
        """A valid change request for ``target``. ``variant`` 1 differs from 0 in a request-level field
        for every target whose steps send one; devices do not matter to request-level fields."""
        ...

    def refused_plans(self) -> Sequence[tuple[TargetStatus, StatusUpdateRequest]]:
        """Requests for supported targets that this carrier still cannot plan (may be empty)."""
        ...

    def inject(self, fault: Fault, *, calls: int = 1) -> None:
        """``fault`` on the next ``calls`` device calls (sends and reads)."""
        ...

    def refuse_credentials(self) -> None:
        """From now on the carrier refuses the account's credentials, and forgets every live token/session."""
        ...

    def complete(self) -> None:
        """Let the carrier finish every accepted step (and deliver its callbacks); returns once it did."""
        ...

    def callbacks(self, iccid: str) -> list[Any]:
        """Callback bodies the carrier sent about the device, as received ([] for a carrier without)."""
        ...
