"""Property and limit tests of the input reader (``bulkchange.input`` through ``engine.submit.open_input``) and
of ``validate_rows``.

* Whatever the bytes, the reader returns rows or raises ``InputRefused`` (a ValueError) with a reason.
* Whatever the rows, ``validate_rows`` returns a report; every refusal names its row and its field.
* Oversized and absurd files are refused in bounded memory (tracemalloc peak, not timings).
"""

from __future__ import annotations

import csv
import io
import json
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.orm import Session

from bulkchange.domain.identifiers import luhn_check_digit
from bulkchange.domain.statuses import TargetStatus
from bulkchange.engine.row_rules import COLUMNS as THINGSPACE_COLUMNS
from bulkchange.engine.submit import validate_rows
from bulkchange.input import InputRefused, Limits, open_table
from bulkchange.store.db import make_engine, make_session_factory
from bulkchange.store.migrate import upgrade
from bulkchange.store.tables import ServiceProvider

MB = 1024 * 1024
FIXTURE_OK = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]


def _iccid(n: int) -> str:
    body = f"8914800{n:012d}"
    return body + luhn_check_digit(body)


def _write(tmp: Path, name: str, data: bytes) -> Path:
    path = tmp / name
    path.write_bytes(data)
    return path


def read_rows(path: Path, *, max_bytes: int = 25 * MB, max_rows: int = 100_000) -> list[dict[str, Any]]:
    """Every row of the file as a dict (the defaults are the settings' defaults)."""
    with open_table(path, columns=THINGSPACE_COLUMNS, limits=Limits(max_bytes, max_rows)) as table:
        return [row.cells for row in table]


def _drain(path: Path, *, max_bytes: int = 25 * MB, max_rows: int = 100_000) -> int:
    """Read every row and keep none (what a submission does a chunk at a time); return how many."""
    with open_table(path, columns=THINGSPACE_COLUMNS, limits=Limits(max_bytes, max_rows)) as table:
        return sum(1 for _row in table)


def _peak_mb(fn: Callable[[], Any]) -> tuple[float, Any]:
    """Run ``fn``; return (peak traced MB, result or the exception it raised)."""
    tracemalloc.start()
    try:
        try:
            result: Any = fn()
        except Exception as exc:
            result = exc
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak / MB, result


# ----------------------------------------------------------------------------------- read_rows: any bytes


@settings(max_examples=150, suppress_health_check=FIXTURE_OK, deadline=None)
@given(data=st.binary(max_size=2000), suffix=st.sampled_from([".csv", ".json", ".txt"]))
def test_any_bytes_are_read_or_refused_with_a_reason(tmp_path: Path, data: bytes, suffix: str) -> None:
    path = _write(tmp_path, "in" + suffix, data)
    try:
        rows = read_rows(path)
    except InputRefused as exc:
        assert str(exc) and exc.problem.column
    else:
        assert isinstance(rows, list) and all(isinstance(r, dict) for r in rows)


text_values = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=30)


@settings(max_examples=100, suppress_health_check=FIXTURE_OK, deadline=None)
@given(
    rows=st.lists(
        st.dictionaries(st.sampled_from(["ICCID", "IMEI", "Status", "Rev Product Id"]), text_values), max_size=20
    ),
    wrap=st.booleans(),
)
def test_json_rows_read_back_as_written(tmp_path: Path, rows: list[dict[str, str]], wrap: bool) -> None:
    path = _write(tmp_path, "rows.json", json.dumps({"rows": rows} if wrap else rows).encode())
    assert read_rows(path) == rows


@settings(max_examples=100, suppress_health_check=FIXTURE_OK, deadline=None)
@given(
    rows=st.lists(
        st.fixed_dictionaries({"ICCID": text_values, "Status": text_values}).filter(
            lambda r: any(v.strip() for v in r.values())
        ),
        max_size=20,
    ),
    utf16=st.booleans(),
)
def test_csv_rows_read_back_as_written(tmp_path: Path, rows: list[dict[str, str]], utf16: bool) -> None:
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=["ICCID", "Status"])
    writer.writeheader()
    writer.writerows(rows)
    data = buffer.getvalue().encode("utf-16" if utf16 else "utf-8-sig")  # utf-16 writes its BOM
    assert read_rows(_write(tmp_path, "rows.csv", data)) == rows


# ------------------------------------------------------------------------------- absurd files, one at a time


def test_a_100_mb_file_is_refused_before_it_is_read(tmp_path: Path) -> None:
    path = tmp_path / "huge.csv"
    with path.open("wb") as f:  # sparse: 100 MB of NULs on disk without writing them
        f.truncate(100 * MB)
    peak, result = _peak_mb(lambda: _drain(path))
    assert isinstance(result, InputRefused)
    assert "104,857,600 bytes" in str(result) and "BULKCHANGE_MAX_UPLOAD_BYTES" in str(result)
    assert peak < 1, peak


