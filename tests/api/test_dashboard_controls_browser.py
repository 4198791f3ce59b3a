"""Cancel, pause / resume and the PARTIAL outcome in the dashboard, in Debian's chromium driven by Playwright
(the fixtures of test_dashboard_browser.py). Screenshots go to the test's own temporary directory."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from bulkchange.engine import changes as ch

from .conftest import Api, activation_row, make_api, new_iccid
from .test_dashboard_browser import browser as browser
from .test_dashboard_browser import chromium as chromium


@pytest.fixture
def idle(tmp_path: Path) -> Iterator[Api]:
    yield from make_api(tmp_path, with_worker=False)


@pytest.fixture
def working(tmp_path: Path) -> Iterator[Api]:
    # The unknown device's refusal comes in the callback; a deferred check due after 1 s (the default here)
    # would race it on a loaded machine and end that change NEEDS_REVIEW instead of ERROR.
    yield from make_api(tmp_path, activation_check_delay_s=120)


def _logged_in(api: Api, browser: Browser, path: str) -> Page:
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(30_000)
    page.goto(f"{api.base_url}/ui/login?next={path}")
    page.get_by_label("API key").fill(api.key)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"**{path}")
    return page


def test_pause_resume_and_cancel_while_a_change_is_being_sent(idle: Api, browser: Browser, tmp_path: Path) -> None:
    api = idle
    bulk_id = api.create([activation_row() for _ in range(3)]).json()["id"]
    with api.rt.session_factory() as session:  # a worker is sending one of them
        [sending] = ch.claim(session, bulk_id, worker="w1", lease_s=600, now=api.rt.ctx.clock(), limit=1)
    page = _logged_in(api, browser, f"/ui/bulk-changes/{bulk_id}")
    try:
        page.locator("#pause").click()
        expect(page.locator("p.notice[role=status]")).to_contain_text("paused by dashboard")
        expect(page.locator("#part-state .badge")).to_contain_text("PAUSED")
        expect(page.locator("#paused-by")).to_contain_text("Paused by dashboard")
        page.screenshot(path=str(tmp_path / "dashboard-paused.png"), full_page=True)

        page.locator("#resume").click()
        expect(page.locator("p.notice[role=status]")).to_contain_text("resumed by dashboard")
        expect(page.locator("#pause")).to_be_visible()

        cancel = page.locator("#cancel-unsent")
        expect(cancel).to_contain_text("2 not sent")
        cancel.click()
        expect(page.locator("p.notice[role=status]")).to_contain_text("2 change(s) cancelled; 1 already at the carrier")
        # One change is still SENDING: it may come back READY, so Cancel stays.
        expect(page.locator("#cancel-unsent")).to_be_visible()
        expect(page.locator(f'table.devices tr[data-key="{sending.id}"]')).to_have_attribute("data-status", "SENDING")
        expect(page.locator('table.devices tr[data-status="CANCELLED"]')).to_have_count(2)
        page.screenshot(path=str(tmp_path / "dashboard-cancelled.png"), full_page=True)
    finally:
        page.close()


def test_partial_is_amber_with_its_word_and_counts(working: Api, browser: Browser, tmp_path: Path) -> None:
    api = working
    good = new_iccid()
    api.seed_device(good, "active")
    bulk_id = api.create([{"ICCID": good}, {"ICCID": new_iccid()}], status="deactive").json()["id"]
    api.wait_for(bulk_id, lambda b: b["status"] not in ("NEW", "PROCESSING"))
    page = _logged_in(api, browser, f"/ui/bulk-changes/{bulk_id}")
    try:
        expect(page.locator('section.summary[data-bulk-status="PARTIAL"]')).to_be_visible()
        badge = page.locator("#part-state .badge")
        expect(badge).to_have_text("! PARTIAL")  # the word and a sign, never the colour alone
        assert badge.evaluate("b => getComputedStyle(b).backgroundColor") == "rgb(255, 244, 220)"  # amber
        expect(page.locator("#outcome-details")).to_have_text("Has errors: 1 PROCESSED, 1 ERROR")
        page.screenshot(path=str(tmp_path / "dashboard-partial.png"), full_page=True)

        page.goto(f"{api.base_url}/ui/")
        row = page.locator(f'#live-rows tr[data-key="{bulk_id}"]')
        expect(row).to_have_attribute("data-bulk-status", "PARTIAL")
        expect(row.locator(".badge-warn")).to_contain_text("PARTIAL")
        page.screenshot(path=str(tmp_path / "dashboard-list-partial.png"), full_page=True)
    finally:
        page.close()
    assert (tmp_path / "dashboard-partial.png").stat().st_size > 0
