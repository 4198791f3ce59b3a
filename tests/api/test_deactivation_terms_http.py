"""What a deactivation does is the carrier's: over real HTTP, the REST dry run and the dashboard's typed
confirmation warn that a ThingSpace deactivation releases the MDN, and say that a Control Center one stops
the service and keeps the MSISDN (no MDN warning, no early-termination fee)."""

from __future__ import annotations

import base64
import html

from bulkchange.providers import add_controlcenter_provider

from .conftest import Api, new_iccid


def _controlcenter(api: Api) -> int:
    with api.rt.session_factory() as session:
        return add_controlcenter_provider(
            session, name="pod19", base_url="https://restapi19.att.com/rws/api", username="u", api_key="k-1"
        )


def _dry_run_warnings(api: Api, provider_id: int) -> list[str]:
    body = {"service_provider_id": provider_id, "status": "deactive", "rows": [{"ICCID": new_iccid()}]}
    r = api.http.post("/api/v1/bulk-changes", json=body, params={"dry_run": "true"})
    assert r.status_code == 200, r.text
    (device,) = r.json()["devices"]
    assert device["ok"], device
    return list(device["warnings"])


def _confirmation_page(api: Api, provider_id: int, n: int) -> str:
    data = ("ICCID\r\n" + "".join(f"{new_iccid()}\r\n" for _ in range(n))).encode()
    form = {
        "payload": base64.b64encode(data).decode(),
        "filename": "deactivate.csv",
        "service_provider_id": str(provider_id),
        "status": "deactive",
        "key": f"deactivate-{provider_id}",
    }
    r = api.http.post("/ui/confirm", data=form, follow_redirects=False)
    assert r.status_code == 200, r.text  # destructive: the typed confirmation, nothing created yet
    return html.unescape(r.text)


def test_a_thingspace_deactivation_warns_that_the_mdn_is_released(idle_api: Api) -> None:
    api = idle_api
    warnings = _dry_run_warnings(api, api.provider_id)
    assert "deactivation releases the line's MDN: the phone number is lost" in warnings
    assert any("early-termination fee" in w for w in warnings)
    page = _confirmation_page(api, api.provider_id, 2)
    assert "MDN released on 2 lines (the phone numbers are lost)." in page
    assert "ETF (early termination fee) may apply to 2 lines" in page


def test_a_control_center_deactivation_keeps_the_msisdn(idle_api: Api) -> None:
    api = idle_api
    pod19 = _controlcenter(api)
    warnings = _dry_run_warnings(api, pod19)
    assert not any("MDN" in w or "number is lost" in w or "early-termination" in w for w in warnings), warnings
    assert any("keeps the MSISDN assigned to the SIM: the number is not released" in w for w in warnings), warnings
    page = _confirmation_page(api, pod19, 3)
    assert "Service stopped on 3 lines (deactivated; each MSISDN stays assigned to its SIM)." in page
    assert "MDN released" not in page and "ETF" not in page
    assert 'id="destructive-count">3<' in page  # still a destructive change: the service stops
