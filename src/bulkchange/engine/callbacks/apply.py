"""Applying stored callbacks to their changes, in batches: one transaction and one status refresh per
batch, not per callback.

A pass reads the stored callbacks not yet applied (above ``after_id``), matches each to its change
(``matching``), asks the carrier adapter for the verdict of each that may settle one, records the verdicts
like any other outcome, and marks every callback with what it did. A callback that matches nothing yet stays
pending: it may be early (its change has not recorded the requestId) and is applied when that commit
happens (``recording.early_callbacks``) or by the next full pass; past ``callback_match_grace_s`` it is
marked unmatched.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy.orm import Session

from bulkchange.carrier.port import CallbackReport, ChangeView, ReceivesCallbacks
from bulkchange.domain.carriers import CarrierName
from bulkchange.domain.outcomes import LogEntry, Outcome, expecting
from bulkchange.domain.statuses import ChangeStatus
from bulkchange.engine import changes as ch
from bulkchange.engine.accounts import load_account
from bulkchange.engine.bulk_status import PacedRefresh, refresh_status
from bulkchange.engine.callbacks import matching as m
from bulkchange.engine.callbacks.store import (
    Received,
    any_pending_callback,
    insert_callbacks,
    pending_callbacks,
    settled_its_change,
)
from bulkchange.engine.context import EngineContext
from bulkchange.engine.logbook import write_logs
from bulkchange.engine.recording import record_outcomes
from bulkchange.engine.wakeups import wake
from bulkchange.heap import collection_paused
from bulkchange.store.core import write_modified
from bulkchange.store.db import db_engine, read_only_session
from bulkchange.store.tables import DeviceBulkChange, M2MDeviceChange, ThingSpaceCallBackResponseLog
from bulkchange.store.write_lock import working_on

log = structlog.get_logger("bulkchange.callbacks")

_applying = threading.Lock()  # one applying pass per process at a time (``apply_callback``)


def reader(ctx: EngineContext) -> ReceivesCallbacks:
    """The carrier whose callbacks bulkchange receives (ThingSpace's CarrierService)."""
    carrier = ctx.carrier(CarrierName.THINGSPACE.value)
    assert isinstance(carrier, ReceivesCallbacks)
    return carrier


def ingest_callbacks(ctx: EngineContext, items: Sequence[Received]) -> list[int | None]:
    """Record many callbacks in one transaction (a receiver's group commit); per item the stored row's id, or
    None for a duplicate."""
    with working_on("callback_intake"), db_engine(ctx.session_factory).begin() as conn:
        return insert_callbacks(conn, items)


def ingest_callback(ctx: EngineContext, payload: dict[str, Any], *, service_provider_id: int | None) -> int | None:
    """Record one callback (deduplicated by requestId + device); its row id, None for a duplicate.

    ``service_provider_id`` is the provider whose URL it was posted to (and whose credentials it echoed): the
    only provider whose changes it may settle. ``ValueError`` when the body is not a callback.
    """
    report = reader(ctx).read_callback(payload)
    return ingest_callbacks(ctx, [(payload, report, service_provider_id)])[0]


def apply_callback(ctx: EngineContext, payload: dict[str, Any], *, service_provider_id: int | None) -> str:
    """Store one callback and apply what is pending: ``applied`` / ``unmatched`` when this call applied it,
    ``duplicate`` for a replay, ``stored`` when another thread of this process is applying (it takes it)."""
    stored_id = ingest_callback(ctx, payload, service_provider_id=service_provider_id)
    if stored_id is None:
        return "duplicate"
    if not _applying.acquire(blocking=False):
        return "stored"
    try:
        apply_pending_callbacks(ctx)
    finally:
        _applying.release()
    with ctx.session_factory() as session:
        row = session.get(ThingSpaceCallBackResponseLog, stored_id)
        if row is not None and settled_its_change(row):
            return "applied"
        return "unmatched" if row is not None and row.outcome is not None else "stored"


def apply_pending_callbacks(ctx: EngineContext, *, limit: int = 2000, received_before: datetime | None = None) -> int:
    """Apply every stored callback not yet applied (received before ``received_before`` when given); how many
    settled a change."""
    return apply_callbacks_after(ctx, 0, limit=limit, received_before=received_before)[0]


@dataclass(frozen=True)
class PassResult:
    """What one applying pass did."""

    examined: int  # stored callbacks it read (0: nothing was pending above ``after_id``)
    applied: int  # how many of them settled a change
    after_id: int  # the highest row id it read (the ``after_id`` it was given when none)


def apply_pass(
    ctx: EngineContext,
    after_id: int,
    *,
    limit: int = 2000,
    statuses: PacedRefresh | None = None,
    received_before: datetime | None = None,
) -> PassResult:
    """One pass over up to ``limit`` stored callbacks not yet applied above ``after_id`` (only those received
    before ``received_before`` when given), in one transaction; then the status of the bulk changes it touched
    is refreshed (through ``statuses`` when given: paced, see ``PacedRefresh``). Callbacks stored while it
    runs are left to the next pass."""
    # A read first: most sweeps find nothing new, and that must not queue for (on SQLite) the write lock.
    if not _any_pending(ctx, after_id, received_before):
        return PassResult(0, 0, after_id)
    # No cyclic collections during the pass: its rows are freed by reference counting as ``_apply_pending``
    # returns, before the collector is back (``heap.collection_paused``).
    with collection_paused():
        done = _apply_pending(ctx, after_id, limit, received_before)
    if done is None:  # applied meanwhile by another applier (or skipped as locked by one)
        return PassResult(0, 0, after_id)
    for bulk_id in done.to_read:
        wake(ctx, bulk_id, delay_s=0)  # its next slice reconciles the change whose device is to be read
    if statuses is not None:
        statuses.touched(done.touched)
    else:
        for bulk_id in done.touched:
            refresh_status(ctx, bulk_id)
    return done.result


@dataclass(frozen=True)
class _Applied:
    """What one pass's transaction did, for what follows its commit."""

    result: PassResult
    touched: set[int]  # bulk changes with a change settled
    to_read: set[int]  # bulk changes with a device to read


def _apply_pending(ctx: EngineContext, after_id: int, limit: int, received_before: datetime | None) -> _Applied | None:
    """Apply up to ``limit`` pending callbacks above ``after_id`` in one transaction; None when none was left."""
    applied = 0
    touched: set[int] = set()
    # No autoflush: one flush at commit writes the pass's rows in fewer statements; nothing here reads back
    # an attribute the ORM still holds unflushed.
    with working_on("callback_apply"), ctx.session_factory.begin() as session, session.no_autoflush:
        pending = pending_callbacks(session, limit=limit, after_id=after_id, received_before=received_before)
        if not pending:
            return None
        # Held until the pass commits: the session keeps only weak references to unmodified rows, so
        # without this the changes matched here would be dropped and read again by ``record_outcomes``.
        matches = m.match_callbacks(session, pending, reader(ctx).read_callback)
        by_bulk, to_read, views = _judge(ctx, session, matches)
        for bulk_id, outcomes in by_bulk.items():
            bulk = session.get(DeviceBulkChange, bulk_id)
            assert bulk is not None
            account = load_account(session, bulk.service_provider_id, with_secrets=False)
            record_outcomes(session, ctx, bulk, account, outcomes, views=views)
            applied += len(outcomes)
            touched.add(bulk_id)
        # The pass's changes and callback rows as a few UPDATE executemanys, not the ORM's flush at commit
        # (per row, most of the pass's bookkeeping); nothing in the pass reads them after this.
        write_modified(session, (M2MDeviceChange, ThingSpaceCallBackResponseLog))
    return _Applied(PassResult(len(pending), applied, pending[-1].id), touched, to_read)


def apply_callbacks_after(
    ctx: EngineContext,
    after_id: int,
    *,
    limit: int = 2000,
    statuses: PacedRefresh | None = None,
    received_before: datetime | None = None,
) -> tuple[int, int]:
    """Pass after pass until nothing is left above ``after_id``; (how many settled a change, the highest row
    id examined) — so a caller woken for each new callback reads only what is new. Through ``statuses``, the
    owed refreshes are all made once a call finds nothing new to apply.

    For a sweep that must leave nothing behind (a worker, a receiver shutting down). A receiver applying
    while callbacks keep arriving makes one pass at a time instead (``applier``).
    """
    applied, passes = 0, 0
    while (
        result := apply_pass(ctx, after_id, limit=limit, statuses=statuses, received_before=received_before)
    ).examined:
        passes += 1
        applied += result.applied
        after_id = result.after_id
    if statuses is not None and not passes:
        statuses.settle()
    return applied, after_id


def _any_pending(ctx: EngineContext, after_id: int, received_before: datetime | None) -> bool:
    with read_only_session(ctx.session_factory) as probe:
        return any_pending_callback(probe, after_id=after_id, received_before=received_before)


def _judge(
    ctx: EngineContext, session: Session, matches: Sequence[m.CallbackMatch]
) -> tuple[dict[int, list[Outcome]], set[int], dict[int, ChangeView]]:
    """Each matched callback's effect: verdicts as outcomes by bulk change, the bulk changes with a device to
    read, and the views the verdicts were judged against (by change id: recording reuses them); the rest
    recorded on the callback row (and on its change's log when it has one)."""
    grace = timedelta(seconds=ctx.settings.callback_match_grace_s)
    now = ctx.clock()
    settled = m.settled_elsewhere(session, [match.stored for match in matches if match.change is None])
    by_bulk: dict[int, list[Outcome]] = {}
    to_read: set[int] = set()
    views: dict[int, ChangeView] = {}
    logs: list[LogEntry] = []
    carrier = reader(ctx)  # once a pass: its isinstance check walks the runtime-checkable protocol's members
    for match in matches:
        stored, report, change = match.stored, match.report, match.change
        if change is None:
            late = settled.get(stored.id)
            if late is not None:
                stored.outcome = f"not applied: the change was already {late.status}"  # e.g. the check got there
                logs.append(_late(session, report, late))
            elif now - stored.received_date > grace:
                stored.outcome = "unmatched: no change of this provider awaits this requestId and device"
            continue
        stored.m2m_device_change_id = change.id
        if match.binding is m.Binding.READ:
            entry = m.read_requested(session, change, report, now)
            if entry is None:
                stored.outcome = f"not applied: the change was already {change.status}"
                continue
            logs.append(entry)
            stored.outcome = "not a verdict: the change had no requestId; its device is read instead"
            to_read.add(change.bulk_change_id)
        elif match.binding is m.Binding.WRONG_STEP:
            step = ch.current_step(change).lower()
            note = f"not applied: it answers '{report.operation}', the change awaits its {step}"
            logs.append(m.callback_log(report, change, note))
            stored.outcome = note[:200]
        else:
            view = views[change.id] = ch.view_of(change)
            verdict = carrier.callback_verdict(stored.api_response, view, read=report)
            outcome = expecting([verdict], ChangeStatus.AWAITING_RESULT)[0]
            stored.outcome = outcome.details[:200]
            by_bulk.setdefault(change.bulk_change_id, []).append(outcome)
    write_logs(session, logs, process_by=ctx.settings.process_by)
    return by_bulk, to_read, views


def _late(session: Session, report: CallbackReport, change: M2MDeviceChange) -> LogEntry:
    """A callback for a change already settled: always on the change's log; when it contradicts how the change
    was settled (a refusal for a PROCESSED change, …), flagged on the change itself too."""
    found = m.late_report(report, change)
    if found is None:
        return m.callback_log(report, change, f"arrived after the change was {change.status}; not applied")
    note, code = found
    m.record_late_report(session, change, note, code)
    log.warning(
        "late callback contradicts a settled change",
        change_id=change.id,
        bulk_change_id=change.bulk_change_id,
        status=change.status,
        request_id=report.request_id,
        code=code,
    )
    return m.callback_log(report, change, f"arrived after the change was {change.status}: {note}")
