"""What happened to one device change after a carrier call, before it is written down.

A carrier adapter turns the carrier's answer (or error, or its view of a device) into one ``Outcome`` per
change; the engine records outcomes, whichever carrier produced them. Pure data.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any

from bulkchange.domain.statuses import ChangeStatus


class Kind(Enum):
    DONE = "done"  # the step took effect (sync success, verified, or reconciled as done)
    AWAITING = "awaiting"  # accepted; the result comes later (callback, deferred check, or a scheduled date)
    RETRY = "retry"  # nothing happened at the carrier; send again later
    UNKNOWN = "unknown"  # may have happened: reconcile (read the device) before anything is sent again
    ISOLATE = "isolate"  # the batch was refused; send this change on its own
    FAILED = "failed"  # terminal failure
    HOLD = "hold"  # reconcile was inconclusive for now; look again later


@dataclass(frozen=True)
class CarrierFacts:
    """What the carrier told us about a device after a step (callback, device read)."""

    msisdn: str | None = None
    ip_address: str | None = None
    imei: str | None = None
    rate_plan: str | None = None
    communication_plan: str | None = None
    carrier_status: str | None = None


@dataclass(frozen=True)
class LogEntry:
    """One ``DeviceBulkChangeLog`` row before it is written: one per carrier call, DB step, billing step."""

    bulk_change_id: int
    change_id: int | None
    description: str
    ok: bool
    request_text: str | None = None
    response_text: str | None = None
    error_text: str | None = None


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
    # AWAITING only: the carrier applies the change at this time (a scheduled change); look after it.
    check_after: datetime | None = None
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


@dataclass(frozen=True)
class TableRows:
    """Rows a carrier keeps in its own local tables (``ThingSpaceDevice``, ``JasperDevice`` …), one per
    device, matched by ServiceProviderId + ICCID; written by the store in the transaction that records
    the outcomes. ``insert_only`` columns are written when the row is created and never updated;
    ``insert_description`` names the log row written for a created row (None: no log row)."""

    table: str
    rows: Mapping[str, Mapping[str, Any]]
    insert_only: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    insert_description: str | None = None
