"""Tenant isolation and authentication, endpoint by endpoint.

The application's routes are enumerated: every route must be either public (listed in ``PUBLIC``) or have
a tenant check in ``TENANT_CHECKS`` — a new endpoint without one fails ``test_every_route_is_covered``.
Each check runs tenant B's key against tenant A's data and asserts that B neither sees nor changes it
(the database is compared before and after). Every non-public route refuses a request without a key.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from fastapi.routing import APIRoute
from sqlalchemy import select
from starlette.routing import Mount, Route

from bulkchange.api.app import create_app
from bulkchange.api.security import csrf_token_for
from bulkchange.api.settings import ApiSettings
from bulkchange.providers import add_provider
from bulkchange.services.apikeys import create_key, revoke_key
from bulkchange.store.tables import (
    CustomerRatePlan,
    Device,
    DeviceBulkChange,
    IntegrationAuthentication,
    M2MDeviceChange,
)

from .conftest import Api, activation_row, make_api, new_iccid

PUBLIC = {
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("POST", "/callbacks/thingspace/{service_provider_id}"),
    ("GET", "/ui/login"),
    ("POST", "/ui/login"),
    ("GET", "/"),  # a redirect to /ui/
    # The API's description: public so that client generators work; it holds no tenant's data.
    ("GET", "/openapi.json"),
    ("GET", "/docs"),
    ("GET", "/docs/oauth2-redirect"),
}


@dataclass
class Tenants:
    api: Api
    a_bulk: int
    a_change: int
    b_provider: int
    b_key: str
    b: httpx.Client

    def snapshot(self) -> list[tuple[object, ...]]:
        with self.api.rt.session_factory() as session:
            bulks = [
                (b.id, b.status, b.service_provider_id, b.modified_date)
                for b in session.execute(select(DeviceBulkChange).order_by(DeviceBulkChange.id)).scalars()
            ]
            changes = [
                (c.id, c.bulk_change_id, c.status, c.status_details)
                for c in session.execute(select(M2MDeviceChange).order_by(M2MDeviceChange.id)).scalars()
            ]
        return [*bulks, *changes]


@pytest.fixture
def tenants(tmp_path: Path) -> Iterator[Tenants]:
    for api in make_api(tmp_path, with_worker=False):
        created = api.create([activation_row() for _ in range(2)])
        assert created.status_code == 201, created.text
        bulk_id = created.json()["id"]
        change_id = api.http.get(f"/api/v1/bulk-changes/{bulk_id}/changes").json()["items"][0]["id"]
        with api.rt.session_factory() as session:
            b_provider = add_provider(
                session,
                name="other-tenant",
                base_url=api.carrier.base_url,
                client_id="b-client",
                client_secret="b-secret-value",
                username="b-user",
                password="b-password-value",
                account="0000999999-00001",
                tenant_id=2,
            )
            b_key = create_key(session, tenant_id=2, name="tenant B").key
        with httpx.Client(base_url=api.base_url, timeout=10, headers={"X-API-Key": b_key}) as b:
            yield Tenants(api, bulk_id, change_id, b_provider, b_key, b)


def _form(t: Tenants, **fields: object) -> dict[str, str]:
    return {"csrf_token": csrf_token_for(t.b_key), **{k: str(v) for k, v in fields.items()}}


def _csv(rows: int = 1) -> bytes:
    lines = ["ICCID,IMEI,ServicePlan,MdnZipCode"]
    for _ in range(rows):
        row = activation_row()
        lines.append(f"{row['ICCID']},{row['IMEI']},{row['ServicePlan']},{row['MdnZipCode']}")
    return ("\n".join(lines) + "\n").encode()


# --------------------------------------------------------------------------------- one check per route


def _service_providers(t: Tenants) -> None:
    ids = [p["id"] for p in t.b.get("/api/v1/service-providers").json()]
    assert ids == [t.b_provider]


def _create(t: Tenants) -> None:
    body = {"service_provider_id": t.api.provider_id, "status": "active", "rows": [activation_row()]}
    assert t.b.post("/api/v1/bulk-changes", json=body).status_code == 403
    # The preview reads A's devices: refused too.
    assert t.b.post("/api/v1/bulk-changes", json=body, params={"dry_run": "true"}).status_code == 403


def _upload(t: Tenants) -> None:
    r = t.b.post(
        "/api/v1/bulk-changes/upload",
        files={"file": ("d.csv", _csv(), "text/csv")},
        data={"service_provider_id": str(t.api.provider_id), "status": "active"},
    )
    assert r.status_code == 403


def _list(t: Tenants) -> None:
    assert t.b.get("/api/v1/bulk-changes").json()["total"] == 0
    only_a = t.b.get("/api/v1/bulk-changes", params={"service_provider_id": t.api.provider_id}).json()
    assert only_a["total"] == 0 and only_a["items"] == []
    assert t.api.http.get("/api/v1/bulk-changes").json()["total"] == 1  # A sees its own


def _read(t: Tenants) -> None:
    assert t.b.get(f"/api/v1/bulk-changes/{t.a_bulk}").status_code == 404
    assert t.api.http.get(f"/api/v1/bulk-changes/{t.a_bulk}").status_code == 200


def _changes(t: Tenants) -> None:
    assert t.b.get(f"/api/v1/bulk-changes/{t.a_bulk}/changes").status_code == 404


def _change(t: Tenants) -> None:
    assert t.b.get(f"/api/v1/bulk-changes/{t.a_bulk}/changes/{t.a_change}").status_code == 404


def _export(t: Tenants) -> None:
    assert t.b.get(f"/api/v1/bulk-changes/{t.a_bulk}/export.csv").status_code == 404


def _cancel(t: Tenants) -> None:
    assert t.b.post(f"/api/v1/bulk-changes/{t.a_bulk}/cancel").status_code == 404
    assert t.b.post(f"/api/v1/bulk-changes/{t.a_bulk}/cancel", json={"change_ids": [t.a_change]}).status_code == 404


def _pause(t: Tenants) -> None:
    assert t.b.post(f"/api/v1/bulk-changes/{t.a_bulk}/pause").status_code == 404


def _resume(t: Tenants) -> None:
    assert t.b.post(f"/api/v1/bulk-changes/{t.a_bulk}/resume").status_code == 404


def _retry(t: Tenants) -> None:
    assert t.b.post(f"/api/v1/bulk-changes/{t.a_bulk}/retry").status_code == 404


def _ui_index(t: Tenants) -> None:
    page = t.b.get("/ui/")
    assert page.status_code == 200 and f"/ui/bulk-changes/{t.a_bulk}" not in page.text
    assert f"/ui/bulk-changes/{t.a_bulk}" in t.api.http.get("/ui/").text


def _ui_rows(t: Tenants) -> None:
    page = t.b.get("/ui/fragments/bulk-changes")
    assert page.status_code == 200 and f"/ui/bulk-changes/{t.a_bulk}" not in page.text


def _ui_detail(t: Tenants) -> None:
    assert t.b.get(f"/ui/bulk-changes/{t.a_bulk}").status_code == 404


def _ui_detail_fragment(t: Tenants) -> None:
    assert t.b.get(f"/ui/fragments/bulk-changes/{t.a_bulk}").status_code == 404


def _ui_logs(t: Tenants) -> None:
    assert t.b.get(f"/ui/fragments/bulk-changes/{t.a_bulk}/changes/{t.a_change}/logs").status_code == 404


def _ui_cancel(t: Tenants) -> None:
    r = t.b.post(f"/ui/bulk-changes/{t.a_bulk}/cancel", data=_form(t))
    assert r.status_code == 404


def _ui_pause(t: Tenants) -> None:
    assert t.b.post(f"/ui/bulk-changes/{t.a_bulk}/pause", data=_form(t)).status_code == 404


def _ui_resume(t: Tenants) -> None:
    assert t.b.post(f"/ui/bulk-changes/{t.a_bulk}/resume", data=_form(t)).status_code == 404


def _ui_retry(t: Tenants) -> None:
    r = t.b.post(f"/ui/bulk-changes/{t.a_bulk}/retry", data=_form(t, key=uuid.uuid4().hex))
    assert r.status_code == 404


def _ui_upload_form(t: Tenants) -> None:
    page = t.b.get("/ui/upload").text
    assert "other-tenant" in page and "acme" not in page


def _ui_upload(t: Tenants) -> None:
    r = t.b.post(
        "/ui/upload",
        files={"file": ("d.csv", _csv(), "text/csv")},
        data=_form(t, service_provider_id=t.api.provider_id, status="active"),
    )
    assert r.status_code == 403


def _ui_confirm(t: Tenants) -> None:
    payload = base64.b64encode(_csv()).decode()
    form = _form(t, payload=payload, filename="d.csv", service_provider_id=t.api.provider_id, status="active", key="k1")
    assert t.b.post("/ui/confirm", data=form).status_code == 403


def _ui_problem_report(t: Tenants) -> None:
    # The report reads A's devices to judge the rows (busy, current status): refused like the preview itself.
    payload = base64.b64encode(_csv()).decode()
    form = _form(t, payload=payload, filename="d.csv", service_provider_id=t.api.provider_id, status="active")
    r = t.b.post("/ui/preview/problems.csv", data=form)
    assert r.status_code == 403 and "service provider" in r.json()["detail"], r.text


def _ui_logout(t: Tenants) -> None:
    r = t.b.post("/ui/logout", data=_form(t))
    assert r.status_code == 303 and "bulkchange_session=" in r.headers.get("set-cookie", "")


def _rerun_billing(t: Tenants) -> None:
    assert t.b.post(f"/api/v1/bulk-changes/{t.a_bulk}/rerun-billing").status_code == 404


def _ui_rerun_billing(t: Tenants) -> None:
    assert t.b.post(f"/ui/bulk-changes/{t.a_bulk}/rerun-billing", data=_form(t)).status_code == 404


def _a_listener(t: Tenants) -> object:
    return t.api.sim.listeners.get(t.api.sim.config.account, "CarrierService")


def _callbacks_list(t: Tenants) -> None:
    assert t.b.get(f"/api/v1/providers/{t.api.provider_id}/callbacks").status_code == 403


def _callbacks_register(t: Tenants) -> None:
    before = _a_listener(t)
    r = t.b.post(f"/api/v1/providers/{t.api.provider_id}/callbacks", json={"url": "http://127.0.0.1:9"})
    assert r.status_code == 403 and _a_listener(t) == before


def _callbacks_delete(t: Tenants) -> None:
    assert t.b.delete(f"/api/v1/providers/{t.api.provider_id}/callbacks").status_code == 403
    assert _a_listener(t) is not None


def _ui_providers(t: Tenants) -> None:
    page = t.b.get("/ui/providers").text
    assert "other-tenant" in page and "acme" not in page


def _ui_callbacks_register(t: Tenants) -> None:
    before = _a_listener(t)
    r = t.b.post(f"/ui/providers/{t.api.provider_id}/callbacks", data=_form(t, url="http://127.0.0.1:9"))
    assert r.status_code == 403 and _a_listener(t) == before


def _ui_callbacks_delete(t: Tenants) -> None:
    assert t.b.post(f"/ui/providers/{t.api.provider_id}/callbacks/delete", data=_form(t)).status_code == 403
    assert _a_listener(t) is not None


def _metrics(t: Tenants) -> None:
    text = t.b.get("/metrics").text
    # Process-wide aggregates only: no bulk change, device or provider of any tenant is named.
    assert "bulkchange_" in text
    for named in ("bulk_change_id", "iccid", "service_provider", str(t.api.sim.config.account)):
        assert named not in text


def _no_tenant_data(path: str) -> Callable[[Tenants], None]:
    def check(t: Tenants) -> None:
        r = t.b.get(path)
        assert r.status_code == 200 and "acme" not in r.text

    return check


TENANT_CHECKS: dict[tuple[str, str], Callable[[Tenants], None]] = {
    ("GET", "/api/v1/service-providers"): _service_providers,
    ("POST", "/api/v1/bulk-changes"): _create,
    ("POST", "/api/v1/bulk-changes/upload"): _upload,
    ("GET", "/api/v1/bulk-changes"): _list,
    ("GET", "/api/v1/bulk-changes/{bulk_change_id}"): _read,
    ("GET", "/api/v1/bulk-changes/{bulk_change_id}/changes"): _changes,
    ("GET", "/api/v1/bulk-changes/{bulk_change_id}/changes/{change_id}"): _change,
    ("GET", "/api/v1/bulk-changes/{bulk_change_id}/export.csv"): _export,
    ("POST", "/api/v1/bulk-changes/{bulk_change_id}/cancel"): _cancel,
    ("POST", "/api/v1/bulk-changes/{bulk_change_id}/pause"): _pause,
    ("POST", "/api/v1/bulk-changes/{bulk_change_id}/resume"): _resume,
    ("POST", "/api/v1/bulk-changes/{bulk_change_id}/retry"): _retry,
    ("POST", "/api/v1/bulk-changes/{bulk_change_id}/rerun-billing"): _rerun_billing,
    ("GET", "/api/v1/providers/{provider_id}/callbacks"): _callbacks_list,
    ("POST", "/api/v1/providers/{provider_id}/callbacks"): _callbacks_register,
    ("DELETE", "/api/v1/providers/{provider_id}/callbacks"): _callbacks_delete,
    ("GET", "/ui/"): _ui_index,
    ("GET", "/ui/fragments/bulk-changes"): _ui_rows,
    ("GET", "/ui/bulk-changes/{bulk_change_id}"): _ui_detail,
    ("GET", "/ui/fragments/bulk-changes/{bulk_change_id}"): _ui_detail_fragment,
    ("GET", "/ui/fragments/bulk-changes/{bulk_change_id}/changes/{change_id}/logs"): _ui_logs,
    ("POST", "/ui/bulk-changes/{bulk_change_id}/cancel"): _ui_cancel,
    ("POST", "/ui/bulk-changes/{bulk_change_id}/pause"): _ui_pause,
    ("POST", "/ui/bulk-changes/{bulk_change_id}/resume"): _ui_resume,
    ("POST", "/ui/bulk-changes/{bulk_change_id}/retry"): _ui_retry,
    ("POST", "/ui/bulk-changes/{bulk_change_id}/rerun-billing"): _ui_rerun_billing,
    ("GET", "/ui/providers"): _ui_providers,
    ("POST", "/ui/providers/{provider_id}/callbacks"): _ui_callbacks_register,
    ("POST", "/ui/providers/{provider_id}/callbacks/delete"): _ui_callbacks_delete,
    ("GET", "/ui/upload"): _ui_upload_form,
    ("POST", "/ui/upload"): _ui_upload,
    ("POST", "/ui/confirm"): _ui_confirm,
    ("POST", "/ui/preview/problems.csv"): _ui_problem_report,
    ("POST", "/ui/logout"): _ui_logout,
    ("GET", "/ui/template.csv"): _no_tenant_data("/ui/template.csv?status=active"),
    ("GET", "/metrics"): _metrics,
}


def _routes() -> set[tuple[str, str]]:
    from bulkchange.runtime import build_runtime
    from bulkchange.settings import Settings

    rt = build_runtime(Settings(database_url="sqlite://"), migrate=False)
    try:
        app = create_app(rt, api_settings=ApiSettings())
        found: set[tuple[str, str]] = set()

        def walk(routes: list[object]) -> None:
            for route in routes:
                included = getattr(route, "original_router", None)  # FastAPI >= 0.16x keeps routers nested
                if included is not None:
                    walk(list(included.routes))
                elif isinstance(route, Mount):
                    assert route.path == "/static", f"unexpected mount {route.path}: give it a tenant check"
                elif isinstance(route, APIRoute | Route):
                    found.update((m, route.path) for m in (route.methods or set()) if m != "HEAD")
                else:
                    raise AssertionError(f"unknown route type {type(route).__name__}: teach this test about it")

        walk(list(app.routes))
        return found
    finally:
        rt.close()


ROUTES = sorted(_routes())


def test_every_route_is_covered() -> None:
    """A new endpoint needs a tenant check here (or a reason to be public)."""
    uncovered = set(ROUTES) - PUBLIC - set(TENANT_CHECKS)
    assert not uncovered, f"routes without a tenant isolation test: {sorted(uncovered)}"
    assert not set(TENANT_CHECKS) - set(ROUTES), "a check for a route that no longer exists"


@pytest.mark.parametrize("route", sorted(TENANT_CHECKS), ids=lambda r: f"{r[0]} {r[1]}")
def test_tenant_b_cannot_read_or_change_tenant_a(tenants: Tenants, route: tuple[str, str]) -> None:
    before = tenants.snapshot()
    TENANT_CHECKS[route](tenants)
    assert tenants.snapshot() == before, "tenant B's request changed tenant A's data"


def _concrete(path: str) -> str:
    return path.replace("{bulk_change_id}", "1").replace("{change_id}", "1").replace("{service_provider_id}", "1")


def test_every_non_public_route_refuses_a_request_without_a_valid_key(tenants: Tenants) -> None:
    anonymous = httpx.Client(base_url=tenants.api.base_url, timeout=10)
    wrong = httpx.Client(base_url=tenants.api.base_url, timeout=10, headers={"Authorization": "Bearer bck_" + "A" * 43})
    with anonymous, wrong:
        for method, path in sorted(TENANT_CHECKS):
            for client in (anonymous, wrong):
                r = client.request(method, _concrete(path))
                if method == "GET" and path.startswith("/ui/fragments/"):  # a page script's fetch: told, not sent
                    assert r.status_code == 401 and r.json()["login"] == "/ui/login", (method, path)
                elif method == "GET" and path.startswith("/ui/"):
                    assert r.status_code == 303 and r.headers["location"].startswith("/ui/login"), (method, path)
                else:
                    assert r.status_code == 401, (method, path, r.status_code)
                    assert r.headers["www-authenticate"] == "Bearer"


def test_public_routes_answer_without_a_key(tenants: Tenants) -> None:
    with httpx.Client(base_url=tenants.api.base_url, timeout=10) as anonymous:
        assert anonymous.get("/healthz").status_code == 200
        assert anonymous.get("/readyz").status_code == 200
        assert anonymous.get("/ui/login").status_code == 200
        assert anonymous.get("/static/app.js").status_code == 200


def test_a_key_limited_to_some_providers_and_a_revoked_key(tenants: Tenants) -> None:
    api = tenants.api
    with api.rt.session_factory() as session:
        limited = create_key(session, tenant_id=2, service_provider_ids=[tenants.b_provider])
        with pytest.raises(ValueError, match="do not belong"):
            create_key(session, tenant_id=2, service_provider_ids=[api.provider_id])
    headers = {"Authorization": f"Bearer {limited.key}"}
    providers = httpx.get(f"{api.base_url}/api/v1/service-providers", headers=headers).json()
    assert [p["id"] for p in providers] == [tenants.b_provider]
    with api.rt.session_factory() as session:
        assert revoke_key(session, limited.id)
    assert httpx.get(f"{api.base_url}/api/v1/service-providers", headers=headers).status_code == 401


def test_idempotency_keys_are_per_tenant(tenants: Tenants) -> None:
    """The same Idempotency-Key in two tenants creates two bulk changes (no replay, no 409 across tenants)."""
    api = tenants.api
    key = {"Idempotency-Key": "shared-key-1"}
    a = api.create([activation_row()], headers=key)
    body = {"service_provider_id": tenants.b_provider, "status": "active", "rows": [activation_row()]}
    b = tenants.b.post("/api/v1/bulk-changes", json=body, headers=key)
    assert a.status_code == 201 and b.status_code == 201
    assert a.json()["id"] != b.json()["id"]


# ------------------------------------------------------------------ billing, rate plans, devices: per tenant


def _billing(t: Tenants, name: str, tenant_id: int) -> int:
    """A Rev.io credential of ``tenant_id`` (never called here: submit-time checks only)."""
    with t.api.rt.session_factory.begin() as session:
        row = IntegrationAuthentication(
            tenant_id=tenant_id,
            name=name,
            base_url="https://rev.example/v1",
            username=f"{name}-user",
            client_code=f"{name}-client",
            password=f"{name}-password-value",
            subscription_key=f"{name}-subscription-value",
        )
        session.add(row)
        session.flush()
        return row.id


def _plan(t: Tenants, name: str, tenant_id: int) -> None:
    with t.api.rt.session_factory.begin() as session:
        session.add(CustomerRatePlan(tenant_id=tenant_id, name=name))


def _billed(iccid: str | None = None, **extra: object) -> dict[str, object]:
    return activation_row(iccid, RevCustomerId="4242", ServiceTypeId=7, RevProductId=9, Rate="1", **extra)


def _b_submit(
    t: Tenants, rows: list[dict[str, object]], *, status: str = "active", dry_run: bool = False
) -> httpx.Response:
    body = {"service_provider_id": t.b_provider, "status": status, "rows": rows}
    return t.b.post("/api/v1/bulk-changes", json=body, params={"dry_run": "true"} if dry_run else None)


def _messages(r: httpx.Response, field: str) -> list[str]:
    body = r.json()
    found = body["errors"] if r.status_code == 422 else body["problems"]  # a refusal, or a dry run
    return [p["message"] for p in found if p["field"] == field]


def test_another_tenants_credential_and_rate_plan_are_answered_as_unknown(tenants: Tenants) -> None:
    """Tenant B names tenant A's IntegrationAuthenticationId and customer rate plan: refused exactly as ids and
    names that exist nowhere (nothing created, nothing billed through A's Rev.io account)."""
    a_auth = _billing(tenants, "a-rev", tenant_id=1)
    _plan(tenants, "A-PLAN", tenant_id=1)
    _billing(tenants, "b-rev", tenant_id=2)
    before = tenants.snapshot()

    for dry_run in (False, True):
        theirs = _b_submit(
            tenants, [_billed(IntegrationAuthenticationId=a_auth, CustomerRatePlan="A-PLAN")], dry_run=dry_run
        )
        nowhere = _b_submit(
            tenants, [_billed(IntegrationAuthenticationId=987654, CustomerRatePlan="NO-PLAN")], dry_run=dry_run
        )
        assert theirs.status_code == nowhere.status_code == (200 if dry_run else 422), theirs.text
        assert (
            [m.replace(str(a_auth), "N") for m in _messages(theirs, "IntegrationAuthenticationId")]
            == [m.replace("987654", "N") for m in _messages(nowhere, "IntegrationAuthenticationId")]
            == ["no active Rev.io integration authentication N"]
        )
        assert [m.replace("A-PLAN", "X") for m in _messages(theirs, "CustomerRatePlan")] == [
            m.replace("NO-PLAN", "X") for m in _messages(nowhere, "CustomerRatePlan")
        ]
        assert "A-PLAN" not in theirs.text.replace("'A-PLAN'", "")  # named back only as the row's own value
    assert tenants.snapshot() == before


def test_unknown_rate_plan_error_lists_only_the_tenants_own_plans(tenants: Tenants) -> None:
    _plan(tenants, "A-SECRET-PLAN", tenant_id=1)
    _plan(tenants, "B-PLAN", tenant_id=2)
    r = _b_submit(tenants, [activation_row(CustomerRatePlan="NO-SUCH")])
    assert r.status_code == 422
    assert _messages(r, "CustomerRatePlan") == ["unknown customer rate plan 'NO-SUCH' (known: B-PLAN)"]
    assert "A-SECRET-PLAN" not in r.text
    # Tenant A sees its own list, and B's plan name is A's unknown.
    a = tenants.api.create([activation_row(CustomerRatePlan="B-PLAN")])
    assert a.status_code == 422 and "B-PLAN" not in a.text.replace("'B-PLAN'", "")
    assert "A-SECRET-PLAN" in a.text


def test_another_tenants_device_is_answered_as_an_unknown_device(tenants: Tenants) -> None:
    """A dry run (REST and dashboard) and a submission with tenant A's ICCID answer exactly as for an ICCID
    nobody has: no "belongs to another service provider (id)", no current status, no warnings of A's."""
    theirs, nowhere = new_iccid(), new_iccid()
    tenants.api.seed_device(theirs, "active")  # tenant A's device, known and synced

    def same(r_theirs: httpx.Response, r_nowhere: httpx.Response) -> None:
        assert r_theirs.status_code == r_nowhere.status_code
        assert r_theirs.text.replace(theirs, "ICCID") == r_nowhere.text.replace(nowhere, "ICCID")

    same(
        _b_submit(tenants, [{"ICCID": theirs}], status="suspend", dry_run=True),
        _b_submit(tenants, [{"ICCID": nowhere}], status="suspend", dry_run=True),
    )
    preview = _b_submit(tenants, [{"ICCID": theirs}], status="suspend", dry_run=True).json()
    assert preview["devices"][0]["current_status"] is None
    assert "another service provider" not in json.dumps(preview)

    page = tenants.b.post(
        "/ui/upload",
        files={"file": ("d.csv", f"ICCID\n{theirs}\n".encode(), "text/csv")},
        data=_form(tenants, service_provider_id=tenants.b_provider, status="suspend"),
    )
    assert page.status_code == 200 and "another service provider" not in page.text and "Active" not in page.text

    r_theirs = _b_submit(tenants, [{"ICCID": theirs}], status="suspend")
    r_nowhere = _b_submit(tenants, [{"ICCID": nowhere}], status="suspend")
    assert r_theirs.status_code == r_nowhere.status_code
    if r_theirs.status_code == 422:
        same(r_theirs, r_nowhere)

    # Within one tenant the operator is still told which of its providers holds the device.
    a_other = tenants.api.create([{"ICCID": theirs}], status="suspend", dry_run="true")
    assert a_other.status_code == 200 and "another service provider" not in a_other.text  # A's own device
    with tenants.api.rt.session_factory() as session:
        b_second = add_provider(
            session,
            name="other-tenant-2",
            base_url=tenants.api.carrier.base_url,
            client_id="b-client",
            client_secret="b-secret-value",
            username="b-user",
            password="b-password-value",
            account="0000999999-00002",
            tenant_id=2,
        )
    b_device = new_iccid()
    with tenants.api.rt.session_factory.begin() as session:
        session.add(Device(service_provider_id=b_second, iccid=b_device, device_status_id=17, status="active"))
    r = _b_submit(tenants, [{"ICCID": b_device}], status="suspend", dry_run=True)
    assert _messages(r, "ICCID") == [f"device belongs to another service provider ({b_second})"]


def test_a_single_credential_is_the_default_of_its_own_tenant_only(tenants: Tenants) -> None:
    """With exactly one Rev.io credential (tenant A's), a tenant B row without IntegrationAuthenticationId is
    refused with a per-row message; it is never billed through A's credential."""
    a_auth = _billing(tenants, "a-rev", tenant_id=1)

    r = _b_submit(tenants, [_billed(), _billed()])
    assert r.status_code == 422
    assert [(p["row"], p["field"]) for p in r.json()["errors"]] == [
        (1, "IntegrationAuthenticationId"),
        (2, "IntegrationAuthenticationId"),
    ]
    assert _messages(r, "IntegrationAuthenticationId")[0] == (
        "billing needs a Rev.io integration authentication: none is configured for this tenant "
        "(`bulkchange billing add --tenant`)"
    )

    # Each tenant's only credential is its own rows' default.
    b_auth = _billing(tenants, "b-rev", tenant_id=2)
    b = _b_submit(tenants, [_billed()])
    a = tenants.api.create([_billed()])
    assert b.status_code == a.status_code == 201, (b.text, a.text)
    with tenants.api.rt.session_factory() as session:
        stored = {
            c.bulk_change_id: json.loads(c.change_request).get("IntegrationAuthenticationId")
            for c in session.execute(select(M2MDeviceChange)).scalars()
        }
    assert stored[b.json()["id"]] == b_auth and stored[a.json()["id"]] == a_auth

    # Two credentials in the tenant: the row must name one.
    _billing(tenants, "b-rev-2", tenant_id=2)
    two = _b_submit(tenants, [_billed()])
    assert two.status_code == 422
    assert _messages(two, "IntegrationAuthenticationId") == [
        "billing needs a Rev.io integration authentication: this tenant has 2, name one in IntegrationAuthenticationId"
    ]
