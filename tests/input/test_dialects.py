"""The files operators actually have, read by the one reader (``engine.submit.open_input``) and checked by
``validate_rows``: Excel's CSV dialects, xlsx workbooks, numbers Excel rewrote, header mistakes, a wrong
target status. Every file here is written by the test."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import openpyxl
import pytest
from sqlalchemy.orm import Session

from bulkchange.domain.identifiers import luhn_check_digit
from bulkchange.engine.submit import SubmitReport, open_input, validate_rows
from bulkchange.input import InputRefused, InputTooLarge, Table
from bulkchange.settings import Settings
from bulkchange.store.db import make_engine, make_session_factory
from bulkchange.store.migrate import upgrade
from bulkchange.store.tables import ServiceProvider

SETTINGS = Settings(database_url="sqlite://")


def _iccid(n: int) -> str:
    body = f"8914800{n:012d}"
    return body + luhn_check_digit(body)


def _imei(n: int) -> str:
    body = f"35987610{n:06d}"
    return body + luhn_check_digit(body)


@pytest.fixture(scope="module")
def sessions(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[], Session]]:
    url = f"sqlite:///{tmp_path_factory.mktemp('dialects')}/dialects.sqlite3"
    upgrade(url)
    engine = make_engine(url)
    factory = make_session_factory(engine)
    with factory.begin() as s:
        s.add(ServiceProvider(name="dialects"))
    yield factory
    engine.dispose()


def _check(
    sessions: Callable[[], Session], data: bytes | Path, status: str = "active", *, name: str | None = None
) -> SubmitReport:
    with open_input(data, settings=SETTINGS, filename=name) as table, sessions() as session:
        _valid, report = validate_rows(
            session, table, status=status, service_provider_id=1, ignore_current_status=False
        )
    return report


def _rows(data: bytes, name: str | None = None) -> list[tuple[int, dict[str, Any]]]:
    with open_input(data, settings=SETTINGS, filename=name) as table:
        return [(row.line, row.cells) for row in table]


def _activation_csv(sep: str, newline: str = "\r\n", *, quoted_header: bool = False) -> str:
    names = ["ICCID", "IMEI", "Service Plan", "MdnZipCode"]
    header = sep.join(f'"{n}"' for n in names) if quoted_header else sep.join(names)
    lines = [header] + [sep.join([_iccid(n), _imei(n), "M2M_4G", "98801"]) for n in range(1, 4)]
    return newline.join(lines) + newline


# ------------------------------------------------------------------------------------------------- dialects


def test_excel_semicolon_csv_with_a_bom_and_crlf_is_read(sessions: Callable[[], Session]) -> None:
    data = ("\ufeff" + _activation_csv(";", quoted_header=True)).encode("utf-8")
    assert _rows(data)[0] == (
        2,
        {"ICCID": _iccid(1), "IMEI": _imei(1), "Service Plan": "M2M_4G", "MdnZipCode": "98801"},
    )
    report = _check(sessions, data)
    assert report.ok and report.rows == 3, report.problems


def test_tab_separated_utf16_text_is_read(sessions: Callable[[], Session]) -> None:
    data = _activation_csv("\t").encode("utf-16")  # Excel's "Unicode text": UTF-16 with a BOM, tabs
    assert [line for line, _cells in _rows(data)] == [2, 3, 4]
    assert _check(sessions, data).ok


def test_excel_sep_line_is_obeyed_and_windows_1252_is_read(sessions: Callable[[], Session]) -> None:
    text = "sep=;\r\n" + _activation_csv(";").replace("M2M_4G", "Gerät-Plan", 1)
    rows = _rows(text.encode("cp1252"))
    assert rows[0][0] == 2 and rows[0][1]["Service Plan"] == "Gerät-Plan"


def test_blank_lines_keep_the_spreadsheet_line_numbers(sessions: Callable[[], Session]) -> None:
    data = f"ICCID\r\n{_iccid(1)}\r\n\r\n,,\r\n{_iccid(2)}X\r\n".encode()
    report = _check(sessions, data, "deactive")
    assert [(p.row, p.field) for p in report.problems] == [(5, "ICCID")]


def test_an_xlsx_workbook_is_read_from_its_first_sheet(sessions: Callable[[], Session], tmp_path: Path) -> None:
    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(["ICCID", "IMEI", "ServicePlan", "MdnZipCode"])
    for n in range(1, 4):
        sheet.append([_iccid(n), int(_imei(n)), "M2M_4G", 98801])  # the IMEI and zip typed as numbers
    book.create_sheet("notes").append(["not", "read"])
    path = tmp_path / "devices.xlsx"
    book.save(path)
    assert _rows(path.read_bytes())[0] == (
        2,
        {"ICCID": _iccid(1), "IMEI": _imei(1), "ServicePlan": "M2M_4G", "MdnZipCode": "98801"},
    )
    report = _check(sessions, path)
    assert report.ok and report.rows == 3, report.problems


def test_an_xlsx_formula_cell_is_refused_by_the_shared_formula_rule(sessions: Callable[[], Session]) -> None:
    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(["ICCID", "ReasonCode"])
    sheet.append([_iccid(1), '=HYPERLINK("http://x","FF")'])
    buffer = io.BytesIO()
    book.save(buffer)
    report = _check(sessions, buffer.getvalue(), "deactive")
    assert [(p.row, p.field) for p in report.problems] == [(2, "ReasonCode")]
    assert "spreadsheet formula" in report.problems[0].message


# ------------------------------------------------------------------------------------ Excel-mangled numbers


def test_an_iccid_excel_rewrote_says_so(sessions: Callable[[], Session]) -> None:
    data = f"ICCID;IMEI;ServicePlan;MdnZipCode\r\n8.91480000000000E+19;{_imei(1)};M2M_4G;98801\r\n".encode()
    report = _check(sessions, data)
    assert [(p.row, p.field) for p in report.problems] == [(2, "ICCID")]
    message = report.problems[0].message
    assert "Excel rewrote this number" in message and "format the column as text" in message
    assert "digits only" not in message


def test_an_imei_that_lost_its_leading_zero_says_so(sessions: Callable[[], Session]) -> None:
    body = "01234567890123"
    imei = body + luhn_check_digit(body)  # a valid IMEI that starts with 0
    data = f"ICCID,IMEI,ServicePlan,MdnZipCode\r\n{_iccid(1)},{int(imei)},M2M_4G,98801\r\n".encode()
    report = _check(sessions, data)
    assert [(p.row, p.field) for p in report.problems] == [(2, "IMEI")]
    assert "lost its leading zero" in report.problems[0].message and imei in report.problems[0].message


def test_a_row_reports_all_its_problems_together(sessions: Callable[[], Session]) -> None:
    data = f"ICCID,IMEI,ServicePlan,MdnZipCode,EtfWaiver\r\n{_iccid(1)},,M2M_4G,,maybe\r\n".encode()
    report = _check(sessions, data)
    assert sorted(p.field for p in report.problems) == ["EtfWaiver", "IMEI", "MdnZipCode"]
    assert {p.row for p in report.problems} == {2}


# --------------------------------------------------------------------------------------------------- header


def test_a_header_typo_is_reported_once_with_a_did_you_mean(sessions: Callable[[], Session]) -> None:
    rows = "".join(f"{_iccid(n)},{_imei(n)},M2M_4G,98801\r\n" for n in range(1, 50))
    report = _check(sessions, ("ICCID,IMEI,ServicePln,MdnZipCode\r\n" + rows).encode())
    assert [(p.row, p.field, p.message) for p in report.problems] == [
        (1, "ServicePln", "unknown column 'ServicePln'; did you mean 'ServicePlan'?")
    ]
    assert report.rows == 0, "refused before any row was read"


def test_a_missing_column_is_reported_once_naming_what_the_status_needs(sessions: Callable[[], Session]) -> None:
    rows = "".join(f"{_iccid(n)}\r\n" for n in range(1, 50))
    report = _check(sessions, ("ICCID\r\n" + rows).encode(), "active")
    needs = "activations need ICCID, ServicePlan and MdnZipCode, and IMEI or SkuNumber"
    assert [(p.row, p.field) for p in report.problems] == [
        (1, "ServicePlan"),
        (1, "MdnZipCode"),
        (1, "IMEI or SkuNumber"),
    ]
    assert all(needs in p.message for p in report.problems)
    # The same file is complete for a status that needs only the ICCID.
    assert _check(sessions, ("ICCID\r\n" + rows).encode(), "suspend").ok


def test_a_per_row_status_column_leaves_the_needs_to_each_row(sessions: Callable[[], Session]) -> None:
    data = f"ICCID,Status\r\n{_iccid(1)},suspend\r\n{_iccid(2)},active\r\n".encode()
    report = _check(sessions, data, "active")
    assert {(p.row, p.field) for p in report.problems} == {(3, "ServicePlan"), (3, "MdnZipCode"), (3, "IMEI")}


def test_a_file_without_a_header_says_so(sessions: Callable[[], Session]) -> None:
    report = _check(sessions, f"{_iccid(1)},{_imei(1)},M2M_4G,98801\r\n".encode())
    assert [(p.row, p.field) for p in report.problems] == [(1, "header")]
    assert report.problems[0].message.startswith("no header row: line 1 holds data")


def test_an_unknown_json_key_is_reported_once(sessions: Callable[[], Session]) -> None:
    data = b"[" + b",".join(f'{{"ICCID": "{_iccid(n)}", "Reason": "FF"}}'.encode() for n in range(1, 4)) + b"]"
    report = _check(sessions, data, "deactive")
    assert [(p.row, p.field, p.message) for p in report.problems] == [
        (1, "Reason", "unknown column 'Reason'; did you mean 'ReasonCode'?")
    ]


# --------------------------------------------------------------------------------------------------- status


def test_a_wrong_status_is_one_problem_listing_every_spelling(sessions: Callable[[], Session]) -> None:
    rows = "".join(f"{_iccid(n)},{_imei(n)},M2M_4G,98801\r\n" for n in range(1, 50))
    report = _check(sessions, ("ICCID,IMEI,ServicePlan,MdnZipCode\r\n" + rows).encode(), "activate")
    assert [(p.row, p.field) for p in report.problems] == [(0, "status")]
    message = report.problems[0].message
    assert "did you mean 'active'" in message
    for spelling in ("inventory", "pending activation", "deactivated", "activation ready", "suspended", "'-'"):
        assert spelling in message


# ------------------------------------------------------------------------------------------ stream, limits


class _FailingAfter(io.RawIOBase):
    """A stream that gives ``data`` in small reads, then fails: whoever reads past it has read too far."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        chunk = self._data.read(min(len(buffer), 64))
        if not chunk:
            raise AssertionError("read past the rows the test consumed: the reader is not lazy")
        buffer[: len(chunk)] = chunk
        return len(chunk)


