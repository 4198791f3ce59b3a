"""The dashboard in a real headless Chromium (Debian's ``chromium`` package driven by Playwright): upload a
CSV, read the dry-run preview, confirm, and watch the bulk change finish. Screenshots go to test-artifacts/.

Playwright's own browser download cannot work here, so the session fixture installs Debian's package
with apt-get when ``/usr/bin/chromium`` is missing. Synchronisation is by selectors with deadlines only.
"""

from __future__ import annotations

import csv
import fcntl
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, expect, sync_playwright

from .conftest import Api, activation_row

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


def _install_chromium() -> None:
    """Debian's chromium, installed the first time a browser test runs on a machine without it."""
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.fail(f"{CHROMIUM} is missing and cannot be installed here: run `apt-get install -y chromium` as root")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, timeout=900)
    subprocess.run(["apt-get", "install", "-y", "-qq", "chromium"], check=True, env=env, timeout=1800)


def ensure_chromium() -> str:
    """The browser's path, installed first if missing. `make test` installs it before the tests start (`make
    browser`); a parallel run started by hand may get here in several processes at once, and apt lets one
    installer run at a time: the first installs, the others wait for it and find it there."""
    if not Path(CHROMIUM).exists():
        with open(Path(tempfile.gettempdir()) / "bulkchange-chromium-install.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not Path(CHROMIUM).exists():
                _install_chromium()
    return CHROMIUM


@pytest.fixture(scope="session")
def chromium() -> str:
    return ensure_chromium()


@pytest.fixture(scope="module")
def browser(chromium: str) -> Iterator[Browser]:
    # Module scope, not session: Playwright's sync API runs an event loop on this thread while it is open,
    # and the async tests of the other modules need the thread without one.
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


def _csv(path: Path, rows: list[dict[str, str]]) -> Path:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_upload_preview_confirm_and_watch_it_finish(api: Api, browser: Browser, tmp_path: Path) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    rows = [activation_row() for _ in range(5)]
    upload = _csv(tmp_path / "devices.csv", rows)
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(30_000)
    csp_violations: list[str] = []
    page.on("console", lambda m: csp_violations.append(m.text) if "Content Security Policy" in m.text else None)
    try:
        # Not logged in: the dashboard asks for an API key, then goes where it was asked to.
        page.goto(f"{api.base_url}/ui/upload")
        expect(page.get_by_role("heading", name="Log in")).to_be_visible()
        page.get_by_label("API key").fill(api.key)
        page.get_by_role("button", name="Log in").click()
        expect(page.get_by_role("heading", name="New bulk change")).to_be_visible()
        cookie = next(c for c in page.context.cookies() if c["name"] == "bulkchange_session")
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
        page.get_by_label("File").set_input_files(str(upload))
        page.get_by_label("Service provider").select_option(str(api.provider_id))
        page.get_by_label("Target status").select_option("active")
        page.get_by_role("button", name="Preview").click()

        expect(page.locator("#preview-verdict")).to_contain_text("Every row is valid")
        table = page.locator("#preview-table tbody tr")
        expect(table).to_have_count(5)
        expect(table.first).to_contain_text("ADD")
        expect(table.first).to_contain_text("ACTIVATE")
        page.screenshot(path=str(ARTIFACTS / "dashboard-preview.png"), full_page=True)
        assert api.http.get("/api/v1/bulk-changes").json()["total"] == 0, "the preview created nothing"

        page.get_by_role("button", name="Confirm and create").click()
        page.wait_for_url("**/ui/bulk-changes/*")
        expect(page.locator('section.summary[data-bulk-status="PROCESSED"]')).to_be_visible(timeout=60_000)
        devices = page.locator("table.devices tbody tr")
        expect(devices).to_have_count(5)
        expect(page.locator('table.devices tbody tr[data-status="PROCESSED"]')).to_have_count(5)
        expect(page.locator("section.summary .progress-text")).to_have_text("5 / 5")

        # Log drill-down: open one device's log entries.
        devices.first.locator("summary").click()
        expect(devices.first.locator(".log-list li").first).to_be_visible()
        page.screenshot(path=str(ARTIFACTS / "dashboard-bulk-change.png"), full_page=True)

        # Status filter.
        page.get_by_label("Status", exact=True).select_option("ERROR")
        page.get_by_role("button", name="Filter").click()
        expect(page.locator("p.empty")).to_contain_text("No device change with status ERROR")

        page.goto(f"{api.base_url}/ui/")
        expect(page.locator('#live-rows tr[data-bulk-status="PROCESSED"]')).to_have_count(1)
        page.screenshot(path=str(ARTIFACTS / "dashboard-list.png"), full_page=True)
        assert csp_violations == [], "the pages run under the CSP (no inline script or style)"
    finally:
        page.close()
    created = api.http.get("/api/v1/bulk-changes").json()["items"]
    assert len(created) == 1 and created[0]["created_by"] == "dashboard" and created[0]["counts"] == {"PROCESSED": 5}
