"""The one input reader over real HTTP: REST uploads and JSON bodies, and the dashboard's preview, refuse and
accept the same files with the same words and the same line numbers (header = line 1)."""

from __future__ import annotations

import base64
import html
import io
from typing import Any

import openpyxl

from .conftest import Api, activation_row

HEADER = ["ICCID", "IMEI", "ServicePlan", "MdnZipCode"]


def _csv(rows: list[dict[str, Any]], *, sep: str = ",", header: list[str] | None = None, bom: bool = False) -> bytes:
    names = header or HEADER
    lines = [sep.join(names)] + [sep.join(str(r[h]) for h in HEADER) for r in rows]
    return (("\ufeff" if bom else "") + "\r\n".join(lines) + "\r\n").encode("utf-8")


def _xlsx(rows: list[dict[str, Any]]) -> bytes:
    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(HEADER)
    for r in rows:
        sheet.append([r[h] for h in HEADER])
    buffer = io.BytesIO()
    book.save(buffer)
    return buffer.getvalue()


def _upload(api: Api, name: str, data: bytes, *, status: str = "active", **params: str) -> Any:
    form = {"service_provider_id": str(api.provider_id), "status": status}
    return api.http.post("/api/v1/bulk-changes/upload", data=form, files={"file": (name, data)}, params=params or None)


def _preview_page(api: Api, name: str, data: bytes, *, status: str = "active") -> Any:
    form = {"service_provider_id": str(api.provider_id), "status": status}
    return api.http.post("/ui/upload", data=form, files={"file": (name, data)})


def _problems(r: Any) -> list[tuple[int, str]]:
    return [(p["row"], p["field"]) for p in r.json()["errors"]]


# ---------------------------------------------------------------------------------------------------- REST


def test_excel_semicolon_csv_and_xlsx_uploads_are_created(idle_api: Api) -> None:
    api = idle_api
    semicolon = _upload(api, "excel.csv", _csv([activation_row() for _ in range(3)], sep=";", bom=True))
    assert semicolon.status_code == 201, semicolon.text
    assert semicolon.json()["total"] == 3
    workbook = _upload(api, "devices.xlsx", _xlsx([activation_row() for _ in range(2)]))
    assert workbook.status_code == 201, workbook.text
    assert workbook.json()["total"] == 2


def test_header_problems_are_reported_once_on_line_1(idle_api: Api) -> None:
    api = idle_api
    rows = [activation_row() for _ in range(20)]
    typo = _upload(api, "typo.csv", _csv(rows, header=["ICCID", "IMEI", "ServicePln", "MdnZipCode"]))
    assert typo.status_code == 422
    assert _problems(typo) == [(1, "ServicePln")]
    assert "did you mean 'ServicePlan'?" in typo.json()["errors"][0]["message"]
    missing = _upload(api, "iccids.csv", ("ICCID\r\n" + "".join(r["ICCID"] + "\r\n" for r in rows)).encode())
    assert missing.status_code == 422
    assert _problems(missing) == [(1, "ServicePlan"), (1, "MdnZipCode"), (1, "IMEI or SkuNumber")]
    no_header = _upload(api, "data.csv", b"89148000000800784259,990013907835578,M2M_4G,98801\r\n")
    assert no_header.status_code == 422 and _problems(no_header) == [(1, "header")]


def test_a_wrong_status_is_one_problem_naming_every_accepted_spelling(idle_api: Api) -> None:
    api = idle_api
    r = api.create([activation_row() for _ in range(30)], status="activate")
    assert r.status_code == 422
    assert _problems(r) == [(0, "status")]
    message = r.json()["errors"][0]["message"]
    assert "did you mean 'active'" in message and "deactivated" in message and "'_' or '-' for a space" in message
    upload = _upload(api, "d.csv", _csv([activation_row()]), status="activate")
    assert upload.status_code == 422 and _problems(upload) == [(0, "status")]


def test_row_numbers_are_spreadsheet_lines_and_excel_numbers_are_named(idle_api: Api) -> None:
    api = idle_api
    rows = [activation_row(), activation_row(ICCID="8.91480000000000E+19"), activation_row(IMEI="")]
    r = _upload(api, "d.csv", _csv(rows))
    assert r.status_code == 422
    by_line = {(p["row"], p["field"]): p["message"] for p in r.json()["errors"]}
    assert "Excel rewrote this number" in by_line[(3, "ICCID")]
    assert "IMEI or SkuNumber" in by_line[(4, "IMEI")]
    assert set(by_line) == {(3, "ICCID"), (4, "IMEI")}


