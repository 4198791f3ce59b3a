"""One unfinished change per device is the database's rule (``UX_M2M_DeviceChange_Unfinished``), on SQLite
and PostgreSQL (the engine's ``db_url`` fixture): whatever path writes a change, and whichever chunk of a
file meets the collision, nothing is half-created and the device is free again once its change ended."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, insert, select, update
from sqlalchemy.exc import IntegrityError

from bulkchange.engine import controls
from bulkchange.engine.submit import RowValidator, SubmissionRefused, create_bulk_change
from bulkchange.store.constraints import violates
from bulkchange.store.tables import UNFINISHED_CHANGE_INDEX, DeviceBulkChange, M2MDeviceChange, ServiceProvider

from .conftest import Harness, make_harness, new_iccid

BUSY = "device already has an unfinished change in bulk change {}"


@pytest.fixture
def quiet(tmp_path: Path) -> Iterator[Harness]:
    """A harness without the callback receiver."""
    yield from make_harness(tmp_path, callbacks=False)


@pytest.fixture
def no_early_check(monkeypatch: pytest.MonkeyPatch) -> None:
    """Disable the SELECT that refuses busy devices before the insert: only the index is left."""
    original = RowValidator._facts

    def facts_without_busy_devices(self: RowValidator, iccids: list[str]) -> Any:
        facts = original(self, iccids)
        facts.busy.clear()
        return facts

    monkeypatch.setattr(RowValidator, "_facts", facts_without_busy_devices)


def _inventory(iccids: list[str]) -> list[dict[str, Any]]:
    return [{"ICCID": i} for i in iccids]


def _submit(h: Harness, rows: list[dict[str, Any]], **kwargs: Any) -> int:
    with h.rt.session_factory() as session:
        return create_bulk_change(
            session, h.rt.transport, rows, status="inventory", service_provider_id=h.provider_id, **kwargs
        )


def _count(h: Harness, table: type) -> int:
    with h.rt.session_factory() as session:
        return int(session.execute(select(func.count()).select_from(table)).scalar_one())


@pytest.mark.usefixtures("no_early_check")
def test_a_collision_in_a_later_chunk_refuses_the_whole_file_and_names_the_rows(quiet: Harness) -> None:
    h = quiet
    held = [new_iccid() for _ in range(3)]
    holder = _submit(h, _inventory(held))
    # Chunks of 4: rows 1-4 are free and get inserted; rows 6 and 8 collide in the second chunk; 9-10 follow.
    rows = _inventory([new_iccid() for _ in range(10)])
    rows[5], rows[7] = {"ICCID": held[0]}, {"ICCID": held[2]}

    with pytest.raises(SubmissionRefused) as refused:
        _submit(h, rows, chunk_rows=4)

    report = refused.value.report
    assert report.rows == len(rows)
    assert [(p.row, p.field, p.iccid, p.message) for p in report.problems] == [
        (6, "ICCID", held[0], BUSY.format(holder)),
        (8, "ICCID", held[2], BUSY.format(holder)),
    ]
    assert _count(h, DeviceBulkChange) == 1  # the first chunk was rolled back with the rest
    assert _count(h, M2MDeviceChange) == len(held)


def test_the_database_refuses_a_second_unfinished_change_whatever_writes_it(quiet: Harness) -> None:
    """Not only submit: an INSERT or an UPDATE that would give a device two unfinished changes fails."""
    h = quiet
    iccid = new_iccid()
    first = _submit(h, _inventory([iccid]))
    with h.rt.session_factory() as session:
        (row,) = session.execute(select(M2MDeviceChange).where(M2MDeviceChange.bulk_change_id == first)).scalars()
        values = {c.key: getattr(row, c.key) for c in M2MDeviceChange.__mapper__.column_attrs if c.key not in ("id",)}
    with h.rt.session_factory() as session:
        other = DeviceBulkChange(service_provider_id=h.provider_id, status="NEW")
        session.add(other)
        session.flush()
        with pytest.raises(IntegrityError) as caught:
            session.execute(insert(M2MDeviceChange), [{**values, "bulk_change_id": other.id}])
        assert violates(caught.value, UNFINISHED_CHANGE_INDEX)
        session.rollback()

    # Finished, the change frees the device: a new one is accepted. Reopening the old one is then refused.
    controls.cancel(h.rt.ctx, first)
    second = _submit(h, _inventory([iccid]))
    assert second != first
    with h.rt.session_factory() as session:
        with pytest.raises(IntegrityError) as caught:
            session.execute(
                update(M2MDeviceChange).where(M2MDeviceChange.bulk_change_id == first).values(status="READY")
            )
        assert violates(caught.value, UNFINISHED_CHANGE_INDEX)


def test_the_rule_is_per_service_provider(quiet: Harness) -> None:
    """Another provider's unfinished change of the same ICCID does not hold this provider's device."""
    h = quiet
    iccid = new_iccid()
    with h.rt.session_factory.begin() as session:
        other = ServiceProvider(name="other")
        session.add(other)
        session.flush()
        other_id = other.id
    with h.rt.session_factory() as session:
        create_bulk_change(
            session, h.rt.transport, _inventory([iccid]), status="inventory", service_provider_id=other_id
        )
    assert _submit(h, _inventory([iccid]))
    with h.rt.session_factory() as session:
        providers = session.execute(
            select(M2MDeviceChange.service_provider_id).where(M2MDeviceChange.iccid == iccid)
        ).scalars()
        assert sorted(providers) == sorted([h.provider_id, other_id])


async def test_a_bulk_change_worked_to_the_end_frees_its_devices(quiet: Harness) -> None:
    h = quiet
    iccids = [new_iccid() for _ in range(3)]
    first = _submit(h, _inventory(iccids))
    with pytest.raises(SubmissionRefused):
        _submit(h, _inventory(iccids[:1]))  # held while unfinished

    await h.run()

    assert h.counts(first) == {"PROCESSED": 3}
    again = _submit(h, _inventory(iccids))
    assert h.counts(again) == {"READY": 3}
