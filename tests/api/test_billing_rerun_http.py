"""Re-running failed billing steps over REST and from the dashboard (Debian's chromium via Playwright)."""

from __future__ import annotations

from pathlib import Path

from playwright.sync_api import Browser, expect
from sqlalchemy import update

from bulkchange.store.tables import IntegrationAuthentication, M2MDeviceChange

from .conftest import Api, activation_row
from .test_dashboard_browser import browser as browser
from .test_dashboard_browser import chromium as chromium


def _billing_failed(api: Api, n: int) -> int:
    """A bulk change whose devices the carrier changed and whose Rev.io step then ended ERROR."""
    with api.rt.session_factory.begin() as session:
        session.add(
            IntegrationAuthentication(
                tenant_id=1,
                name=f"rev {n}",
                base_url="https://rev.example/v1",
                username="u",
                client_code="c",
                password="p",
                subscription_key="k",
            )
        )
    created = api.create([activation_row(RevCustomerId="4242", ServiceTypeId=7) for _ in range(n)])
    assert created.status_code == 201, created.text
    bulk_id = int(created.json()["id"])
    with api.rt.session_factory.begin() as session:
        session.execute(
            update(M2MDeviceChange)
            .where(M2MDeviceChange.bulk_change_id == bulk_id)
            .values(status="PROCESSED", additional_step_status="ERROR", additional_step_details="Rev.io refused")
        )
    return bulk_id


def test_rerun_billing_over_rest(idle_api: Api) -> None:
    api = idle_api
    bulk_id = _billing_failed(api, 3)
    changes = api.http.get(f"/api/v1/bulk-changes/{bulk_id}/changes").json()["items"]
    one = api.http.post(f"/api/v1/bulk-changes/{bulk_id}/rerun-billing", json={"change_ids": [changes[0]["id"]]})
    assert one.status_code == 200, one.text
    assert one.json()["rerun"] == [changes[0]["id"]]
    rest = api.http.post(f"/api/v1/bulk-changes/{bulk_id}/rerun-billing")
    assert rest.status_code == 200 and len(rest.json()["rerun"]) == 2
    again = api.http.post(f"/api/v1/bulk-changes/{bulk_id}/rerun-billing")
    assert again.status_code == 409 and "no additional step" in again.json()["detail"]
    wrong = api.http.post(f"/api/v1/bulk-changes/{bulk_id}/rerun-billing", json={"statuses": ["PROCESSED"]})
    assert wrong.status_code == 422
    assert api.http.post("/api/v1/bulk-changes/999999/rerun-billing").status_code == 404
    after = api.http.get(f"/api/v1/bulk-changes/{bulk_id}/changes").json()["items"]
    assert {c["additional_step_status"] for c in after} == {"PENDING"}


def test_rerun_billing_from_the_dashboard(idle_api: Api, browser: Browser, tmp_path: Path) -> None:
    api = idle_api
    bulk_id = _billing_failed(api, 2)
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(30_000)
    try:
        page.goto(f"{api.base_url}/ui/bulk-changes/{bulk_id}")
        page.get_by_label("API key").fill(api.key)
        page.get_by_role("button", name="Log in").click()
        button = page.locator("#rerun-billing")
        expect(button).to_have_text("Re-run failed billing (2)")
        page.screenshot(path=str(tmp_path / "billing-failed.png"), full_page=True)
        button.click()
        expect(page.get_by_text("2 billing step(s) will run again")).to_be_visible()
        expect(page.locator("#rerun-billing")).to_have_count(0)
        page.screenshot(path=str(tmp_path / "billing-rerun.png"), full_page=True)
    finally:
        page.close()
    assert (tmp_path / "billing-rerun.png").stat().st_size > 0
    after = api.http.get(f"/api/v1/bulk-changes/{bulk_id}/changes").json()["items"]
    assert {c["additional_step_status"] for c in after} == {"PENDING"}
