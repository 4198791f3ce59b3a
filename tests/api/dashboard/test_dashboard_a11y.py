"""Accessibility of the dashboard in Debian's chromium: an axe-core scan of every page (empty and
non-empty states included) with no serious or critical violation, a keyboard-only walk-through (every
control reached, with a visible focus, and operated), and the typed confirmation a destructive bulk
change needs. Screenshots are saved under each test's tmp_path.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import Any

from playwright.sync_api import Browser, Page, expect

from ..conftest import Api, activation_row, new_iccid
from .conftest import assert_accessible, logged_in


def _csv(path: Path, rows: list[dict[str, str]]) -> Path:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def _deactivations(api: Api, count: int, *, waived: int) -> list[dict[str, str]]:
    """Rows deactivating ``count`` active lines; the first ``waived`` set EtfWaiver."""
    rows = []
    for i in range(count):
        iccid = new_iccid()
        api.seed_device(iccid, "active")
        rows.append({"ICCID": iccid, "ReasonCode": "FF", "EtfWaiver": "true" if i < waived else ""})
    return rows


def _preview(page: Page, api: Api, upload: Path, status: str) -> None:
    page.goto(f"{api.base_url}/ui/upload")
    page.get_by_label("File").set_input_files(str(upload))
    page.get_by_label("Service provider").select_option(str(api.provider_id))
    page.get_by_label("Target status").select_option(status)
    page.get_by_role("button", name="Preview").click()
    expect(page.locator("#preview-verdict")).to_contain_text("Every row is valid")


def test_a_destructive_change_needs_the_count_of_lines_typed(idle_api: Api, browser: Browser, tmp_path: Path) -> None:
    upload = _csv(tmp_path / "March deactivations.csv", _deactivations(idle_api, 4, waived=1))
    with logged_in(browser, idle_api) as page:
        _preview(page, idle_api, upload, "deactive")
        page.get_by_role("button", name="Confirm and create").click()

        expect(page.get_by_role("heading", name="This bulk change cannot be undone")).to_be_visible()
        expect(page.locator("#destructive-count")).to_have_text("4")
        consequences = page.locator("#consequences li")
        expect(consequences).to_have_text(
            [
                "MDN released on 4 lines (the phone numbers are lost).",
                "ETF (early termination fee) may apply to 3 lines: EtfWaiver not set.",
            ]
        )
        page.screenshot(path=str(tmp_path / "confirm-destructive.png"), full_page=True)
        assert idle_api.http.get("/api/v1/bulk-changes").json()["total"] == 0, "nothing created yet"

        page.get_by_label(re.compile("Type the number of lines")).fill("3")
        page.get_by_role("button", name="Create the bulk change").click()
        expect(page.get_by_role("alert")).to_contain_text("type 4 (the number of lines) to confirm")
        expect(page.get_by_label(re.compile("Type the number of lines"))).to_have_attribute("aria-invalid", "true")
        assert idle_api.http.get("/api/v1/bulk-changes").json()["total"] == 0, "a wrong count creates nothing"

        page.get_by_label(re.compile("Type the number of lines")).fill("4")
        page.get_by_role("button", name="Create the bulk change").click()
        page.wait_for_url(re.compile(r"/ui/bulk-changes/\d+$"))
        expect(page.locator("#live-rows tr")).to_have_count(4)
        expect(page.get_by_role("heading", level=1)).to_contain_text("March deactivations.csv")

    created = idle_api.http.get("/api/v1/bulk-changes").json()["items"]
    assert len(created) == 1 and created[0]["counts"] == {"READY": 4}


_FOCUSABLE = """() => [...document.querySelectorAll(
    'a[href], button:not([disabled]), input:not([type=hidden]):not([disabled]), select:not([disabled]), '
    + 'textarea:not([disabled]), summary, [tabindex]:not([tabindex="-1"])'
)].filter(el => el.getClientRects().length > 0 && !el.closest('[hidden]'))
 .filter(el => el.matches('details > summary') || !el.closest('details:not([open])'))
 .map(el => el.dataset.walk)"""

_ACTIVE = """() => {
    const el = document.activeElement;
    if (!el || el === document.body) { return null; }
    const style = getComputedStyle(el);
    const box = el.getBoundingClientRect();
    return {
        walk: el.dataset.walk || null,
        outline: style.outlineStyle !== 'none' && parseFloat(style.outlineWidth) > 0,
        onScreen: box.right > 0 && box.bottom > 0 && box.left < window.innerWidth,
        name: (el.id || el.textContent || el.name || el.tagName).trim().slice(0, 40),
    };
}"""


def _walk(page: Page, url: str, what: str) -> None:
    """Tab through the whole page from the top: every control is reached, each with a visible focus ring."""
    page.goto(url)
    page.evaluate("""() => document.querySelectorAll('*').forEach((el, i) => { el.dataset.walk = String(i); })""")
    wanted: list[str] = page.evaluate(_FOCUSABLE)
    reached: list[dict[str, Any]] = []
    for _ in range(len(wanted) * 4 + 10):  # a date input takes a Tab per part
        page.keyboard.press("Tab")
        active = page.evaluate(_ACTIVE)
        if active is None or (reached and active["walk"] == reached[0]["walk"] and len(reached) > 1):
            break
        if not reached or active["walk"] != reached[-1]["walk"]:
            reached.append(active)
        if {r["walk"] for r in reached} >= set(wanted):
            break
    missing = set(wanted) - {r["walk"] for r in reached}
    assert not missing, f"{what}: {len(missing)} control(s) not reached by Tab: " + str(
        page.evaluate(
            "ws => ws.map(w => document.querySelector(`[data-walk='${w}']`).outerHTML.slice(0, 160))", sorted(missing)
        )
    )
    unseen = [r["name"] for r in reached if not (r["outline"] and r["onScreen"])]
    assert not unseen, f"{what}: focus not visible on {unseen}"


def test_keyboard_only_walk_through(idle_api: Api, browser: Browser, tmp_path: Path) -> None:
    rows = [activation_row() for _ in range(3)]
    bulk_id = idle_api.create(rows).json()["id"]
    with logged_in(browser, idle_api) as page:
        page.goto(f"{idle_api.base_url}/ui/bulk-changes/{bulk_id}")
        expect(page.locator("#live-rows tr")).to_have_count(3)

        page.keyboard.press("Tab")
        skip = page.get_by_role("link", name="Skip to content")
        expect(skip).to_be_focused()
        assert skip.bounding_box() is not None and skip.bounding_box()["x"] >= 0, "the skip link shows when focused"
        page.keyboard.press("Enter")
        expect(page.locator("main")).to_be_focused()
        page.keyboard.press("Tab")
        expect(page.get_by_role("link", name="Export CSV")).to_be_focused()

        _walk(page, f"{idle_api.base_url}/ui/bulk-changes/{bulk_id}", "bulk change page")

        # Operated with keys only: search, a count, a log panel, the page number.
        search = page.get_by_label("Search ICCID or MSISDN")
        search.focus()
        page.keyboard.type(rows[1]["ICCID"])
        page.keyboard.press("Enter")
        expect(page.locator("#live-rows tr")).to_have_count(1)
        expect(page.locator("#live-rows tr")).to_contain_text(rows[1]["ICCID"])

        page.goto(f"{idle_api.base_url}/ui/bulk-changes/{bulk_id}")
        while not page.evaluate("() => document.activeElement.matches('#part-counts a[data-status=\"READY\"]')"):
            page.keyboard.press("Tab")
        page.keyboard.press("Enter")
        page.wait_for_url(re.compile(r"status=READY"))
        expect(page.locator('#part-counts a[aria-current="true"]')).to_contain_text("READY")

        summary = page.locator("#live-rows tr summary").first
        summary.focus()
        page.keyboard.press("Enter")
        expect(page.locator("#live-rows tr details").first).to_have_attribute("open", "")
        expect(page.locator("#live-rows tr .logs").first).to_contain_text("No log entry yet")
        page.screenshot(path=str(tmp_path / "keyboard-detail.png"), full_page=True)

        _walk(page, f"{idle_api.base_url}/ui/", "list page")
        file_filter = page.get_by_label("File name")
        file_filter.focus()
        page.keyboard.type("nothing like this")
        page.keyboard.press("Enter")
        expect(page.locator("#live-empty")).to_be_visible()

        _walk(page, f"{idle_api.base_url}/ui/upload", "upload page")


def test_every_dashboard_page_has_no_serious_accessibility_violation(
    idle_api: Api, browser: Browser, tmp_path: Path
) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(20_000)
    try:
        page.goto(f"{idle_api.base_url}/ui/")
        expect(page.get_by_role("heading", name="Log in")).to_be_visible()
        assert_accessible(page, "login")
        page.get_by_label("API key").fill("bck_not-a-key")
        page.get_by_role("button", name="Log in").click()
        expect(page.get_by_role("alert")).to_contain_text("not valid")
        assert_accessible(page, "login, refused")
        page.get_by_label("API key").fill(idle_api.key)
        page.get_by_role("button", name="Log in").click()

        expect(page.locator("#live-empty")).to_contain_text("No bulk change yet")
        assert_accessible(page, "list, empty")

        page.goto(f"{idle_api.base_url}/ui/upload")
        assert_accessible(page, "upload")
        upload = _csv(tmp_path / "deactivate.csv", _deactivations(idle_api, 3, waived=0))
        _preview(page, idle_api, upload, "deactive")
        assert_accessible(page, "preview")

        page.get_by_role("button", name="Confirm and create").click()
        expect(page.locator("#destructive-count")).to_have_text("3")
        assert_accessible(page, "confirmation")
        page.get_by_label(re.compile("Type the number of lines")).fill("30")
        page.get_by_role("button", name="Create the bulk change").click()
        expect(page.get_by_role("alert")).to_be_visible()
        assert_accessible(page, "confirmation, wrong count")
        page.get_by_label(re.compile("Type the number of lines")).fill("3")
        page.get_by_role("button", name="Create the bulk change").click()
        page.wait_for_url(re.compile(r"/ui/bulk-changes/\d+$"))
        expect(page.locator("#live-rows tr")).to_have_count(3)
        page.locator("#live-rows tr summary").first.click()
        expect(page.locator("#live-rows tr .logs").first).to_contain_text("No log entry yet")
        assert_accessible(page, "bulk change")
        page.screenshot(path=str(tmp_path / "a11y-detail.png"), full_page=True)

        page.get_by_label("Status", exact=True).select_option("ERROR")
        page.get_by_role("button", name="Filter").click()
        expect(page.locator("#live-empty")).to_contain_text("No device change with status ERROR")
        assert_accessible(page, "bulk change, nothing matching")

        page.goto(f"{idle_api.base_url}/ui/")
        expect(page.locator("#live-rows tr")).to_have_count(1)
        assert_accessible(page, "list")
        page.screenshot(path=str(tmp_path / "a11y-list.png"), full_page=True)
    finally:
        context.close()
