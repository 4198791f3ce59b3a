"""What a submission would destroy, summed up before it is created: the dashboard's typed confirmation.

A change is *destructive* when it takes service away from a line in a way the operator cannot simply undo:

* a deactivation — the line's service stops. What else it does is the carrier's (``Carrier.deactivation``):
  ThingSpace releases the line's MDN (its phone number is lost) and, unless the row sets ``EtfWaiver``, may
  charge an early termination fee; Control Center keeps the MSISDN assigned to the SIM and charges no fee;
* a suspension of a line that is active — or whose status is not known here (never synced), since it may
  well be active.

Rows that do not parse are skipped: the submission itself refuses them with the reason.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from bulkchange.domain.statuses import DeviceStatusId, TargetStatus
from bulkchange.engine.row_rules import build_request
from bulkchange.engine.submit import carrier_for
from bulkchange.store.tables import Device, ServiceProvider

_LOOKUP_CHUNK = 500


@dataclass(frozen=True)
class Consequences:
    """Counts over the rows of one submission."""

    lines: int
    deactivations: int
    etf_may_apply: int
    suspensions_of_active: int
    suspensions_status_unknown: int
    deactivation_releases_number: bool = True
    """The provider's carrier takes a deactivated line's number back (ThingSpace), or keeps it (Control Center)."""

    @property
    def destructive(self) -> int:
        """Lines whose change is destructive: the number the operator types to confirm."""
        return self.deactivations + self.suspensions_of_active + self.suspensions_status_unknown

    def sentences(self) -> list[str]:
        """The consequences in words, one per kind (``MDN released on 4,210 lines`` …)."""
        out: list[str] = []
        if self.deactivations and self.deactivation_releases_number:
            out.append(f"MDN released on {_lines(self.deactivations)} (the phone numbers are lost)")
        elif self.deactivations:
            out.append(
                f"Service stopped on {_lines(self.deactivations)} (deactivated; each MSISDN stays assigned to its SIM)"
            )
        if self.etf_may_apply:
            out.append(f"ETF (early termination fee) may apply to {_lines(self.etf_may_apply)}: EtfWaiver not set")
        suspended = self.suspensions_of_active + self.suspensions_status_unknown
        if suspended:
            unknown = (
                f", {self.suspensions_status_unknown:,} of them with no status known here"
                if self.suspensions_status_unknown
                else ""
            )
            out.append(f"Service suspended on {_lines(suspended)} that may be active{unknown}")
        return out


def _lines(n: int) -> str:
    return f"{n:,} line" + ("" if n == 1 else "s")


def consequences_of(
    session: Session,
    rows: Iterable[Any],
    *,
    status: str,
    service_provider_id: int,
    ignore_current_status: bool = False,
) -> Consequences:
    """Sum up what the rows would do to their lines (reads the provider's carrier and the local device
    statuses; writes nothing)."""
    terms = carrier_for(session.get(ServiceProvider, service_provider_id)).deactivation
    lines = deactivations = etf = 0
    suspends: list[str] = []
    for raw in rows:
        lines += 1
        try:
            req = build_request(raw, status=status, ignore_current_status=ignore_current_status)
            target = TargetStatus.parse(req.update_status)
        except (ValidationError, ValueError, TypeError, AttributeError):
            continue
        if target is TargetStatus.DEACTIVE:
            deactivations += 1
            etf += 1 if terms.fee_unless_waived and not req.request.etf_waiver else 0
        elif target is TargetStatus.SUSPEND:
            suspends.append(req.request.iccid)
    known = _local_statuses(session, suspends, service_provider_id)
    active = sum(1 for i in suspends if known.get(i) == DeviceStatusId.ACTIVE)
    unknown = sum(1 for i in suspends if known.get(i, DeviceStatusId.UNKNOWN) == DeviceStatusId.UNKNOWN)
    return Consequences(lines, deactivations, etf, active, unknown, terms.releases_number)


def _local_statuses(session: Session, iccids: list[str], service_provider_id: int) -> dict[str, int]:
    found: dict[str, int] = {}
    for start in range(0, len(iccids), _LOOKUP_CHUNK):
        chunk = iccids[start : start + _LOOKUP_CHUNK]
        for iccid, status_id in session.execute(
            select(Device.iccid, Device.device_status_id).where(
                Device.iccid.in_(chunk),
                Device.service_provider_id == service_provider_id,
                Device.is_deleted.is_(False),
            )
        ).all():
            if status_id is not None:
                found[str(iccid)] = int(status_id)
    return found
