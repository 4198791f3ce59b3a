"""Re-running additional steps (Rev.io billing, customer rate plan) that did not succeed.

A device change's carrier result stands whatever happens to its additional step; the step itself can be
run again when it ended ``ERROR`` (refused, or out of attempts) or waits for its billing credential
(``WAITING_CREDENTIALS``, after Rev.io answered 401 or 403). Running again means: back to ``PENDING``,
due now, attempts counted from zero, a note in ``AdditionalStepDetails`` saying who asked and when. The
billing runner of any worker then claims it like any other due step; what the step already did in Rev.io
(its ``RevService`` / ``RevServiceProduct`` rows) is looked up or adopted, never created twice.

* ``rerun_billing`` — one device change, a filter (ICCIDs, step statuses), or every such step of a bulk
  change;
* ``release_credential_waits`` — every step waiting for one Rev.io credential, after the operator set it
  again (``bulkchange credentials set --billing N``).
"""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from bulkchange.domain.statuses import ChangeStatus
from bulkchange.engine.additional_step import RERUNNABLE, AdditionalStepStatus
from bulkchange.store.tables import DeviceBulkChange, M2MDeviceChange, utcnow

C = M2MDeviceChange


class NothingToRerun(Exception):
    """No additional step of the selection can be run again (one line, for the operator)."""


@dataclass(frozen=True)
class RerunResult:
    """The device changes whose additional step is due again."""

    bulk_change_id: int
    change_ids: list[int]

    @property
    def count(self) -> int:
        return len(self.change_ids)


def rerun_billing(
    session: Session,
    bulk_change_id: int,
    *,
    change_ids: Collection[int] = (),
    iccids: Collection[str] = (),
    statuses: Collection[str] | None = None,
    by: str = "operator",
) -> RerunResult:
    """Make the selected additional steps of ``bulk_change_id`` due again (see the module docstring).

    ``KeyError`` when there is no such bulk change; ``ValueError`` for a status that cannot be re-run;
    ``NothingToRerun`` when the selection holds no step in ``statuses``. Commits."""
    wanted = {s.strip().upper() for s in (statuses or RERUNNABLE)}
    bad = wanted - set(RERUNNABLE)
    if bad:
        raise ValueError(
            f"only additional steps in {' or '.join(RERUNNABLE)} can be re-run, not {', '.join(sorted(bad))}"
        )
    if session.get(DeviceBulkChange, bulk_change_id) is None:
        raise KeyError(f"no bulk change {bulk_change_id}")
    query = select(C.id).where(
        C.bulk_change_id == bulk_change_id,
        C.status == ChangeStatus.PROCESSED.value,
        C.additional_step_status.in_(sorted(wanted)),
    )
    if change_ids:
        query = query.where(C.id.in_(list(change_ids)))
    if iccids:
        query = query.where(C.iccid.in_([i.strip() for i in iccids]))
    ids = list(session.execute(query.order_by(C.id)).scalars())
    if not ids:
        raise NothingToRerun(
            f"bulk change {bulk_change_id} has no additional step in {' or '.join(sorted(wanted))} to re-run"
            + (" among the devices named" if change_ids or iccids else "")
        )
    _make_due(session, ids, wanted, f"re-run by {by}")
    session.commit()
    return RerunResult(bulk_change_id, ids)


def release_credential_waits(session: Session, integration_authentication_id: int, *, by: str = "operator") -> int:
    """Every step waiting for Rev.io credential ``integration_authentication_id`` becomes due again (after the
    operator set it). Returns how many. Commits."""
    waiting = AdditionalStepStatus.WAITING_CREDENTIALS.value
    ids = [
        change_id
        for change_id, request in session.execute(
            select(C.id, C.change_request).where(C.additional_step_status == waiting)
        ).all()
        if _credential_of(request) == integration_authentication_id
    ]
    if ids:
        _make_due(session, ids, {waiting}, f"billing credential {integration_authentication_id} set again by {by}")
    session.commit()
    return len(ids)


def _credential_of(change_request: str) -> int | None:
    try:
        value = json.loads(change_request).get("IntegrationAuthenticationId")
    except (ValueError, AttributeError):
        return None
    return int(value) if isinstance(value, int | str) and str(value).isdigit() else None


def _make_due(session: Session, ids: list[int], statuses: Collection[str], why: str) -> None:
    """PENDING, due now, no lease, attempts from zero — only while the step is still in ``statuses`` (a
    worker's claim at the same moment wins; the step is then left to it)."""
    now = utcnow()
    for start in range(0, len(ids), 500):
        session.execute(
            update(C)
            .where(C.id.in_(ids[start : start + 500]), C.additional_step_status.in_(list(statuses)))
            .values(
                additional_step_status=AdditionalStepStatus.PENDING.value,
                additional_step_next_attempt_at=None,
                additional_step_attempt_count=0,
                additional_step_lease_owner=None,
                additional_step_lease_expires_at=None,
                additional_step_details=f"due again: {why} at {now:%Y-%m-%d %H:%M:%S} UTC",
            )
            .execution_options(synchronize_session=False)
        )


def rerunnable_count(session: Session, bulk_change_id: int) -> int:
    """How many additional steps of the bulk change could be re-run now (for the dashboard's button)."""
    return int(
        session.execute(
            select(func.count()).where(
                C.bulk_change_id == bulk_change_id,
                C.status == ChangeStatus.PROCESSED.value,
                C.additional_step_status.in_(RERUNNABLE),
            )
        ).scalar_one()
    )
