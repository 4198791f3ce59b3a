"""A batch whose carrier calls take longer than its lease keeps the lease (``engine.batch.while_held``).

A Control Center batch can wait at the account's limiter (one call at a time, a few per second, every worker's
batches in one queue) for longer than the claim's lease. Without a heartbeat its changes looked like a dead
worker's: another worker took them over, read them at the carrier and sent them again, while the first was
still sending them. The clock is the test's: the lease runs out when the test says, the heartbeat's own
period (a third of the lease) is the only real time waited.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from bulkchange.carrier.port import ChangeView
from bulkchange.domain.outcomes import Kind, Outcome
from bulkchange.engine import changes as ch
from bulkchange.engine.accounts import load_account
from bulkchange.engine.batch import send_and_record
from bulkchange.engine.slice import claim
from bulkchange.store.tables import DeviceBulkChange, M2MDeviceChange, utcnow

from .conftest import Harness, activation_row, make_harness, new_iccid, new_imei

LEASE_S = 5


class _HeldAtTheCarrier:
    """A carrier session whose ``send`` does not return until the test lets it (nothing reaches a carrier)."""

    def __init__(self) -> None:
        self.sending = asyncio.Event()
        self.answer = asyncio.Event()

    async def send(self, step: str, changes: Sequence[ChangeView]) -> list[Outcome]:
        self.sending.set()
        await self.answer.wait()
        return [Outcome(c.id, Kind.RETRY, "test: give it back") for c in changes]


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    yield from make_harness(tmp_path, callbacks=False, lease_seconds=LEASE_S, batch_max_devices=3)


def _lease_ends(h: Harness, ids: list[int]) -> list[datetime | None]:
    with h.rt.session_factory() as session:
        return list(session.scalars(select(M2MDeviceChange.lease_expires_at).where(M2MDeviceChange.id.in_(ids))))


async def test_a_batch_still_at_the_carrier_is_not_taken_over_when_its_first_lease_ends(h: Harness) -> None:
    start = utcnow()
    offset = [timedelta(0)]
    h.rt.ctx.clock = lambda: start + offset[0]
    bulk_id = h.submit([activation_row(new_iccid(), new_imei()) for _ in range(3)])
    with h.rt.session_factory() as session:
        bulk = session.get(DeviceBulkChange, bulk_id)
        account = load_account(session, h.provider_id)
    assert bulk is not None
    batch = claim(h.rt.ctx, ch.claim, bulk_id, limit=3)
    ids = [c.id for c in batch]
    assert len(ids) == 3
    carrier = _HeldAtTheCarrier()
    task = asyncio.create_task(send_and_record(h.rt.ctx, carrier, bulk, account, batch))  # type: ignore[arg-type]
    await asyncio.wait_for(carrier.sending.wait(), timeout=5)
    first_end = start + timedelta(seconds=LEASE_S)
    offset[0] = timedelta(seconds=LEASE_S - 1)  # the claim's own lease is about to end
    deadline = asyncio.get_running_loop().time() + 3 * LEASE_S
    while not all(end is not None and end > first_end for end in _lease_ends(h, ids)):
        assert asyncio.get_running_loop().time() < deadline, "the lease of a batch at the carrier was not extended"
        await asyncio.sleep(0.05)
    offset[0] = timedelta(seconds=LEASE_S + 1)  # past the first lease: only a dead worker's would have ended
    with h.rt.session_factory() as session:
        taken = ch.claim_expired_sending(
            session, bulk_id, worker="another-worker", lease_s=LEASE_S, now=start + offset[0], limit=10
        )
    assert taken == []
    carrier.answer.set()
    await asyncio.wait_for(task, timeout=5)
    with h.rt.session_factory() as session:
        statuses = set(session.scalars(select(M2MDeviceChange.status).where(M2MDeviceChange.id.in_(ids))))
    assert statuses == {"READY"}  # the batch's own outcomes were recorded: the claim was still its own


async def test_a_change_taken_over_meanwhile_is_not_held_by_the_heartbeat(h: Harness) -> None:
    start = utcnow()
    offset = [timedelta(0)]
    h.rt.ctx.clock = lambda: start + offset[0]
    bulk_id = h.submit([activation_row(new_iccid(), new_imei())])
    batch = claim(h.rt.ctx, ch.claim, bulk_id, limit=1)
    with h.rt.session_factory.begin() as session:
        row = session.get(M2MDeviceChange, batch[0].id)
        assert row is not None
        row.correlation_id = "another claim"  # e.g. reconciled by another worker after a database outage
    with h.rt.session_factory.begin() as session:
        held = ch.extend_claim(
            session, [batch[0].id], worker=h.rt.ctx.worker_id, correlation=batch[0].correlation_id, until=start
        )
    assert held == 0
