"""REST by convention, over real HTTP: every error is RFC 9457 problem details (``application/problem+json``
with type, title, status, detail and ``errors[]``), filters match whatever the case, an Idempotency-Key
replay answers as the original did (201) with ``Idempotent-Replayed: true``, every timestamp carries its
time zone (the CSV export's too), and the API's description is readable without a key."""

from __future__ import annotations

import csv
import io
from datetime import datetime
from typing import Any

import httpx

from bulkchange.store.tables import M2MDeviceChange, utcnow

from .conftest import Api, activation_row

PROBLEM = "application/problem+json"


def _problem(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith(PROBLEM), r.headers
    body: dict[str, Any] = r.json()
    assert {"type", "title", "status", "detail", "errors"} <= set(body), body
    assert body["status"] == status and isinstance(body["detail"], str) and body["title"]
    return body


def test_every_error_is_a_problem_document(idle_api: Api) -> None:
    api = idle_api
    refused = _problem(api.create([activation_row(), activation_row(ICCID="8914800000000000001")]), 422)
    assert refused["type"].endswith("refused") and refused["rows"] == 2
    assert [(e["row"], e["field"]) for e in refused["errors"]] == [(2, "ICCID")]

    upload = api.http.post(
        "/api/v1/bulk-changes/upload",
        data={"service_provider_id": str(api.provider_id), "status": "active"},
        files={"file": ("d.csv", b"ICCID,IMEI,ServicePln,MdnZipCode\r\n89148000000800784259,1,M2M_4G,98801\r\n")},
    )
    file_refused = _problem(upload, 422)
    assert [(e["row"], e["field"]) for e in file_refused["errors"]] == [(1, "ServicePln")]

    invalid = _problem(api.http.post("/api/v1/bulk-changes", json={"status": "active"}), 422)  # FastAPI's own
    assert invalid["type"].endswith("invalid-request")
    assert {e["field"] for e in invalid["errors"]} == {"body.service_provider_id", "body.rows"}

    not_found = _problem(api.http.get("/api/v1/bulk-changes/999999"), 404)  # HTTPException
    assert not_found["detail"] == "no bulk change 999999" and not_found["type"] == "about:blank"
    bad_id = _problem(api.http.get("/api/v1/bulk-changes/0"), 422)
    assert bad_id["errors"][0]["field"] == "path.bulk_change_id"

    no_key = _problem(httpx.get(f"{api.base_url}/api/v1/bulk-changes"), 401)  # the security middleware
    assert no_key["title"] == "Unauthorized"
    unreadable = api.http.post(
        "/api/v1/bulk-changes/upload",
        data={"service_provider_id": str(api.provider_id), "status": "active"},
        files={"file": ("old.xls", b"\xd0\xcf\x11\xe0" + b"\x00" * 64)},
    )
    assert _problem(unreadable, 400)["type"].endswith("unreadable-file")
    callback = api.http.post(f"/callbacks/thingspace/{api.provider_id}", content=b"not json")
    assert _problem(callback, 400)["detail"] == "body is not JSON"


def test_the_openapi_document_says_problem_json_for_errors(idle_api: Api) -> None:
    spec = httpx.get(f"{idle_api.base_url}/openapi.json").json()
    create = spec["paths"]["/api/v1/bulk-changes"]["post"]["responses"]
    assert set(create["422"]["content"]) == {PROBLEM}
    assert set(create["401"]["content"]) == {PROBLEM}
    assert "HTTPValidationError" not in spec["components"]["schemas"]


def test_filters_match_whatever_the_case(idle_api: Api) -> None:
    api = idle_api
    bulk_id = api.create([activation_row() for _ in range(2)]).json()["id"]
    for spelling in ("NEW", "new", "New"):
        listed = api.http.get("/api/v1/bulk-changes", params={"status": spelling})
        assert listed.status_code == 200, listed.text
        assert [b["id"] for b in listed.json()["items"]] == [bulk_id], spelling
    changes = api.http.get(f"/api/v1/bulk-changes/{bulk_id}/changes", params={"status": ["ready", "Error"]})
    assert changes.status_code == 200, changes.text
    assert changes.json()["total"] == 2
    assert _problem(api.http.get("/api/v1/bulk-changes", params={"status": "nope"}), 422)["errors"]


def test_an_idempotency_replay_answers_like_the_original(idle_api: Api) -> None:
    api = idle_api
    rows = [activation_row()]
    first = api.create(rows, headers={"Idempotency-Key": "k-1"})
    again = api.create(rows, headers={"Idempotency-Key": "k-1"})
    assert first.status_code == again.status_code == 201, again.text
    assert again.headers["Idempotent-Replayed"] == "true" and "Idempotent-Replayed" not in first.headers
    assert again.headers["Location"] == first.headers["Location"]
    assert again.json()["id"] == first.json()["id"]


def _has_zone(text: str) -> bool:
    return datetime.fromisoformat(text).tzinfo is not None


def test_every_timestamp_has_a_time_zone_the_export_too(idle_api: Api) -> None:
    api = idle_api
    bulk = api.create([activation_row()]).json()
    assert _has_zone(bulk["created_date"])
    with api.rt.session_factory.begin() as session:
        for change in session.query(M2MDeviceChange).filter_by(bulk_change_id=bulk["id"]):
            change.processed_date = utcnow()
    change = api.http.get(f"/api/v1/bulk-changes/{bulk['id']}/changes").json()["items"][0]
    assert _has_zone(change["processed_date"])
    export = api.http.get(f"/api/v1/bulk-changes/{bulk['id']}/export.csv")
    (row,) = list(csv.DictReader(io.StringIO(export.text)))
    assert row["ProcessedDate"] and _has_zone(row["ProcessedDate"]), row


def test_the_api_description_is_public_and_data_is_not(idle_api: Api) -> None:
    base = idle_api.base_url
    spec = httpx.get(f"{base}/openapi.json")
    assert spec.status_code == 200 and "/api/v1/bulk-changes" in spec.json()["paths"]
    docs = httpx.get(f"{base}/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    assert httpx.get(f"{base}/api/v1/bulk-changes").status_code == 401
    assert httpx.get(f"{base}/api/v1/service-providers").status_code == 401
