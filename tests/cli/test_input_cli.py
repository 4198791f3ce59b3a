"""``bulkchange submit`` with the files operators have: Excel's CSV dialects and workbooks accepted, header
mistakes and a wrong --status refused once, row numbers as the spreadsheet shows them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import openpyxl
import pytest
from typer.testing import CliRunner

from bulkchange.cli.main import app
from bulkchange.domain.identifiers import luhn_check_digit


def _iccid(n: int) -> str:
    body = f"89148000{n:011d}"
    return body + luhn_check_digit(body)


def _imei(n: int) -> str:
    body = f"35987610{n:06d}"
    return body + luhn_check_digit(body)


@pytest.fixture
def provider(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("BULKCHANGE_DATABASE_URL", f"sqlite:///{tmp_path}/input.sqlite3")
    runner = CliRunner()
    assert runner.invoke(app, ["db", "upgrade"]).exit_code == 0
    added = runner.invoke(
        app,
        [
            *("providers", "add", "--name", "acme", "--base-url", "http://127.0.0.1:9"),
            *("--client-id", "c", "--client-secret", "s", "--username", "u", "--password", "p"),
            *("--account", "0000123456-00001", "--json"),
        ],
    )
    assert added.exit_code == 0, added.output
    return str(json.loads(added.output.strip().splitlines()[-1])["service_provider_id"])


def _submit(provider: str, path: Path, status: str = "active", *extra: str) -> tuple[int, Any]:
    args = ["submit", str(path), "--status", status, "--service-provider", provider, *extra]
    result = CliRunner().invoke(app, args, env={"COLUMNS": "400"})  # a wide terminal: the report's table unwrapped
    if "--json" not in extra:
        return result.exit_code, result.output
    return result.exit_code, json.loads(result.output.strip().splitlines()[-1])


def _activations(sep: str, first: int, n: int = 3) -> str:
    lines = [sep.join(["ICCID", "IMEI", '"ServicePlan"', "MdnZipCode"])]
    lines += [sep.join([_iccid(k), _imei(k), "M2M_4G", "98801"]) for k in range(first, first + n)]
    return "\ufeff" + "\r\n".join(lines) + "\r\n"


def test_excel_semicolon_and_tab_csv_and_xlsx_are_submitted(provider: str, tmp_path: Path) -> None:
    semicolon = tmp_path / "excel.csv"
    semicolon.write_text(_activations(";", 1), encoding="utf-8", newline="")
    code, out = _submit(provider, semicolon, "active", "--json")
    assert code == 0 and out["devices"] == 3, out
    tab = tmp_path / "unicode.txt"
    tab.write_bytes(_activations("\t", 10).lstrip("\ufeff").encode("utf-16"))
    code, out = _submit(provider, tab, "active", "--json")
    assert code == 0 and out["devices"] == 3, out
    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(["ICCID", "IMEI", "ServicePlan", "MdnZipCode"])
    sheet.append([_iccid(20), _imei(20), "M2M_4G", 98801])
    workbook = tmp_path / "devices.xlsx"
    book.save(workbook)
    code, out = _submit(provider, workbook, "active", "--json")
    assert code == 0 and out["devices"] == 1, out


def test_header_mistakes_are_reported_once_before_any_row(provider: str, tmp_path: Path) -> None:
    typo = tmp_path / "typo.csv"
    typo.write_text(_activations(",", 1).replace("ServicePlan", "ServicePln"), encoding="utf-8", newline="")
    code, out = _submit(provider, typo, "active", "--json")
    assert code == 1
    assert [(p["row"], p["field"], p["message"]) for p in out["problems"]] == [
        (1, "ServicePln", "unknown column 'ServicePln'; did you mean 'ServicePlan'?")
    ]
    only_iccids = tmp_path / "iccids.csv"
    only_iccids.write_text("ICCID\n" + "".join(f"{_iccid(k)}\n" for k in range(1, 40)), encoding="utf-8")
    code, out = _submit(provider, only_iccids, "active", "--json")
    assert code == 1 and len(out["problems"]) == 3 and {p["row"] for p in out["problems"]} == {1}
    assert "activations need ICCID, ServicePlan and MdnZipCode, and IMEI or SkuNumber" in out["problems"][0]["message"]
    code, text = _submit(provider, typo, "active")
    assert code == 1 and "unknown column 'ServicePln'; did you mean 'ServicePlan'?" in text


def test_a_wrong_status_is_one_error_listing_the_accepted_spellings(provider: str, tmp_path: Path) -> None:
    rows = tmp_path / "rows.csv"
    rows.write_text(_activations(",", 1, n=25), encoding="utf-8", newline="")
    code, out = _submit(provider, rows, "activate", "--json")
    assert code == 1 and out["rows"] == 0
    assert [(p["row"], p["field"]) for p in out["problems"]] == [(0, "status")]
    code, text = _submit(provider, rows, "activate")
    assert code == 1 and text.count("unknown status 'activate' (did you mean 'active'?)") == 1
    for spelling in ("inventory", "pending activation", "deactivated", "activation ready", "suspended"):
        assert spelling in text


def test_problems_name_spreadsheet_lines_and_what_excel_did(provider: str, tmp_path: Path) -> None:
    rows = tmp_path / "rows.csv"
    zero = "0" + "1234567890123"
    zero += luhn_check_digit(zero)  # a valid IMEI starting with 0, which Excel stores as a 14-digit number
    rows.write_text(
        "ICCID,IMEI,ServicePlan,MdnZipCode\r\n"
        f"{_iccid(1)},{_imei(1)},M2M_4G,98801\r\n"
        f"8.91480000000000E+19,{_imei(2)},M2M_4G,98801\r\n"
        "\r\n"
        f"{_iccid(3)},{zero.lstrip('0')},M2M_4G,98801\r\n",
        encoding="utf-8",
        newline="",
    )
    code, out = _submit(provider, rows, "active", "--json")
    assert code == 1
    by_line = {(p["row"], p["field"]): p["message"] for p in out["problems"]}
    assert set(by_line) == {(3, "ICCID"), (5, "IMEI")}
    assert by_line[(3, "ICCID")].startswith("Excel rewrote this number (8.91480000000000E+19)")
    assert "lost its leading zero" in by_line[(5, "IMEI")]


def test_a_file_that_cannot_be_read_says_why(provider: str, tmp_path: Path) -> None:
    old = tmp_path / "old.xls"
    old.write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 64)
    code, text = _submit(provider, old)
    assert code == 2 and "save it as .xlsx or CSV" in text
