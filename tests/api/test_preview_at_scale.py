"""The dashboard's preview of a 10,000-row file over real HTTP: problems first, counted by kind, only the
rows with problems listed (bounded), the rows without problems counted instead of drawn, and the problem
report downloadable as CSV with every problem."""

from __future__ import annotations

import csv
import html
import io
import re

from bulkchange.domain.identifiers import luhn_check_digit

from .conftest import Api

N = 10_000


def _file() -> bytes:
    lines = ["ICCID"]
    for n in range(N):
        body = f"891480{n:013d}"
        iccid = body + luhn_check_digit(body)
        if n % 1000 == 7:
            iccid = "8.91480000000000E+19"  # Excel's doing: one problem of kind ICCID per 1,000 rows
        lines.append(iccid)
    return ("\r\n".join(lines) + "\r\n").encode()


def test_a_10000_row_preview_shows_problems_first_and_never_10000_ok_rows(idle_api: Api) -> None:
    api = idle_api
    data = _file()
    form = {"service_provider_id": str(api.provider_id), "status": "inventory"}
    r = api.http.post("/ui/upload", data=form, files={"file": ("big.csv", data)}, timeout=120)
    assert r.status_code == 200, r.text[:500]
    page = html.unescape(r.text)
    # Ten mangled ICCIDs: each named as Excel's doing, and the nine after the first are duplicates of it.
    assert "19 problem(s): nothing can be created" in page
    kinds = re.search(r'<ul id="problem-kinds".*?</ul>', page, re.S)
    assert kinds and "ICCID</span>: 19" in kinds.group(0)
    assert page.index('id="problem-kinds"') < page.index('id="preview-problems"')
    problems_table = re.search(r'<table class="data" id="preview-problems">.*?</table>', page, re.S)
    assert problems_table and problems_table.group(0).count("<tr") == 1 + 10
    assert "Excel rewrote this number" in problems_table.group(0)
    assert page.count("<tr") < 100, "the 9,990 rows without problems are counted, not drawn"
    assert "9,990 row(s) without problem or warning" in page

    token = re.search(r'name="csrf_token" value="([^"]+)"', r.text)
    payload = re.search(r'name="payload" value="([^"]+)"', r.text)
    assert token and payload
    report = api.http.post(
        "/ui/preview/problems.csv",
        data={**form, "payload": payload.group(1), "filename": "big.csv", "csrf_token": token.group(1)},
        timeout=120,  # the 10,000 rows are read again: as long as the upload above on a loaded machine
    )
    assert report.status_code == 200 and report.headers["content-type"].startswith("text/csv")
    assert 'filename="big-problems.csv"' in report.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(report.text)))
    assert len(rows) == 19
    assert sorted({int(row["Line"]) for row in rows}) == [n + 2 for n in range(N) if n % 1000 == 7]
    assert {row["Column"] for row in rows} == {"ICCID"}
