"""The dashboard's providers page in a real headless Chromium: a ThingSpace provider without a listener says
its changes wait for the deferred check; registering it from the page reaches the carrier (the simulator over
real HTTP) and the page then shows the URL; deleting it goes back. Screenshots under the test's tmp_path."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, expect

from ..conftest import ACCOUNT, Api, make_api
from .conftest import assert_accessible, logged_in


@pytest.fixture
def bare_api(tmp_path: Path) -> Iterator[Api]:
    yield from make_api(tmp_path, with_worker=False, callbacks=False)


def test_register_and_delete_the_callback_listener_from_the_dashboard(
    bare_api: Api, browser: Browser, tmp_path: Path
) -> None:
    api = bare_api
    with logged_in(browser, api) as page:
        page.goto(f"{api.base_url}/ui/")
        page.get_by_role("link", name="Providers").click()
        expect(page.get_by_role("heading", name="Service providers")).to_be_visible()
        row = page.locator(f'#providers tr[data-provider="{api.provider_id}"]')
        expect(row).to_have_attribute("data-callbacks", "none")
        expect(row.locator(".callback-state")).to_contain_text("every change waits for the deferred check")
        assert_accessible(page, "providers page")
        page.screenshot(path=str(tmp_path / "providers-not-registered.png"), full_page=True)

        row.get_by_label("Public URL of this service").fill(api.base_url)
        row.get_by_role("button", name="Register callback").click()
        expect(page.locator("#providers-notice")).to_contain_text("CarrierService listener registered")
        url = f"{api.base_url}/callbacks/thingspace/{api.provider_id}"
        expect(row).to_have_attribute("data-callbacks", "registered")
        expect(row.locator(".callback-state")).to_contain_text(url)
        listener = api.sim.listeners.get(ACCOUNT, "CarrierService")
        assert listener is not None and listener.url == url
        page.screenshot(path=str(tmp_path / "providers-registered.png"), full_page=True)

        row.get_by_role("button", name="Delete callback").click()
        expect(page.locator("#providers-notice")).to_contain_text("deleted")
        expect(row).to_have_attribute("data-callbacks", "none")
        assert api.sim.listeners.get(ACCOUNT, "CarrierService") is None
        page.screenshot(path=str(tmp_path / "providers-deleted.png"), full_page=True)
    assert (tmp_path / "providers-registered.png").stat().st_size > 0
