"""SQL only through bound parameters: injection strings through every text input change nothing they
should not — CSV cells, API JSON fields, query parameters, dashboard form fields, callback bodies."""

from __future__ import annotations

import base64
import io
import json

import httpx
from sqlalchemy import func, inspect, select, text

from bulkchange.store.tables import Base, DeviceBulkChange, M2MDeviceChange, ServiceProvider

from .conftest import CALLBACK_PASSWORD, CALLBACK_USER, Api, activation_row

INJECTIONS = [
    '\'; DROP TABLE "M2M_DeviceChange"; --',
    "' OR '1'='1",
    '1; DELETE FROM "DeviceBulkChange" WHERE 1=1; --',
    '" OR ""="',
    '1) UNION SELECT "ClientSecret", "Password" FROM "ThingSpaceAuthentication" --',
    "%' AND 1=0 UNION SELECT name FROM sqlite_master --",
    'Robert\'); DROP TABLE "ServiceProvider";--',
    "\\'; SELECT pg_sleep(5); --",
    "${jndi:ldap://x}",
    "<script>alert(1)</script>",
]


def _state(api: Api) -> tuple[set[str], int, int, int]:
    with api.rt.db.connect() as conn:
        tables = set(inspect(conn).get_table_names())
        counts = [
            int(conn.execute(select(func.count()).select_from(t)).scalar_one())
            for t in (ServiceProvider, DeviceBulkChange, M2MDeviceChange)
        ]
        conn.execute(text("SELECT 1"))
    return tables, counts[0], counts[1], counts[2]


def test_injection_strings_through_every_text_input(idle_api: Api) -> None:
    api = idle_api
    tables, providers, _bulks, _changes = _state(api)
    assert set(Base.metadata.tables) <= tables
    created = 0
    for i, evil in enumerate(INJECTIONS):
        # API JSON fields: every column of a row, the status, unknown keys (refused, named in the answer).
        row = activation_row(ReasonCode=evil, SkuNumber=evil, RevAccountNumber=evil)
        for body in (
            {"service_provider_id": api.provider_id, "status": "active", "rows": [row]},
            {"service_provider_id": api.provider_id, "status": evil, "rows": [activation_row(ICCID=evil)]},
            {"service_provider_id": api.provider_id, "status": "active", "rows": [activation_row(**{evil: evil})]},
        ):
            r = api.http.post("/api/v1/bulk-changes", json=body, headers={"Idempotency-Key": f"{evil}-{i}"})
            assert r.status_code in (201, 409, 422), (evil, r.status_code, r.text[:300])
            created += r.status_code == 201
            assert api.http.post("/api/v1/bulk-changes", json=body, params={"dry_run": "true"}).status_code < 500

        # CSV cells (API upload and the dashboard's preview / confirm).
        buffer = io.StringIO()
        buffer.write("ICCID,IMEI,ServicePlan,MdnZipCode,ReasonCode\n")
        buffer.write(f'"{evil.replace(chr(34), chr(34) * 2)}",{row["IMEI"]},"{evil.replace(chr(34), "")}",98801,x\n')
        csv_bytes = buffer.getvalue().encode()
        r = api.http.post(
            "/api/v1/bulk-changes/upload",
            files={"file": (f"{evil}.csv", csv_bytes, "text/csv")},
            data={"service_provider_id": str(api.provider_id), "status": "active"},
        )
        assert r.status_code in (201, 400, 409, 422), (evil, r.status_code, r.text[:300])
        preview = api.http.post(
            "/ui/upload",
            files={"file": (f"{evil}.csv", csv_bytes, "text/csv")},
            data={"service_provider_id": str(api.provider_id), "status": evil},
        )
        assert preview.status_code < 500 and "<script>alert(1)</script>" not in preview.text
        confirm = api.http.post(
            "/ui/confirm",
            data={
                "payload": base64.b64encode(csv_bytes).decode(),
                "filename": evil,
                "service_provider_id": str(api.provider_id),
                "status": evil,
                "key": evil,
            },
        )
        assert confirm.status_code < 500

        # Query parameters.
        for params in ({"iccid": evil[:30]}, {"status": evil}, {"service_provider_id": evil}, {"offset": evil}):
            assert api.http.get("/api/v1/bulk-changes", params=params).status_code in (200, 422)
            assert api.http.get("/api/v1/bulk-changes/1/changes", params=params).status_code in (200, 404, 422)
            assert api.http.get("/ui/bulk-changes/1", params=params).status_code in (200, 400, 404, 422)
        assert api.http.get(f"/api/v1/bulk-changes/{evil}").status_code in (404, 422)

        # A callback body (the receiver's JSON goes through the engine into ThingSpaceCallBackResponseLog).
        callback = {
            "username": CALLBACK_USER,
            "password": CALLBACK_PASSWORD,
            "requestId": evil,
            "deviceIds": [{"id": evil, "kind": "Iccid"}],
            "status": evil,
        }
        r = httpx.post(f"{api.base_url}/callbacks/thingspace/{api.provider_id}", json=callback, timeout=10)
        assert r.status_code in (200, 400), (evil, r.status_code)
        # Login form.
        assert httpx.post(f"{api.base_url}/ui/login", data={"key": evil}, timeout=10).status_code == 401

    after_tables, after_providers, after_bulks, _after_changes = _state(api)
    assert after_tables == tables, "no table dropped or created"
    assert after_providers == providers
    listed = api.http.get("/api/v1/bulk-changes", params={"limit": 500}).json()
    assert listed["total"] == after_bulks, "every bulk change is still there and readable"
    # A value that was accepted is stored verbatim (bound, not interpreted).
    with api.rt.session_factory() as session:
        requests = [json.loads(c) for c in session.execute(select(M2MDeviceChange.change_request)).scalars()]
    stored = json.dumps(requests)
    assert created > 0, "some injection strings were accepted as values"
    assert any(evil in stored or json.dumps(evil)[1:-1] in stored for evil in INJECTIONS)
