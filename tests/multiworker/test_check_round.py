"""The one deferred check per bulk change, scheduled by many workers at once: exactly one message."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import select

from bulkchange.engine.follow_up import schedule_check
from bulkchange.queue.message import BulkChangeMessage
from bulkchange.runtime import build_runtime
from bulkchange.settings import Settings
from bulkchange.store.tables import DeviceBulkChange

from .conftest import MakeBulk


def test_concurrent_follow_ups_schedule_one_check(claim_db_url: str, make_bulk: MakeBulk) -> None:
    bulk_id = make_bulk(3)
    rt = build_runtime(Settings(database_url=claim_db_url, activation_check_delay_s=30), migrate=False)
    try:
        workers = 8
        start = threading.Barrier(workers)

        def follow_up(_: int) -> None:
            start.wait()
            with rt.session_factory() as session:
                schedule_check(rt.ctx, session, bulk_id, BulkChangeMessage(bulk_change_id=bulk_id))

        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(follow_up, range(workers)))

        assert rt.transport.stats().delayed == 1  # one check message, not one per worker
        with rt.session_factory() as session:
            bulk = session.scalars(select(DeviceBulkChange).where(DeviceBulkChange.id == bulk_id)).one()
        assert bulk.check_round == 1 and bulk.next_wake_at is not None

        # The check round's own follow-ups, duplicated: the next round is scheduled once too.
        check = BulkChangeMessage(bulk_change_id=bulk_id, is_retry_new_activate_thingspace_device=True, retry_number=1)
        start2 = threading.Barrier(4)

        def round_follow_up(_: int) -> None:
            start2.wait()
            with rt.session_factory() as session:
                schedule_check(rt.ctx, session, bulk_id, check)

        with ThreadPoolExecutor(max_workers=4) as pool:
            list(pool.map(round_follow_up, range(4)))
        assert rt.transport.stats().delayed == 2
    finally:
        rt.close()