def test_the_limits_are_the_settings_for_uploads_and_json_rows(idle_api: Api) -> None:
    api = idle_api
    data = _csv([activation_row() for _ in range(5)])
    api.rt.settings.max_upload_bytes = len(data) - 1
    too_big = _upload(api, "d.csv", data, dry_run="true")
    assert too_big.status_code == 413 and "BULKCHANGE_MAX_UPLOAD_BYTES" in too_big.json()["detail"]
    api.rt.settings.max_upload_bytes = len(data)
    assert _upload(api, "d.csv", data, dry_run="true").status_code == 200
    api.rt.settings.max_rows_per_bulk_change = 4
    too_many = _upload(api, "d.csv", data, dry_run="true")
    assert too_many.status_code == 413 and "BULKCHANGE_MAX_ROWS_PER_BULK_CHANGE" in too_many.json()["detail"]
    body = api.create([activation_row() for _ in range(5)], dry_run="true")
    assert body.status_code == 413 and "more than 4 rows" in body.json()["detail"]
    api.rt.settings.max_rows_per_bulk_change = 10_001
    many = api.create([{"ICCID": f"8914800{n:013d}"} for n in range(10_001)], status="inventory", dry_run="true")
    assert many.status_code == 200, "the JSON body is limited by the setting, not by a fixed 10,000"
    assert many.json()["rows"] == 10_001


# ----------------------------------------------------------------------------------------------- dashboard


def test_the_dashboard_preview_reads_what_rest_reads(idle_api: Api) -> None:
    api = idle_api
    ok = _preview_page(api, "excel.csv", _csv([activation_row() for _ in range(2)], sep=";", bom=True))
    assert ok.status_code == 200 and "Every row is valid" in ok.text
    workbook = _preview_page(api, "devices.xlsx", _xlsx([activation_row()]))
    assert workbook.status_code == 200 and "Every row is valid" in workbook.text
    typo = _preview_page(
        api, "typo.csv", _csv([activation_row()], header=["ICCID", "IMEI", "ServicePln", "MdnZipCode"])
    )
    text = html.unescape(typo.text)
    assert "Line 1, ServicePln: unknown column 'ServicePln'; did you mean 'ServicePlan'?" in text
    wrong = html.unescape(_preview_page(api, "d.csv", _csv([activation_row()]), status="activate").text)
    assert "status: unknown status 'activate' (did you mean 'active'?)" in wrong
    mangled = _preview_page(api, "d.csv", _csv([activation_row(), activation_row(ICCID="8.91480000000000E+19")]))
    assert "<td>3</td>" in mangled.text and "Excel rewrote this number" in mangled.text
    unreadable = _preview_page(api, "old.xls", b"\xd0\xcf\x11\xe0" + b"\x00" * 64)
    assert unreadable.status_code == 400 and "save it as .xlsx or CSV" in unreadable.text


def test_the_dashboard_confirms_an_xlsx_upload(idle_api: Api) -> None:
    api = idle_api
    data = _xlsx([activation_row() for _ in range(2)])
    page = _preview_page(api, "devices.xlsx", data)
    assert "Every row is valid" in page.text
    form = {
        "payload": base64.b64encode(data).decode(),
        "filename": "devices.xlsx",
        "service_provider_id": str(api.provider_id),
        "status": "active",
        "key": "xlsx-1",
    }
    r = api.http.post("/ui/confirm", data=form, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/ui/bulk-changes/")
    bulk_id = int(r.headers["location"].rsplit("/", 1)[1])
    assert api.http.get(f"/api/v1/bulk-changes/{bulk_id}").json()["total"] == 2


def test_the_dashboard_offers_a_template_per_status(idle_api: Api) -> None:
    api = idle_api
    page = api.http.get("/ui/upload").text
    assert 'href="/ui/template.csv?status=active"' in page and ".xlsx" in page
    r = api.http.get("/ui/template.csv", params={"status": "active"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    assert 'filename="bulkchange-active.csv"' in r.headers["content-disposition"]
    header, example = r.text.splitlines()
    assert header == "ICCID,IMEI,ServicePlan,MdnZipCode" and len(example.split(",")) == 4
    assert api.http.get("/ui/template.csv", params={"status": "suspend"}).text.splitlines()[0] == "ICCID"
    assert api.http.get("/ui/template.csv", params={"status": "activate"}).status_code == 400
    # The template, filled in as it is, is a file the dashboard accepts for its status.
    assert "Every row is valid" in _preview_page(api, "template.csv", r.content).text