@pytest.mark.parametrize("kind", ["csv", "json"])
def test_the_reader_is_a_generator_reading_only_what_is_consumed(kind: str) -> None:
    if kind == "csv":
        data = "ICCID\r\n" + "".join(f"{_iccid(n)}\r\n" for n in range(1, 200))
    else:
        data = "[" + ",".join(f'{{"ICCID": "{_iccid(n)}"}}' for n in range(1, 200))  # no end: never reached
    table = open_input(_FailingAfter(data.encode()), settings=SETTINGS)  # type: ignore[arg-type]
    rows = iter(table)
    first = [next(rows) for _ in range(5)]
    assert [r.cells["ICCID"] for r in first] == [_iccid(n) for n in range(1, 6)]
    table.close()


def test_the_limits_come_from_the_settings(tmp_path: Path) -> None:
    data = ("ICCID\r\n" + "".join(f"{_iccid(n)}\r\n" for n in range(1, 12))).encode()
    small = Settings(database_url="sqlite://", max_upload_bytes=100, max_rows_per_bulk_change=10)
    with pytest.raises(InputTooLarge, match="BULKCHANGE_MAX_UPLOAD_BYTES"):
        open_input(data, settings=small)
    few = Settings(database_url="sqlite://", max_rows_per_bulk_change=10)
    table: Table = open_input(data, settings=few)
    with pytest.raises(InputTooLarge, match=r"more than 10 rows.*BULKCHANGE_MAX_ROWS_PER_BULK_CHANGE"):
        list(table)
    assert len(list(open_input(data, settings=Settings(database_url="sqlite://", max_rows_per_bulk_change=11)))) == 11


def test_an_old_xls_workbook_is_refused_with_what_to_do() -> None:
    with pytest.raises(InputRefused, match=r"\.xls.*save it as \.xlsx or CSV"):
        open_input(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 100, settings=SETTINGS)