def test_a_100_mb_csv_under_a_raised_size_limit_is_refused_by_rows_in_bounded_memory(tmp_path: Path) -> None:
    path = tmp_path / "huge.csv"
    line = f"{_iccid(1)},active,{'x' * 70}\n".encode()  # 100 bytes a row
    with path.open("wb") as f:
        f.write(b"ICCID,Status,Note\n")
        block = line * 10_000
        for _ in range(100 * MB // len(block)):
            f.write(block)
    assert path.stat().st_size >= 100 * MB - len(block)
    peak, result = _peak_mb(lambda: _drain(path, max_bytes=200 * MB, max_rows=100_000))
    assert isinstance(result, InputRefused), result
    assert "more than 100,000 rows" in str(result)
    assert peak < 8, peak  # streamed: a chunk and one row at a time, never the file or the rows


def test_a_million_rows_are_refused_in_bounded_memory(tmp_path: Path) -> None:
    path = tmp_path / "million.csv"
    with path.open("w", encoding="utf-8") as f:
        f.write("ICCID\n")
        for start in range(0, 1_000_000, 10_000):
            f.write("".join(f"8914800{n:013d}\n" for n in range(start, start + 10_000)))  # the reader's test
    peak, result = _peak_mb(lambda: _drain(path))  # the defaults: 25 MB, 100,000 rows
    assert isinstance(result, InputRefused), result
    assert "more than 100,000 rows" in str(result) and "BULKCHANGE_MAX_ROWS_PER_BULK_CHANGE" in str(result)
    assert peak < 8, peak


def test_a_million_rows_of_json_are_refused_in_bounded_memory(tmp_path: Path) -> None:
    path = tmp_path / "million.json"
    with path.open("w", encoding="utf-8") as f:
        f.write("[")
        for start in range(0, 1_000_000, 10_000):
            sep = "," if start else ""
            f.write(sep + ",".join(f'{{"ICCID":"{n}"}}' for n in range(start, start + 10_000)))
        f.write("]")
    peak, result = _peak_mb(lambda: _drain(path, max_bytes=100 * MB))
    assert isinstance(result, InputRefused), result
    assert "more than 100,000 rows" in str(result)
    assert peak < 8, peak


def test_rows_up_to_the_limit_are_read(tmp_path: Path) -> None:
    path = _write(tmp_path, "ok.csv", ("ICCID\n" + "".join(f"{_iccid(n)}\n" for n in range(50))).encode())
    assert len(read_rows(path, max_rows=50)) == 50
    with pytest.raises(InputRefused, match="more than 49 rows"):
        read_rows(path, max_rows=49)


def test_nul_bytes_are_refused_naming_the_line(tmp_path: Path) -> None:
    path = _write(tmp_path, "nul.csv", f"ICCID,Status\n{_iccid(1)},active\n{_iccid(2)}\x00,active\n".encode())
    with pytest.raises(InputRefused, match="NUL byte at line 3"):
        read_rows(path)


def test_windows_1252_is_read_and_mixed_encodings_are_refused(tmp_path: Path) -> None:
    path = _write(tmp_path, "cp1252.csv", f"ICCID,Description\n{_iccid(1)},Gerät München – 5 €\n".encode("cp1252"))
    assert read_rows(path) == [{"ICCID": _iccid(1), "Description": "Gerät München – 5 €"}]
    mixed = f"ICCID,Description\n{_iccid(1)},Gerät\n{_iccid(2)},".encode() + "Gerät\n".encode("cp1252")
    with pytest.raises(InputRefused, match="not UTF-8"):
        read_rows(_write(tmp_path, "mixed.csv", mixed))


def test_utf16_with_a_bom_is_read_and_without_one_is_refused(tmp_path: Path) -> None:
    text = f"ICCID,Status\n{_iccid(1)},active\n"
    assert read_rows(_write(tmp_path, "bom.csv", text.encode("utf-16"))) == [{"ICCID": _iccid(1), "Status": "active"}]
    with pytest.raises(InputRefused, match="NUL byte at line 1"):
        read_rows(_write(tmp_path, "nobom.csv", text.encode("utf-16-le")))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"[" * 100_000, "row 1 is not a JSON object"),
        (b'[{"a": ' + b"[" * 100_000 + b"]}", "nested too deeply"),
        (b'{"other": ' + b"[" * 100_000 + b"]}", "nested too deeply"),
        (b'[{"ICCID": "1"}, 5]', "row 2 is not a JSON object"),
        (b'[{"ICCID": "1"} {"ICCID": "2"}]', "line 2: not valid JSON"),
        (b'[{"ICCID": "1"}] trailing', "not valid JSON"),
        (b'{"other": 1}', "JSON input must be a list"),
        (b"[1e99999999999999999999]", "not valid JSON"),
        (b'[{"ICCID": 1e99999999999999999999}]', "not valid JSON"),
        (b'[{"ICCID": ' + b"1" * 5000 + b"}]", "not valid JSON"),
        (b'[{"ICCID": 89148000000000000000000001}]', ""),
    ],
)
def test_absurd_json_is_refused_or_read(tmp_path: Path, data: bytes, message: str) -> None:
    path = _write(tmp_path, "x.json", data)
    try:
        rows = read_rows(path)
    except InputRefused as exc:
        assert message in str(exc)
    else:
        assert message == "" and isinstance(rows, list)


