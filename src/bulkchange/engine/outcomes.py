"""What happened to one change after a carrier call, before it is written down."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from bulkchange.domain.statuses import ChangeStatus
from bulkchange.engine.local_db import CarrierFacts
from bulkchange.engine.logbook import LogEntry


class Kind(Enum):
    DONE = "done"  # the step took effect (sync success, verified, or reconciled as done)
    AWAITING = "awaiting"  # accepted with a requestId; result by callback or deferred check
    RETRY = "retry"  # nothing happened at the carrier; send again later
    UNKNOWN = "unknown"  # may have happened: reconcile before anything is sent again
    ISOLATE = "isolate"  # the batch was refused; send this change on its own
    FAILED = "failed"  # terminal failure
    HOLD = "hold"  # reconcile was inconclusive for now; look again later


@dataclass
class Outcome:
    change_id: int
    kind: Kind
    details: str
    code: str | None = None
    request_id: str | None = None
    retry_after_s: float | None = None
    terminal: ChangeStatus | None = None
    facts: CarrierFacts = field(default_factory=CarrierFacts)
    logs: list[LogEntry] = field(default_factory=list)
    # What the change looked like when this outcome was read: it is recorded only if the change still
    # does, so a result read under an old claim (a slow worker, a repeated check round) never overwrites
    # a newer state and never sends a step twice.
    expect_status: ChangeStatus | None = None
    expect_correlation: str | None = None


def expecting(
    outcomes: list[Outcome], status: ChangeStatus, correlation: dict[int, str | None] | None = None
) -> list[Outcome]:
    """Stamp ``outcomes`` with the state (and claim) their changes were read in."""
    for outcome in outcomes:
        outcome.expect_status = status
        if correlation is not None:
            outcome.expect_correlation = correlation.get(outcome.change_id)
    return outcomes
