"""Submission streams its rows (issue 8): any iterable, read once, checked and inserted a chunk at a time,
and still all or nothing — on SQLite and PostgreSQL (the engine's ``db_url`` fixture)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bulkchange.domain.statuses import DeviceStatusId
from bulkchange.engine import operator_actions as ops
from bulkchange.engine.submit import MAX_PROBLEMS_KEPT, SubmissionRefused, create_bulk_change
from bulkchange.input import InputRefused
from bulkchange.store.tables import Device, DeviceBulkChange, M2MDeviceChange, ServiceProvider

from .conftest import Harness, make_harness, new_iccid

CHUNK = 10  # small chunks: a few dozen rows cross several of them


@pytest.fixture
def quiet(tmp_path: Path) -> Iterator[Harness]:
    """A harness without the callback receiver: these tests only submit."""
    yield from make_harness(tmp_path, callbacks=False)


def _submit(h: Harness, rows: Any, *, status: str = "inventory", **kwargs: Any) -> int:
    with h.rt.session_factory() as session:
        return create_bulk_change(
            session, h.rt.transport, rows, status=status, service_provider_id=h.provider_id, **kwargs
        )


def _refused(h: Harness, rows: Any, **kwargs: Any) -> SubmissionRefused:
    with pytest.raises(SubmissionRefused) as caught:
        _submit(h, rows, **kwargs)
    return caught.value


def _nothing_created(h: Harness, *, bulk_changes: int = 0, changes: int = 0) -> None:
    assert h.count_rows(DeviceBulkChange) == bulk_changes
    assert h.count_rows(M2MDeviceChange) == changes
    assert h.rt.transport.stats().visible == bulk_changes


def _last_row_refused_by(h: Harness, kind: str) -> tuple[dict[str, str], str]:
    """A row that only its own check refuses, and the words of that refusal."""
    iccid = new_iccid()
    if kind == "luhn":
        return {"ICCID": iccid[:-1] + str((int(iccid[-1]) + 1) % 10)}, "Luhn"
    if kind == "other provider":
        with h.rt.session_factory.begin() as s:
            other = ServiceProvider(name="other")
            s.add(other)
            s.flush()
            s.add(Device(service_provider_id=other.id, iccid=iccid, device_status_id=DeviceStatusId.ACTIVE))
        return {"ICCID": iccid}, "another service provider"
    _submit(h, [{"ICCID": iccid}])  # busy: READY in an earlier, unfinished bulk change
    return {"ICCID": iccid}, "unfinished change in bulk change"


@pytest.mark.parametrize("kind", ["luhn", "other provider", "busy"])
def test_an_invalid_last_row_after_several_chunks_creates_nothing(quiet: Harness, kind: str) -> None:
    bad, words = _last_row_refused_by(quiet, kind)
    before = quiet.count_rows(DeviceBulkChange)
    before_changes = quiet.count_rows(M2MDeviceChange)
    rows = [{"ICCID": new_iccid()} for _ in range(4 * CHUNK + 3)] + [bad]
    exc = _refused(quiet, iter(rows), chunk_rows=CHUNK)
    assert [(p.row, p.field) for p in exc.report.problems] == [(len(rows), "ICCID")]
    assert words in exc.report.problems[0].message
    assert exc.report.rows == len(rows)
    _nothing_created(quiet, bulk_changes=before, changes=before_changes)


def test_an_invalid_last_row_after_full_size_chunks_creates_nothing(quiet: Harness) -> None:
    """The default chunk size: earlier chunks were inserted before the last one was read, and rolled back."""
    rows = [{"ICCID": new_iccid()} for _ in range(2_500)] + [{"ICCID": "89148000000000000000"}]
    exc = _refused(quiet, (row for row in rows))
    assert [p.row for p in exc.report.problems] == [2_501]
    _nothing_created(quiet)


def test_duplicates_across_chunks_name_the_first_row(quiet: Harness) -> None:
    rows = [{"ICCID": new_iccid()} for _ in range(3 * CHUNK)]
    rows[2 * CHUNK + 4] = dict(rows[2])  # row 25 repeats row 3, two chunks later
    rows.append(dict(rows[2]))  # and row 31 too: still row 3, the first
    exc = _refused(quiet, iter(rows), chunk_rows=CHUNK)
    assert [(p.row, p.message) for p in exc.report.problems] == [(25, "duplicate of row 3"), (31, "duplicate of row 3")]
    _nothing_created(quiet)


def test_the_row_limit_refuses_without_reading_the_rest(quiet: Harness) -> None:
    limit = 2 * CHUNK + 5
    pulled = 0

    def endless() -> Iterator[dict[str, str]]:
        nonlocal pulled
        while True:
            pulled += 1
            if pulled > limit + 1:
                raise AssertionError(f"row {pulled} was read: the limit is {limit}")
            yield {"ICCID": new_iccid()}

    exc = _refused(quiet, endless(), chunk_rows=CHUNK, max_rows=limit)
    assert pulled == limit + 1
    assert [(p.row, p.field) for p in exc.report.problems] == [(0, "file")]
    assert "the limit per bulk change is 25" in exc.report.problems[0].message
    _nothing_created(quiet)


def test_rows_up_to_the_limit_are_accepted(quiet: Harness) -> None:
    bulk_id = _submit(quiet, ({"ICCID": new_iccid()} for _ in range(CHUNK * 2)), chunk_rows=CHUNK, max_rows=CHUNK * 2)
    assert quiet.counts(bulk_id) == {"READY": CHUNK * 2}


def test_a_generator_is_submitted_in_chunks(quiet: Harness) -> None:
    n = 3 * CHUNK + 7
    iccids = [new_iccid() for _ in range(n)]
    bulk_id = _submit(quiet, ({"ICCID": i} for i in iccids), chunk_rows=CHUNK)
    changes = quiet.changes(bulk_id)
    assert [c.iccid for c in changes] == iccids
    assert {c.status for c in changes} == {"READY"}
    with quiet.rt.session_factory() as s:
        bulk = s.get(DeviceBulkChange, bulk_id)
        assert bulk is not None and bulk.status_details == f"{n} READY"
    assert quiet.rt.transport.stats().visible == 1


def test_a_reader_failing_midway_creates_nothing(quiet: Harness) -> None:
    def rows() -> Iterator[dict[str, str]]:
        for _ in range(2 * CHUNK + 1):
            yield {"ICCID": new_iccid()}
        raise InputRefused("not valid CSV", line=2 * CHUNK + 2, column="row")

    with pytest.raises(InputRefused, match="not valid CSV"):
        _submit(quiet, rows(), chunk_rows=CHUNK)
    _nothing_created(quiet)


def test_a_file_of_bad_rows_keeps_the_first_problems_and_counts_the_rest(quiet: Harness) -> None:
    extra = 37
    rows = ({"ICCID": f"not an iccid {n}"} for n in range(MAX_PROBLEMS_KEPT + extra))  # one problem each
    exc = _refused(quiet, rows)
    assert len(exc.report.problems) == MAX_PROBLEMS_KEPT and exc.report.omitted == extra
    assert [p.row for p in exc.report.problems] == list(range(1, MAX_PROBLEMS_KEPT + 1))
    assert str(exc).startswith(f"{MAX_PROBLEMS_KEPT + extra} problem(s) in {MAX_PROBLEMS_KEPT + extra} row(s)")
    _nothing_created(quiet)


def test_the_preview_reads_a_generator_once(quiet: Harness) -> None:
    iccids = [new_iccid() for _ in range(3 * CHUNK)]
    rows: list[dict[str, str]] = [{"ICCID": i} for i in iccids]
    rows[-1] = {"ICCID": iccids[0]}
    with quiet.rt.session_factory() as session:
        preview = ops.preview(session, (r for r in rows), status="deactive", service_provider_id=quiet.provider_id)
    assert [r.iccid for r in preview.rows] == [r["ICCID"] for r in rows]
    assert [(p.row, p.message) for p in preview.problems] == [(len(rows), "duplicate of row 1")]
    assert preview.rows[-1].problems == ["ICCID: duplicate of row 1"]
    assert all("MDN" in " ".join(r.warnings) for r in preview.rows)
    _nothing_created(quiet)
