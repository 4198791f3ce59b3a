"""A device's next step leaves as soon as its previous one is recorded: the Activate of an Add-then-Activate
does not wait until every Add of the bulk change has been made (no phase waits for a whole bulk change)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from bulkchange.store.tables import DeviceBulkChangeLog

from .conftest import Harness, activation_row, make_harness, new_iccid, new_imei

ADD = "Add ThingSpace Device: ThingSpace API"
ACTIVATE = "Activate ThingSpace Device: ThingSpace API"


@pytest.fixture
def small_batches(tmp_path: Path) -> Iterator[Harness]:
    # Two devices per request and per slice: six Add-then-Activate changes are three batches at each step.
    yield from make_harness(tmp_path, batch_max_devices=2, slice_max_changes=2, carrier_concurrency=1)


def _carrier_steps(h: Harness, bulk_id: int) -> list[str]:
    """The bulk change's carrier calls as its log shows them, in the order they were recorded."""
    with h.rt.session_factory() as session:
        rows = session.scalars(
            select(DeviceBulkChangeLog.log_entry_description)
            .where(DeviceBulkChangeLog.bulk_change_id == bulk_id)
            .where(DeviceBulkChangeLog.log_entry_description.in_([ADD, ACTIVATE]))
            .order_by(DeviceBulkChangeLog.id)
        ).all()
    return ["add" if d == ADD else "activate" for d in rows]


async def test_an_activate_follows_its_add_before_the_next_add_is_sent(small_batches: Harness) -> None:
    h = small_batches
    iccids = [new_iccid() for _ in range(6)]
    bulk = h.submit([activation_row(iccid, new_imei()) for iccid in iccids])
    await h.run()
    assert h.counts(bulk) == {"PROCESSED": 6}
    # Each batch's Activate goes out once its Add is recorded, ahead of the Adds still waiting.
    assert _carrier_steps(h, bulk) == ["add", "add", "activate", "activate"] * 3
    for iccid in iccids:
        assert h.actions(iccid) == {"add": 1, "activate": 1}
