"""Storing a batch of callbacks (``insert_callbacks``) where the database has no INSERT … ON CONFLICT (SQL
Server): the stored ones are read first, the rest inserted; a callback another receiver stored in between
sends the batch to one savepoint per callback. No SQL Server here, so that path runs on SQLite and
PostgreSQL with their upsert switched off."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from bulkchange.engine.callbacks import store
from bulkchange.engine.callbacks.apply import ingest_callbacks, reader
from bulkchange.store.tables import ThingSpaceCallBackResponseLog

from .conftest import Harness, new_iccid, success_callback


@pytest.fixture(autouse=True)
def read_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store, "_UPSERT_DIALECTS", ())


def _items(h: Harness, bodies: list[dict[str, Any]]) -> list[store.Received]:
    read = reader(h.rt.engine.ctx).read_callback
    return [(body, read(body), h.provider_id) for body in bodies]


def _stored_ids(h: Harness) -> dict[tuple[str, str], int]:
    with h.rt.session_factory() as s:
        rows = s.execute(
            select(
                ThingSpaceCallBackResponseLog.request_id,
                ThingSpaceCallBackResponseLog.iccid,
                ThingSpaceCallBackResponseLog.id,
            )
        ).all()
    return {(request_id, iccid): row_id for request_id, iccid, row_id in rows}


def test_stored_ones_and_repeats_within_the_batch_are_duplicates(harness: Harness) -> None:
    h = harness
    old, new_a, new_b = (success_callback("req-1", new_iccid()) for _ in range(3))
    assert ingest_callbacks(h.rt.engine.ctx, _items(h, [old])) == [_stored_ids(h)[("req-1", old["deviceIds"][0]["id"])]]
    ids = ingest_callbacks(h.rt.engine.ctx, _items(h, [new_a, old, new_b, {**new_a, "callbackCount": 2}]))
    stored = _stored_ids(h)
    assert ids == [
        stored[("req-1", new_a["deviceIds"][0]["id"])],
        None,
        stored[("req-1", new_b["deviceIds"][0]["id"])],
        None,
    ]
    assert len(stored) == 3


def test_a_callback_stored_in_between_sends_the_batch_one_by_one(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Another receiver stores one of the batch after this one read what is stored: the batch's INSERT then
    # fails on the unique key, and each callback is stored in a savepoint of its own.
    h = harness
    raced, fresh = success_callback("req-2", new_iccid()), success_callback("req-2", new_iccid())
    ingest_callbacks(h.rt.engine.ctx, _items(h, [raced]))
    monkeypatch.setattr(store, "_stored_keys", lambda conn, keys: set())  # the read saw nothing yet
    ids = ingest_callbacks(h.rt.engine.ctx, _items(h, [fresh, raced]))
    stored = _stored_ids(h)
    assert ids == [stored[("req-2", fresh["deviceIds"][0]["id"])], None]
    assert len(stored) == 2
