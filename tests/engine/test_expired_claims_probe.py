"""A slice looks for expired claims (changes a dead worker left SENDING) with a read, and claims them only
when there are some: it asks after every batch, nearly always for nothing, and on SQLite a claim is a write
transaction that a callback receiver's commits wait behind."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from bulkchange.engine import changes as ch
from bulkchange.engine.slice import claim
from bulkchange.store.db import read_only_session
from bulkchange.store.tables import M2MDeviceChange, utcnow
from bulkchange.store.write_lock import WRITE_LOCK

from .conftest import Harness, activation_row, make_harness, new_iccid, new_imei

LEASE_S = 60


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    yield from make_harness(tmp_path, lease_seconds=LEASE_S, batch_max_devices=2)


def _any_expired(h: Harness, bulk_id: int, *, after_s: float) -> bool:
    with read_only_session(h.rt.session_factory) as session:
        return ch.any_expired_sending(session, bulk_id, now=utcnow() + timedelta(seconds=after_s))


def test_the_probe_sees_exactly_what_the_reclaim_would_take(h: Harness) -> None:
    bulk_id = h.submit([activation_row(new_iccid(), new_imei()) for _ in range(2)])
    assert not _any_expired(h, bulk_id, after_s=2 * LEASE_S), "nothing claimed yet"
    taken = claim(h.rt.ctx, ch.claim, bulk_id, limit=2)
    assert len(taken) == 2
    assert not _any_expired(h, bulk_id, after_s=0), "the lease still runs"
    assert _any_expired(h, bulk_id, after_s=2 * LEASE_S), "a worker that died mid-call left them"
    with h.rt.session_factory() as session:
        later = utcnow() + timedelta(seconds=2 * LEASE_S)
        reclaimed = ch.claim_expired_sending(session, bulk_id, worker="w2", lease_s=LEASE_S, now=later, limit=10)
    assert {c.id for c in reclaimed} == {c.id for c in taken}
    assert not _any_expired(h, bulk_id, after_s=2 * LEASE_S - 1), "taken over, with a fresh lease"


async def test_a_run_without_expired_claims_takes_the_write_lock_only_to_claim_work(
    h: Harness, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not db_url.startswith("sqlite"):
        pytest.skip("only SQLite has the one write lock (PostgreSQL locks rows)")
    claims = [0]
    real_claim = ch.claim

    def counted(*args: Any, **kwargs: Any) -> list[M2MDeviceChange]:
        claims[0] += 1
        return real_claim(*args, **kwargs)

    monkeypatch.setattr(ch, "claim", counted)
    bulk_id = h.submit([activation_row(new_iccid(), new_imei()) for _ in range(5)])  # three batches, two steps
    before = WRITE_LOCK.snapshot().get("claim")
    await h.run()
    assert h.counts(bulk_id) == {"PROCESSED": 5}
    after = WRITE_LOCK.snapshot()["claim"]
    opened = after.transactions - (before.transactions if before else 0)
    assert claims[0] >= 6, "each device's Add and Activate were claimed"
    assert opened == claims[0], "no write transaction went to looking for expired claims"
