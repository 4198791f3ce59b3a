"""One claimed batch of changes through the carrier: sent, answered, recorded — and what the carrier's
answers imply for the callbacks that may already have arrived."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from datetime import timedelta
from typing import TypeVar

import structlog
from sqlalchemy.exc import SQLAlchemyError

from bulkchange.carrier import errors as cerr
from bulkchange.carrier.port import CarrierAccount, CarrierSession
from bulkchange.domain.errors import BulkFailure
from bulkchange.domain.outcomes import Kind, Outcome, expecting
from bulkchange.domain.statuses import ChangeStatus
from bulkchange.engine import changes as ch
from bulkchange.engine.callbacks.apply import apply_pending_callbacks
from bulkchange.engine.context import EngineContext
from bulkchange.engine.recording import early_callbacks, record_outcomes
from bulkchange.store.tables import DeviceBulkChange, M2MDeviceChange
from bulkchange.store.write_lock import working_on

log = structlog.get_logger("bulkchange.engine")

T = TypeVar("T")


async def while_held(ctx: EngineContext, batch: Sequence[M2MDeviceChange], work: Awaitable[T]) -> T:
    """Await ``work`` — the carrier calls of ``batch`` — and keep the batch's lease while it runs (a heartbeat
    every third of the lease).

    A claim's lease is what tells other workers that its changes are being worked on. A batch can wait at the
    account's shared limiter for longer than the lease (Control Center: one call at a time at a few per second,
    every worker's batches in one queue); without the heartbeat its changes were taken for a dead worker's,
    read and sent again by another worker while this one was still sending them. Only a dead worker's lease
    runs out now. The heartbeat touches only the changes the claim still holds; a database that does not
    answer is logged and the calls go on (the lease may then run out: the changes are reconciled).
    """
    task = asyncio.ensure_future(work)
    every = ctx.settings.lease_seconds / 3
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=every)
            if done:
                return task.result()
            _extend_lease(ctx, batch)
    finally:
        if not task.done():  # only when the caller itself is cancelled (worker shutdown)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


def _extend_lease(ctx: EngineContext, batch: Sequence[M2MDeviceChange]) -> None:
    until = ctx.clock() + timedelta(seconds=ctx.settings.lease_seconds)
    by_claim: dict[str | None, list[int]] = {}
    for change in batch:
        by_claim.setdefault(change.correlation_id, []).append(change.id)
    try:
        with ctx.session_factory.begin() as session:
            held = sum(
                ch.extend_claim(session, ids, worker=ctx.worker_id, correlation=claim, until=until)
                for claim, ids in by_claim.items()
            )
    except SQLAlchemyError as exc:
        log.warning("could not extend the lease of a batch at the carrier", error=str(exc), changes=len(batch))
        return
    if held < len(batch):
        log.warning("a batch at the carrier lost the lease of some changes", held=held, changes=len(batch))


def record(
    ctx: EngineContext,
    bulk: DeviceBulkChange,
    account: CarrierAccount,
    outcomes: list[Outcome],
    held: Sequence[M2MDeviceChange] = (),
) -> None:
    """Write ``outcomes`` in one transaction; then apply callbacks that beat the commit of their requestId.
    ``held``: the changes as claimed, their requests parsed to send them (reused: ``record_outcomes``)."""
    with working_on("record"), ctx.session_factory.begin() as session:
        awaiting = record_outcomes(session, ctx, bulk, account, outcomes, held=held)
        early = early_callbacks(session, awaiting)
    if early:
        log.info("applying callbacks that arrived before their requestId was recorded", count=len(early))
        apply_pending_callbacks(ctx)


def release(ctx: EngineContext, batch: list[M2MDeviceChange]) -> None:
    """Put a claimed batch back untouched (the request never left: authentication failed first)."""
    with ctx.session_factory.begin() as session:
        for change in batch:
            row = session.get(M2MDeviceChange, change.id)
            if row is not None and row.status == ChangeStatus.SENDING.value:
                ch.to_ready(row, next_attempt_at=None, refund_attempt=True)


async def send_and_record(
    ctx: EngineContext,
    session: CarrierSession,
    bulk: DeviceBulkChange,
    account: CarrierAccount,
    batch: list[M2MDeviceChange],
) -> None:
    """One claimed batch: the carrier step for all of it, then its outcomes written in one transaction.

    Refused credentials give the batch back untouched and fail the bulk change. Any other failure leaves
    the rows SENDING: not knowing whether the request left, their lease expires and they are reconciled
    (read at the carrier), never blindly resent. A deadline that leaves no time to send gives the batch back.
    """
    step = ch.current_step(batch[0])
    ids = [c.id for c in batch]
    # Every log line of this batch carries its change ids (change_id when the batch is one change).
    with structlog.contextvars.bound_contextvars(change_id=ids[0] if len(ids) == 1 else None, change_ids=ids):
        try:
            answered = await while_held(ctx, batch, session.send(step, [ch.view_of(c) for c in batch]))
        except cerr.AuthenticationFailed as exc:
            release(ctx, batch)
            raise BulkFailure(f"{_carrier(account)} authentication failed: {exc.message}") from exc
        except cerr.DeadlineExceeded:
            release(ctx, batch)  # nothing left: the next invocation sends it
            return
        outcomes = expecting(answered, ChangeStatus.SENDING, {c.id: c.correlation_id for c in batch})
        if any(o.kind is Kind.RETRY and o.code == cerr.DeadlineExceeded.__name__ for o in outcomes):
            release(ctx, batch)
            return
        record(ctx, bulk, account, outcomes, held=batch)


def _carrier(account: CarrierAccount) -> str:
    return {"thingspace": "ThingSpace", "controlcenter": "Control Center"}.get(account.carrier, account.carrier)