def test_a_csv_field_over_the_csv_limit_is_refused_naming_the_line(tmp_path: Path) -> None:
    path = _write(tmp_path, "wide.csv", b'ICCID,Note\n1,"' + b"x" * 200_000 + b'"\n')
    with pytest.raises(InputRefused, match="line 2"):
        read_rows(path)


# --------------------------------------------------------------------------------------- validate_rows


@pytest.fixture(scope="module")
def sessions(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[], Session]]:
    url = f"sqlite:///{tmp_path_factory.mktemp('input')}/input.sqlite3"
    upgrade(url)
    engine = make_engine(url)
    factory = make_session_factory(engine)
    with factory.begin() as s:
        s.add(ServiceProvider(name="input"))
    yield factory
    engine.dispose()


COLUMNS = [
    "ICCID", "iccid", "IMEI", "ServicePlan", "RatePlanCode", "MdnZipCode", "ReasonCode", "EtfWaiver", "SkuNumber",
    "PublicIpRestriction", "RevAccountNumber", "Status", "UpdateStatus", "CustomerRatePlan", "RevCustomerId",
    "ServiceTypeId", "RevProductIdList", "RateList", "Rate", "IntegrationAuthenticationId", "IsIgnoreCurrentStatus",
    "Rev Product Id", "other",
]  # fmt: skip
values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True),
    st.text(max_size=25),
    st.sampled_from(["=CMD|' /C calc'!A0", "+1+1", "-2+3", "@SUM(A1)", "-5", "8914800000000000000", "active"]),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)
rows_strategy = st.lists(
    st.one_of(st.dictionaries(st.sampled_from(COLUMNS), values, max_size=8), st.integers(), st.none()), max_size=12
)


@settings(max_examples=200, suppress_health_check=FIXTURE_OK, deadline=None)
@given(rows=rows_strategy, status=st.one_of(st.sampled_from(["active", "deactive", "inventory"]), st.text(max_size=8)))
def test_validate_rows_never_raises_and_names_row_and_field(
    sessions: Callable[[], Session], rows: list[Any], status: str
) -> None:
    with sessions() as session:
        valid, report = validate_rows(session, rows, status=status, service_provider_id=1, ignore_current_status=False)
    if status.strip().lower() not in TargetStatus.spellings():  # one problem, before any row is read
        assert [(p.row, p.field) for p in report.problems] == [(0, "status")] and not valid and report.rows == 0
        return
    assert report.rows == len(rows)
    for problem in report.problems:
        assert 0 <= problem.row <= len(rows) and problem.field and problem.message
        assert problem.row > 0 or problem.field == "file"
    refused_rows = {p.row for p in report.problems}
    assert len(valid) + len(refused_rows - {0}) == len(rows) or (0 in refused_rows and not valid)


@pytest.mark.parametrize("cell", ["=CMD|' /C calc'!A0", "+cmd", "-1+2", "@SUM(A1:A2)", "\t=1+1", " =1+1"])
def test_formula_cells_are_refused_naming_row_and_column(sessions: Callable[[], Session], cell: str) -> None:
    rows = [
        {"ICCID": _iccid(1), "ReasonCode": "FF"},
        {"ICCID": _iccid(2), "Reason Code": cell},
    ]
    with sessions() as session:
        _valid, report = validate_rows(
            session, rows, status="deactive", service_provider_id=1, ignore_current_status=False
        )
    assert [(p.row, p.field) for p in report.problems] == [(2, "Reason Code")]
    assert "spreadsheet formula" in report.problems[0].message


def test_negative_numbers_are_not_formulas(sessions: Callable[[], Session]) -> None:
    with sessions() as session:
        _valid, report = validate_rows(
            session, [{"ICCID": _iccid(3), "ReasonCode": "-5"}], status="deactive", service_provider_id=1,
            ignore_current_status=False,
        )  # fmt: skip
    assert report.ok, report.problems


def test_too_many_rows_are_refused_before_any_check(sessions: Callable[[], Session]) -> None:
    rows = [{"ICCID": _iccid(n)} for n in range(11)]
    with sessions() as session:
        valid, report = validate_rows(
            session, rows, status="inventory", service_provider_id=1, ignore_current_status=False, max_rows=10
        )
    assert not valid and [(p.row, p.field) for p in report.problems] == [(0, "file")]
    assert "11 rows; the limit per bulk change is 10" in report.problems[0].message
