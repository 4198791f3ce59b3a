"""The dashboard at 10,000 rows, in Debian's chromium: the preview of a 10,000-row file (problems first,
counted by kind, an "only problems" view, the problem report downloaded, the rows without problems counted
and never drawn); a bulk change of 10,000 device changes one page at a time, search, numbered pages, counts
that filter, live updates that redraw only the row that changed (focus, typed text and scroll position
kept), an expired session sent to the login page, and the list's filters. Screenshots are saved under each
test's tmp_path.

The 10,000 changes are inserted directly (one executemany) into the database of an application served
without a worker, so nothing moves unless a test writes it, as the engine would.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from bulkchange.domain.identifiers import luhn_check_digit
from bulkchange.store.tables import ServiceProvider, utcnow

from ..conftest import Api, make_api
from .conftest import Inserted, assert_accessible, iccid_for, insert_bulk_change, logged_in, set_change

N = 10_000


def _status(i: int) -> str:
    if i % 50 == 7:
        return "ERROR"
    if i % 10 == 3:
        return "PROCESSED"
    return "READY"


@dataclass
class Big:
    api: Api
    bulk: Inserted

    @property
    def url(self) -> str:
        return f"{self.api.base_url}/ui/bulk-changes/{self.bulk.bulk_id}"

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = self.api.http.get(f"/api/v1/bulk-changes/{self.bulk.bulk_id}").json()["counts"]
        return counts


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Big]:
    for api in make_api(tmp_path_factory.mktemp("big"), with_worker=False):
        changes = [
            {
                "iccid": iccid_for(i),
                "status": _status(i),
                "step_index": 0 if _status(i) == "READY" else 1,
                "msisdn": f"1555{i:07d}" if _status(i) == "PROCESSED" else None,
                "status_details": {"ERROR": "DeviceNotFound", "PROCESSED": "Activated"}.get(_status(i)),
            }
            for i in range(N)
        ]
        yield Big(api, insert_bulk_change(api, changes, file_name="ten-thousand.csv"))


def test_the_detail_page_shows_one_page_and_search_finds_a_device(big: Big, browser: Browser, tmp_path: Path) -> None:
    with logged_in(browser, big.api) as page:
        page.goto(big.url)
        rows = page.locator("#live-rows tr")
        expect(rows).to_have_count(100)
        expect(page.locator("#part-pager .range")).to_have_text("Device changes 1–100 of 10,000")
        expect(page.get_by_label("Page", exact=True)).to_have_value("1")
        expect(page.locator("#part-pager")).to_contain_text("of 100")
        expect(rows.first.locator("td").first).to_have_text(big.bulk.iccids[0])
        expect(page.locator("#part-counts")).to_contain_text("All 10,000")
        page.screenshot(path=str(tmp_path / "detail-10000.png"), full_page=True)
        assert_accessible(page, "a bulk change of 10,000 device changes")

        wanted = big.bulk.iccids[4321]
        search = page.get_by_label("Search ICCID or MSISDN")
        search.fill(wanted)
        search.press("Enter")
        page.wait_for_url(re.compile(rf"[?&]q={wanted}"))
        expect(rows).to_have_count(1)
        expect(rows.first).to_contain_text(wanted)
        expect(page.locator("#part-pager .range")).to_have_text("Device changes 1–1 of 1")
        expect(page.get_by_label("Search ICCID or MSISDN")).to_have_value(wanted)
        page.screenshot(path=str(tmp_path / "detail-search.png"), full_page=True)

        # An MSISDN as an operator pastes it (index 4323 is PROCESSED: it has one).
        page.get_by_label("Search ICCID or MSISDN").fill("+1 555 000-4323")
        page.get_by_role("button", name="Filter").click()
        expect(rows).to_have_count(1)
        expect(rows.first).to_contain_text(big.bulk.iccids[4323])


def test_paging_to_the_last_page_and_by_number(big: Big, browser: Browser, tmp_path: Path) -> None:
    with logged_in(browser, big.api) as page:
        page.goto(big.url)
        rows = page.locator("#live-rows tr")
        pager = page.locator("#part-pager .range")
        page.get_by_role("link", name="Last »").click()
        expect(pager).to_have_text("Device changes 9,901–10,000 of 10,000")
        expect(rows).to_have_count(100)
        expect(rows.first.locator("td").first).to_have_text(big.bulk.iccids[9900])
        expect(rows.last.locator("td").first).to_have_text(big.bulk.iccids[9999])
        expect(page.locator("#part-pager .disabled", has_text="Next")).to_be_visible()
        page.screenshot(path=str(tmp_path / "detail-last-page.png"), full_page=True)

        jump = page.get_by_label("Page", exact=True)
        jump.fill("37")
        jump.press("Enter")
        expect(pager).to_have_text("Device changes 3,601–3,700 of 10,000")
        expect(rows.first.locator("td").first).to_have_text(big.bulk.iccids[3600])
        page.get_by_role("link", name="‹ Previous").click()
        expect(pager).to_have_text("Device changes 3,501–3,600 of 10,000")
        page.get_by_role("link", name="« First").click()
        expect(pager).to_have_text("Device changes 1–100 of 10,000")

        page.goto(f"{big.url}?page=999")  # past the end: the last page
        expect(pager).to_have_text("Device changes 9,901–10,000 of 10,000")


def test_a_count_filters_on_click_and_the_step_filters(big: Big, browser: Browser, tmp_path: Path) -> None:
    counts = big.counts()
    with logged_in(browser, big.api) as page:
        page.goto(big.url)
        error_chip = page.locator('#part-counts a[data-status="ERROR"]')
        expect(error_chip).to_contain_text(f"ERROR {counts['ERROR']:,}")
        error_chip.click()
        page.wait_for_url(re.compile(r"[?&]status=ERROR"))
        expect(page.locator("#part-pager .range")).to_have_text(f"Device changes 1–100 of {counts['ERROR']:,}")
        statuses = page.locator("#live-rows tr").evaluate_all("rows => rows.map(r => r.dataset.status)")
        assert set(statuses) == {"ERROR"} and len(statuses) == 100
        expect(page.locator('#part-counts a[aria-current="true"]')).to_contain_text("ERROR")
        expect(page.get_by_label("Status", exact=True)).to_have_value("ERROR")
        page.screenshot(path=str(tmp_path / "detail-errors.png"), full_page=True)

        page.get_by_label("Status", exact=True).select_option("")
        page.get_by_label("Current step").select_option("ADD")
        page.get_by_role("button", name="Filter").click()
        expect(page.locator("#part-pager .range")).to_contain_text(f"of {counts['READY']:,}")
        expect(page.locator("#live-rows tr .step.current").first).to_contain_text("ADD")

        page.get_by_role("link", name="Clear filters").click()
        expect(page.locator("#part-pager .range")).to_have_text("Device changes 1–100 of 10,000")


VIEW = """() => {
    const rows = [...document.querySelectorAll('#live-rows tr')];
    const inView = rows.find(tr => tr.getBoundingClientRect().top >= 0);
    return {
        active: document.activeElement.id,
        value: document.activeElement.value,
        caret: document.activeElement.selectionStart,
        y: window.scrollY,
        row: inView ? inView.dataset.key : null,
        top: inView ? inView.getBoundingClientRect().top : null,
        untouched: rows.filter(tr => tr.untouched).length,
        rows: rows.length,
    };
}"""


def test_a_live_update_redraws_only_the_changed_row_and_keeps_focus(big: Big, browser: Browser, tmp_path: Path) -> None:
    index = next(i for i in range(100) if _status(i) == "READY")
    change_id = big.bulk.change_ids[index]
    processed_before = big.counts()["PROCESSED"]
    with logged_in(browser, big.api) as page:
        page.goto(big.url)
        row = page.locator(f'#live-rows tr[data-key="{change_id}"]')
        expect(row).to_have_attribute("data-status", "READY")
        page.evaluate("() => document.querySelectorAll('#live-rows tr').forEach(tr => { tr.untouched = true; })")
        search = page.get_by_label("Search ICCID or MSISDN")
        search.click()
        page.keyboard.type("8914")
        page.keyboard.press("ArrowLeft")
        page.evaluate("() => window.scrollTo(0, 700)")
        # What the operator looks at: the row at the top of the window, and where it is on the screen.
        before = page.evaluate(VIEW)
        assert before["y"] > 0 and before["row"]

        set_change(
            big.api,
            change_id,
            status="PROCESSED",
            step_index=1,
            msisdn="15559990001",
            status_details="Activated",
            processed_date=utcnow(),
        )

        expect(row).to_have_attribute("data-status", "PROCESSED")
        expect(row).to_contain_text("15559990001")
        expect(page.locator('#part-counts a[data-status="PROCESSED"]')).to_contain_text(f"{processed_before + 1:,}")
        after = page.evaluate(VIEW)
        on_screen = page.evaluate(
            f"() => document.querySelector('#live-rows tr[data-key=\"{before['row']}\"]').getBoundingClientRect().top"
        )
        page.screenshot(path=str(tmp_path / "detail-live-update.png"))
        assert (after["active"], after["value"], after["caret"]) == ("search", "8914", 3), "focus and typing kept"
        assert abs(on_screen - before["top"]) < 1, "the rows in view did not move on the screen"
        assert (after["untouched"], after["rows"]) == (99, 100), "only the changed row was redrawn"


def test_an_expired_session_sends_the_page_to_the_login_form(big: Big, browser: Browser, tmp_path: Path) -> None:
    with logged_in(browser, big.api) as page:
        page.goto(f"{big.url}?status=READY&page=2")
        expect(page.locator("#part-pager .range")).to_contain_text("101–200")
        page.context.clear_cookies()  # the session cookie expired

        page.wait_for_url(re.compile(r"/ui/login\?next="))
        expect(page.get_by_role("heading", name="Log in")).to_be_visible()
        expect(page.locator("header.top")).to_have_count(1)
        expect(page.locator("#live")).to_have_count(0)
        page.screenshot(path=str(tmp_path / "session-expired.png"))

        page.get_by_label("API key").fill(big.api.key)
        page.get_by_role("button", name="Log in").click()
        page.wait_for_url(re.compile(rf"/ui/bulk-changes/{big.bulk.bulk_id}\?status=READY&page=2$"))
        expect(page.locator("#part-pager .range")).to_contain_text("101–200")


def _list_fixture(big: Big) -> tuple[int, list[dict[str, object]]]:
    """60 small bulk changes of two providers, with the attributes the list filters on."""
    with big.api.rt.session_factory() as session:
        other = ServiceProvider(name="beta", tenant_id=1)
        session.add(other)
        session.commit()
        other_id = other.id
    made: list[dict[str, object]] = []
    for k in range(60):
        attrs: dict[str, object] = {
            "provider": other_id if k % 6 == 0 else big.api.provider_id,
            "status": "PROCESSED" if k % 3 == 0 else "PROCESSING",
            "target": "deactive" if k % 4 == 0 else "active",
            "file": f"LISTTEST-Q3-{k:02d}.xlsx" if k % 5 == 0 else f"listtest-{k:02d}.csv",
            "by": "alice" if k % 3 else "bob",
            "created": datetime(2026, 1, 1 + k % 28, 12, 0),
        }
        inserted = insert_bulk_change(
            big.api,
            [{"iccid": iccid_for(k, prefix="891481"), "target_status": attrs["target"]}],
            service_provider_id=int(str(attrs["provider"])),
            status=str(attrs["status"]),
            file_name=str(attrs["file"]),
            created_by=str(attrs["by"]),
            created_date=attrs["created"],  # type: ignore[arg-type]
        )
        attrs["id"] = inserted.bulk_id
        made.append(attrs)
    return other_id, made


def _shown(page: Page) -> list[int]:
    keys: list[str] = page.locator("#live-rows tr").evaluate_all("rows => rows.map(r => r.dataset.key)")
    return [int(k) for k in keys]


def test_the_list_filters_and_pages_on_the_server(big: Big, browser: Browser, tmp_path: Path) -> None:
    _other, made = _list_fixture(big)
    newest_first = sorted(made, key=lambda a: -int(str(a["id"])))
    with logged_in(browser, big.api) as page:
        page.goto(f"{big.api.base_url}/ui/?file=listtest")
        expect(page.locator("#part-pager .range")).to_have_text("Bulk changes 1–50 of 60")
        assert _shown(page) == [a["id"] for a in newest_first[:50]]
        page.get_by_role("link", name="Next ›").click()
        expect(page.locator("#part-pager .range")).to_have_text("Bulk changes 51–60 of 60")
        assert _shown(page) == [a["id"] for a in newest_first[50:]]

        page.get_by_label("File name").fill("q3")
        page.get_by_label("Status", exact=True).select_option("PROCESSED")
        page.get_by_role("button", name="Filter").click()
        expected = [a["id"] for a in newest_first if "Q3" in str(a["file"]) and a["status"] == "PROCESSED"]
        expect(page.locator("#live-rows tr")).to_have_count(len(expected))
        assert _shown(page) == expected and expected

        page.get_by_role("link", name="Clear filters").first.click()
        page.get_by_label("File name").fill("LISTTEST")
        page.get_by_label("Target status").select_option("deactive")
        page.get_by_label("Submitted by").fill("ALICE")
        page.get_by_label("Service provider").select_option(str(big.api.provider_id))
        page.get_by_label("Created from").fill("2026-01-05")
        page.get_by_label("Created until").fill("2026-01-20")
        page.get_by_role("button", name="Filter").click()
        expected = [
            a["id"]
            for a in newest_first
            if a["target"] == "deactive"
            and a["by"] == "alice"
            and a["provider"] == big.api.provider_id
            and date(2026, 1, 5) <= a["created"].date() <= date(2026, 1, 20)  # type: ignore[attr-defined]
        ]
        expect(page.locator("#live-rows tr")).to_have_count(len(expected))
        assert _shown(page) == expected and expected
        expect(page.locator("#live-rows")).to_contain_text("deactive")
        page.screenshot(path=str(tmp_path / "list-filtered.png"), full_page=True)
        assert_accessible(page, "the filtered list")

        page.get_by_label("File name").fill("no such file")
        page.get_by_label("File name").press("Enter")
        expect(page.locator("#live-empty")).to_have_text("No bulk change matches the filters. Clear filters")
        expect(page.locator("#bulk-changes")).to_be_hidden()
        assert_accessible(page, "the list, nothing matching")


EXCEL = "8.91480000000000E+19"


def _preview_file(path: Path) -> dict[str, int]:
    """A 10,000-row inventory file with three kinds of problem; returns how many of each kind."""
    lines = ["ICCID"]
    kinds = {"excel": 0, "luhn": 0}
    for n in range(N):
        iccid = iccid_for(n, prefix="891482")  # devices the bulk change above does not hold
        if n % 1000 == 7:
            iccid, kinds["excel"] = EXCEL, kinds["excel"] + 1  # Excel's doing; the 2nd onwards are duplicates too
        elif n % 2000 == 11:
            body = iccid[:-1]
            iccid, kinds["luhn"] = body + str((int(luhn_check_digit(body)) + 1) % 10), kinds["luhn"] + 1
        lines.append(iccid)
    path.write_text("\r\n".join(lines) + "\r\n", encoding="utf-8")
    return {**kinds, "duplicate": kinds["excel"] - 1}


def test_a_10000_row_preview_shows_problems_first_and_draws_no_ok_rows(
    big: Big, browser: Browser, tmp_path: Path
) -> None:
    kinds = _preview_file(upload := tmp_path / "ten-thousand-rows.csv")
    total = sum(kinds.values())
    bad_rows = kinds["excel"] + kinds["luhn"]
    with logged_in(browser, big.api) as page:
        page.goto(f"{big.api.base_url}/ui/upload")
        page.get_by_label("File").set_input_files(str(upload))
        page.get_by_label("Service provider").select_option(str(big.api.provider_id))
        page.get_by_label("Target status").select_option("inventory")
        page.get_by_role("button", name="Preview").click()
        expect(page.locator("#preview-verdict")).to_contain_text(f"{total} problem(s): nothing can be created")

        # Problems first: the counts by kind, then the rows with problems, then the count of the others.
        order = page.evaluate(
            """() => ['problem-messages', 'problem-report', 'preview-problems', 'preview-ok-rows']
                .map(id => document.getElementById(id))
                .map((el, i, all) => i === 0 || (all[i - 1].compareDocumentPosition(el) & 4) !== 0)"""
        )
        assert order == [True, True, True, True], "problems come first, in that order"
        by_kind = page.locator("#problem-messages tbody tr")
        expect(by_kind).to_have_count(3)
        counted = {
            row[0]: int(row[2].replace(",", ""))
            for row in by_kind.evaluate_all("rows => rows.map(r => [...r.cells].map(c => c.textContent.trim()))")
        }
        assert counted == {
            "Excel rewrote this number (N); format the column as text and enter the ICCIDs again": kinds["excel"],
            "duplicate of row N": kinds["duplicate"],
            "ICCID check digit is wrong (Luhn)": kinds["luhn"],
        }, counted
        expect(page.locator("#problem-kinds")).to_contain_text(f"ICCID: {total}")

        # Only the rows with problems are drawn: 10,000 rows never reach the DOM.
        expect(page.locator("#preview-problems tbody tr")).to_have_count(bad_rows)
        assert page.locator("tr").count() < 100, "the rows without problems are counted, not drawn"
        ok_rows = page.locator("#preview-ok-rows")
        expect(ok_rows).to_have_text(f"{N - bad_rows:,} row(s) without problem or warning (counted, not listed).")
        page.screenshot(path=str(tmp_path / "preview-10000.png"), full_page=True)
        assert_accessible(page, "the preview of 10,000 rows with problems")

        only = page.get_by_label("Show only the rows with problems")
        only.check()
        expect(ok_rows).to_be_hidden()
        expect(page.locator("#preview-problems")).to_be_visible()
        page.screenshot(path=str(tmp_path / "preview-only-problems.png"), full_page=True)
        only.uncheck()
        expect(ok_rows).to_be_visible()

        with page.expect_download() as download:
            page.get_by_role("button", name="Download the problem report (CSV)").click()
        assert download.value.suggested_filename == "ten-thousand-rows-problems.csv"
        saved = tmp_path / download.value.suggested_filename
        download.value.save_as(saved)
        with saved.open(newline="", encoding="utf-8") as f:
            report = list(csv.DictReader(f))
        assert len(report) == total
        assert {r["Column"] for r in report} == {"ICCID"}
        excel_lines = sorted(int(r["Line"]) for r in report if "Excel" in r["Problem"])
        assert excel_lines == [n + 2 for n in range(N) if n % 1000 == 7], "lines as the spreadsheet numbers them"
