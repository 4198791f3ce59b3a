"""The dashboard's live endpoints over real HTTP: what the page script gets (parts and rows with digests
that change only when what they show changes), refusals of unknown filter values, and the 401 that
names the login page."""

from __future__ import annotations

import httpx

from ..conftest import Api, activation_row
from .conftest import set_change


def test_the_live_endpoint_sends_parts_and_rows_whose_digest_follows_what_they_show(idle_api: Api) -> None:
    rows = [activation_row() for _ in range(3)]
    bulk_id = idle_api.create(rows).json()["id"]
    url = f"/ui/fragments/bulk-changes/{bulk_id}"
    first = idle_api.http.get(url, params={"q": rows[1]["ICCID"][-8:]}).json()
    assert first["live"] is True and first["status"] == "NEW"
    assert set(first["regions"]) == {"part-state", "part-actions", "part-notices", "part-counts", "part-pager"}
    assert len(first["rows"]) == 1 and rows[1]["ICCID"] in first["rows"][0]["html"]
    assert "READY <strong>3</strong>" in first["regions"]["part-counts"]["html"]

    again = idle_api.http.get(url, params={"q": rows[1]["ICCID"][-8:]}).json()
    assert again["rows"] == first["rows"] and again["regions"] == first["regions"], "nothing changed, same digests"

    set_change(idle_api, int(first["rows"][0]["key"]), status="ERROR", status_details="DeviceNotFound")
    changed = idle_api.http.get(url, params={"q": rows[1]["ICCID"][-8:]}).json()
    assert changed["rows"][0]["sig"] != first["rows"][0]["sig"] and "DeviceNotFound" in changed["rows"][0]["html"]
    assert changed["regions"]["part-counts"]["sig"] != first["regions"]["part-counts"]["sig"]
    assert changed["regions"]["part-notices"] == first["regions"]["part-notices"]


def test_unknown_filter_values_are_refused_with_their_name(idle_api: Api) -> None:
    bulk_id = idle_api.create([activation_row()]).json()["id"]
    for path, params, named in (
        (f"/ui/bulk-changes/{bulk_id}", {"status": "DONE"}, "status"),
        (f"/ui/bulk-changes/{bulk_id}", {"step": "TELEPORT"}, "step"),
        (f"/ui/bulk-changes/{bulk_id}", {"extra": "MAYBE"}, "additional step status"),
        ("/ui/", {"target": "vaporised"}, "unknown status"),
        ("/ui/", {"created_from": "01/02/2026"}, "created_from"),
        ("/ui/", {"provider": "acme"}, "provider"),
    ):
        r = idle_api.http.get(path, params=params)
        assert r.status_code == 400 and named in r.json()["detail"], (path, params, r.text)
    assert idle_api.http.get("/ui/", params={"status": "processed", "target": "Deactivated"}).status_code == 200


def test_without_a_session_the_live_endpoints_name_the_login_page(idle_api: Api) -> None:
    bulk_id = idle_api.create([activation_row()]).json()["id"]
    with httpx.Client(base_url=idle_api.base_url, timeout=10) as anonymous:
        for path in ("/ui/fragments/bulk-changes", f"/ui/fragments/bulk-changes/{bulk_id}"):
            r = anonymous.get(path)
            assert r.status_code == 401 and r.json()["login"] == "/ui/login" and r.headers["x-login-url"] == "/ui/login"
        page = anonymous.get(f"/ui/bulk-changes/{bulk_id}")
        assert page.status_code == 303 and page.headers["location"].startswith("/ui/login?next=")
