"""The device changes of one message (the seed's ProcessBulkChange): a bounded slice of claims sent to the
carrier, pipelined; the follow-up message carries on where a slice stops.

Up to ``carrier_concurrency`` batches are at the carrier at once, each claimed, sent and recorded on its
own, and as soon as one is recorded the next is claimed and sent — a pipeline, not rounds, so the rest of
a bulk change and the second step of two-step changes never wait for the slowest batch of a round. A
failed batch stops the claiming; the batches still in flight are sent and recorded before the failure is
raised (a refused login first), so none is left half-done by its neighbour's error. Changes whose request
may have left without an answer are reconciled (read at the carrier) before anything new is claimed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from bulkchange.carrier.port import Carrier, CarrierAccount, CarrierSession
from bulkchange.domain.deadline import Deadline
from bulkchange.domain.errors import BulkFailure
from bulkchange.domain.outcomes import expecting
from bulkchange.domain.statuses import ChangeStatus
from bulkchange.engine import changes as ch
from bulkchange.engine import reading
from bulkchange.engine.batch import record, send_and_record, while_held
from bulkchange.engine.context import EngineContext
from bulkchange.heap import collection_paused
from bulkchange.store.db import read_only_session
from bulkchange.store.tables import DeviceBulkChange, M2MDeviceChange
from bulkchange.store.write_lock import working_on

Claim = Callable[..., list[M2MDeviceChange]]


async def process_slice(
    ctx: EngineContext,
    session: CarrierSession,
    bulk: DeviceBulkChange,
    account: CarrierAccount,
    *,
    deadline: Deadline | None = None,
) -> None:
    """Claim, send and record batches until the slice's count, its time or the caller's deadline is used up.

    Without cyclic collections meanwhile: a slice's rows and requests live until it ends and are freed by
    reference counting then (``heap.collection_paused``)."""
    with collection_paused():
        await _process_slice(ctx, session, bulk, account, deadline=deadline)


async def _process_slice(
    ctx: EngineContext,
    session: CarrierSession,
    bulk: DeviceBulkChange,
    account: CarrierAccount,
    *,
    deadline: Deadline | None,
) -> None:
    s = ctx.settings
    carrier = ctx.carrier(account.carrier)
    ends = time.monotonic() + s.slice_max_seconds
    if deadline is not None:
        ends = min(ends, time.monotonic() + deadline.usable_s())
    room = s.slice_max_changes
    most = max(carrier.max_batch(step, s.batch_max_devices) for step in carrier.steps)
    at_once = ch.at_once_steps(ctx.carriers.values())
    in_flight: set[asyncio.Task[None]] = set()
    failures: list[BaseException] = []
    await reconcile_expired(ctx, carrier, session, bulk, account)
    try:
        while True:
            while not failures and len(in_flight) < s.carrier_concurrency and room > 0 and time.monotonic() < ends:
                batch = claim(ctx, ch.claim, bulk.id, limit=min(most, room), at_once=at_once)
                if not batch:
                    break
                batch = _fit(ctx, carrier, batch)
                room -= len(batch)
                in_flight.add(asyncio.create_task(send_and_record(ctx, session, bulk, account, batch)))
            if not in_flight:
                break
            done, in_flight = await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
            failures.extend(exc for task in done if (exc := task.exception()) is not None)
            if not failures:
                await reconcile_expired(ctx, carrier, session, bulk, account)
    finally:
        for task in in_flight:  # only when this slice itself is cancelled (worker shutdown)
            task.cancel()
        if in_flight:
            await asyncio.gather(*in_flight, return_exceptions=True)
    if failures:
        raise next((f for f in failures if isinstance(f, BulkFailure)), failures[0])


def _fit(ctx: EngineContext, carrier: Carrier, batch: list[M2MDeviceChange]) -> list[M2MDeviceChange]:
    """A claim takes up to the most any step of the carrier takes in one request; the step of this batch may
    take fewer: the rest go back at once (unsent, attempt refunded) for the next claim."""
    most = carrier.max_batch(ch.current_step(batch[0]), ctx.settings.batch_max_devices)
    if len(batch) <= most:
        return batch
    with ctx.session_factory.begin() as db:
        for change in batch[most:]:
            row = db.get(M2MDeviceChange, change.id)
            if row is not None and row.status == ChangeStatus.SENDING.value:
                ch.to_ready(row, next_attempt_at=None, refund_attempt=True)
    return batch[:most]


def _any_expired(ctx: EngineContext, bulk_id: int) -> bool:
    with read_only_session(ctx.session_factory) as db:
        return ch.any_expired_sending(db, bulk_id, now=ctx.clock())


def claim(ctx: EngineContext, how: Claim, bulk_id: int, *, limit: int, **extra: object) -> list[M2MDeviceChange]:
    """Run one of the claims of ``engine.changes`` as this worker, now, with the configured lease."""
    with working_on("claim"), ctx.session_factory() as db:
        return how(
            db,
            bulk_id,
            worker=ctx.worker_id,
            lease_s=ctx.settings.lease_seconds,
            now=ctx.clock(),
            limit=limit,
            **extra,
        )


async def reconcile_expired(
    ctx: EngineContext, carrier: Carrier, session: CarrierSession, bulk: DeviceBulkChange, account: CarrierAccount
) -> None:
    """SENDING rows whose lease expired (a crash, or an unknown outcome held for a moment): read first.

    Looked for with a read before the claim: a slice asks after every batch, nearly always for nothing, and a
    claim is a write transaction (on SQLite the write lock, which the receiver's commits then wait for)."""
    while _any_expired(ctx, bulk.id):
        rows = claim(ctx, ch.claim_expired_sending, bulk.id, limit=ctx.settings.batch_max_devices)
        if not rows:
            return
        outcomes = await while_held(ctx, rows, reading.reconcile(ctx, carrier, session, rows))
        correlation = {c.id: c.correlation_id for c in rows}
        record(ctx, bulk, account, expecting(outcomes, ChangeStatus.SENDING, correlation))
