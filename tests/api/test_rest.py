"""The REST API over real HTTP: the app served on loopback, the real simulator, real SQLite, the real worker."""

from __future__ import annotations

import csv
import io
import uuid

from sqlalchemy import func, select

from bulkchange.engine import changes as ch
from bulkchange.store.tables import ApiIdempotencyKey, DeviceBulkChange, M2MDeviceChange, utcnow

from .conftest import Api, activation_row, new_iccid


def _bulk_count(api: Api) -> int:
    with api.rt.session_factory() as session:
        return int(session.execute(select(func.count()).select_from(DeviceBulkChange)).scalar_one())


def test_create_from_rows_runs_to_processed_with_counts_logs_and_export(api: Api) -> None:
    rows = [activation_row() for _ in range(4)]
    r = api.create(rows)
    assert r.status_code == 201, r.text
    created = r.json()
    bulk_id = created["id"]
    assert r.headers["Location"] == f"/api/v1/bulk-changes/{bulk_id}"
    assert created["total"] == 4 and created["created_by"] == "api"

    done = api.wait_processed(bulk_id)
    assert done["counts"] == {"PROCESSED": 4}
    assert done["finished"] == 4 and done["progress"] == 1.0 and done["has_errors"] is False

    listed = api.http.get("/api/v1/bulk-changes").json()
    assert listed["total"] == 1 and listed["items"][0]["id"] == bulk_id
    assert listed["items"][0]["counts"] == {"PROCESSED": 4}
    assert api.http.get("/api/v1/bulk-changes", params={"status": "PROCESSING"}).json()["total"] == 0

    page = api.http.get(f"/api/v1/bulk-changes/{bulk_id}/changes", params={"limit": 3}).json()
    assert page["total"] == 4 and len(page["items"]) == 3
    first = page["items"][0]
    assert first["plan"] == ["ADD", "ACTIVATE"] and first["status"] == "PROCESSED"
    assert first["msisdn"] and first["ip_address"]
    descriptions = [entry["description"] for entry in first["logs"]]
    assert descriptions, "every carrier call writes a log entry"
    rest = api.http.get(f"/api/v1/bulk-changes/{bulk_id}/changes", params={"limit": 3, "offset": 3}).json()
    assert len(rest["items"]) == 1
    assert {c["iccid"] for c in page["items"] + rest["items"]} == {row["ICCID"] for row in rows}
    no_logs = api.http.get(f"/api/v1/bulk-changes/{bulk_id}/changes", params={"include_logs": "false"}).json()
    assert no_logs["items"][0]["logs"] is None
    filtered = api.http.get(f"/api/v1/bulk-changes/{bulk_id}/changes", params={"status": ["ERROR", "API_FAILED"]})
    assert filtered.json()["total"] == 0
    one = api.http.get(f"/api/v1/bulk-changes/{bulk_id}/changes/{first['id']}").json()
    assert one["logs"] == first["logs"]

    export = api.http.get(f"/api/v1/bulk-changes/{bulk_id}/export.csv")
    assert export.status_code == 200 and export.headers["content-type"].startswith("text/csv")
    table = list(csv.DictReader(io.StringIO(export.text)))
    assert len(table) == 4
    assert {row["ICCID"] for row in table} == {row["ICCID"] for row in rows}
    assert all(row["Status"] == "PROCESSED" and row["MSISDN"] for row in table)


def test_idempotency_key_same_body_same_bulk_change_other_body_409(idle_api: Api) -> None:
    api = idle_api
    key = str(uuid.uuid4())
    rows = [activation_row()]
    first = api.create(rows, headers={"Idempotency-Key": key})
    assert first.status_code == 201
    again = api.create(rows, headers={"Idempotency-Key": key})
    assert again.status_code == 201
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]
    other = api.create([activation_row()], headers={"Idempotency-Key": key})
    assert other.status_code == 409
    assert "different request" in other.json()["detail"]
    assert _bulk_count(api) == 1
    # Without a key, the same body creates again? No: the device is busy in the first one (validation).
    refused = api.create(rows)
    assert refused.status_code == 422
    assert "unfinished change" in refused.json()["errors"][0]["message"]


def test_refused_submission_releases_the_key_and_creates_nothing(idle_api: Api) -> None:
    api = idle_api
    key = "refused-then-fixed"
    bad = activation_row(ICCID="8914800000000000001")  # wrong check digit
    r = api.create([activation_row(), bad], headers={"Idempotency-Key": key})
    assert r.status_code == 422
    body = r.json()
    assert body["rows"] == 2
    assert [(p["row"], p["field"]) for p in body["errors"]] == [(2, "ICCID")]
    assert _bulk_count(api) == 0
    with api.rt.session_factory() as session:
        assert session.get(ApiIdempotencyKey, key) is None
    fixed = api.create([activation_row()], headers={"Idempotency-Key": key})
    assert fixed.status_code == 201


def test_dry_run_preview_plans_and_warns_without_writing(idle_api: Api) -> None:
    api = idle_api
    active = new_iccid()
    api.seed_device(active, "active")
    busy_line = new_iccid()
    api.seed_device(busy_line, "active")
    api.record_recent_actions(busy_line, 5)
    already = new_iccid()
    api.seed_device(already, "active")
    rows = [
        activation_row(),
        {"ICCID": active, "Status": "deactive"},
        {"ICCID": busy_line, "Status": "suspend"},
        {"ICCID": "12345", "Status": "active"},
        {"ICCID": active, "Status": "deactive", "EtfWaiver": "true"},
    ]
    r = api.create(rows, status="active", dry_run="true")
    assert r.status_code == 200, r.text
    p = r.json()
    assert p["dry_run"] is True and p["ok"] is False and p["rows"] == 5
    devices = {d["row"]: d for d in p["devices"]}
    assert devices[1]["plan"] == ["ADD", "ACTIVATE"] and devices[1]["ok"] and devices[1]["warnings"] == []
    deactivate = devices[2]
    assert deactivate["plan"] == ["DEACTIVATE"] and deactivate["current_status"] == "active"
    assert any("early-termination fee" in w for w in deactivate["warnings"])
    assert any("MDN" in w for w in deactivate["warnings"])
    assert any("daily action budget" in w for w in devices[3]["warnings"])
    assert not devices[4]["ok"] and devices[4]["problems"]
    # Row 5 repeats row 2's ICCID: refused as a duplicate; it asked for an ETF waiver, so only the MDN warning.
    assert any("duplicate" in prob for prob in devices[5]["problems"])
    assert not any("early-termination" in w for w in devices[5]["warnings"])
    assert p["planned_operations"] == {"ADD": 1, "ACTIVATE": 1, "DEACTIVATE": 1, "SUSPEND": 1}
    assert _bulk_count(api) == 5  # only the bulk changes of record_recent_actions: the preview wrote nothing
    # A device already in the target state (with IsIgnoreCurrentStatus, so the transition is allowed).
    r = api.http.post(
        "/api/v1/bulk-changes",
        params={"dry_run": "true"},
        json={
            "service_provider_id": api.provider_id,
            "status": "active",
            "ignore_current_status": True,
            "rows": [{"ICCID": already, "ServicePlan": "M2M_4G", "MdnZipCode": "98801"}],
        },
    )
    only = r.json()
    assert only["ok"] is True and only["devices"][0]["plan"] == ["ACTIVATE"]
    assert any("already active" in w for w in only["devices"][0]["warnings"])


def test_upload_csv_creates_and_refuses_bad_files(api: Api) -> None:
    rows = [activation_row() for _ in range(3)]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    data = buffer.getvalue().encode()
    form = {"service_provider_id": str(api.provider_id), "status": "active"}
    preview = api.http.post(
        "/api/v1/bulk-changes/upload", params={"dry_run": "true"}, data=form, files={"file": ("d.csv", data)}
    )
    assert preview.status_code == 200 and preview.json()["ok"] is True
    assert _bulk_count(api) == 0
    r = api.http.post(
        "/api/v1/bulk-changes/upload",
        data=form,
        files={"file": ("devices.csv", data, "text/csv")},
        headers={"Idempotency-Key": "upload-1"},
    )
    assert r.status_code == 201, r.text
    replay = api.http.post(
        "/api/v1/bulk-changes/upload",
        data=form,
        files={"file": ("devices.csv", data, "text/csv")},
        headers={"Idempotency-Key": "upload-1"},
    )
    assert replay.status_code == 201 and replay.json()["id"] == r.json()["id"]
    api.wait_processed(r.json()["id"])

    unreadable = api.http.post(
        "/api/v1/bulk-changes/upload", data=form, files={"file": ("x.csv", b"\xff\xfe\x00garbag")}
    )
    assert unreadable.status_code == 400 and "not UTF-16 text" in unreadable.json()["detail"]
    bad_json = api.http.post("/api/v1/bulk-changes/upload", data=form, files={"file": ("x.json", b"{not json")})
    assert bad_json.status_code == 400
    refused = api.http.post(
        "/api/v1/bulk-changes/upload", data=form, files={"file": ("x.csv", b"ICCID,ServicePlan\n123,M2M\n")}
    )
    assert refused.status_code == 422 and refused.json()["errors"]


def test_cancel_only_changes_not_yet_sent(idle_api: Api) -> None:
    api = idle_api
    bulk_id = api.create([activation_row() for _ in range(4)]).json()["id"]
    # A worker claims one change (it is being sent): that one cannot be cancelled.
    with api.rt.session_factory() as session:
        claimed = ch.claim(session, bulk_id, worker="w", lease_s=60, now=utcnow(), limit=1)
    assert len(claimed) == 1
    ids = [c["id"] for c in api.http.get(f"/api/v1/bulk-changes/{bulk_id}/changes").json()["items"]]
    some = api.http.post(f"/api/v1/bulk-changes/{bulk_id}/cancel", json={"change_ids": [claimed[0].id, ids[1]]})
    assert some.status_code == 200
    assert some.json()["cancelled"] == [ids[1]] and some.json()["not_cancellable"] == 1
    rest = api.http.post(f"/api/v1/bulk-changes/{bulk_id}/cancel")
    body = rest.json()
    assert sorted(body["cancelled"]) == sorted(set(ids) - {claimed[0].id, ids[1]})
    assert body["not_cancellable"] == 2
    assert body["bulk_change"]["counts"] == {"CANCELLED": 3, "SENDING": 1}
    cancelled = api.http.get(f"/api/v1/bulk-changes/{bulk_id}/changes", params={"status": "CANCELLED"}).json()
    assert cancelled["total"] == 3
    assert all(e["description"].startswith("Cancel") for c in cancelled["items"] for e in c["logs"])
    assert api.http.post(f"/api/v1/bulk-changes/{bulk_id}/cancel").json()["cancelled"] == []
    # A cancelled device is free for a new bulk change.
    again = api.create(
        [
            {
                "ICCID": cancelled["items"][0]["iccid"],
                "IMEI": cancelled["items"][0]["imei"],
                "ServicePlan": "M2M_4G",
                "MdnZipCode": "98801",
            }
        ]
    )
    assert again.status_code == 201


def test_retry_failed_creates_a_linked_bulk_change_of_only_the_failed(api: Api) -> None:
    good = activation_row()
    failing = activation_row()
    api.seed_device(failing["ICCID"], "active", imei=failing["IMEI"], local=False)  # carrier: DeviceAlreadyActive
    bulk_id = api.create([good, failing]).json()["id"]
    done = api.wait_for(bulk_id, lambda b: b["finished"] == b["total"] and b["processed_date"])
    assert done["counts"] == {"ERROR": 1, "PROCESSED": 1}
    assert (done["status"], done["has_errors"]) == ("PARTIAL", True)

    r = api.http.post(f"/api/v1/bulk-changes/{bulk_id}/retry", headers={"Idempotency-Key": "retry-1"})
    assert r.status_code == 201, r.text
    retry = r.json()
    assert retry["retry_of_bulk_change_id"] == bulk_id and retry["total"] == 1
    changes = api.http.get(f"/api/v1/bulk-changes/{retry['id']}/changes").json()["items"]
    assert [c["iccid"] for c in changes] == [failing["ICCID"]]
    replay = api.http.post(f"/api/v1/bulk-changes/{bulk_id}/retry", headers={"Idempotency-Key": "retry-1"})
    assert replay.status_code == 201 and replay.json()["id"] == retry["id"]
    again = api.wait_for(retry["id"], lambda b: b["finished"] == b["total"] and b["processed_date"])
    assert (again["status"], again["has_errors"]) == ("ERROR", True)  # the one device failed again: none done
    # Each failed device is retried once from a given bulk change.
    twice = api.http.post(f"/api/v1/bulk-changes/{bulk_id}/retry")
    assert twice.status_code == 409
    not_failed = api.http.post(f"/api/v1/bulk-changes/{bulk_id}/retry", json={"statuses": ["PROCESSED"]})
    assert not_failed.status_code == 422
    with api.rt.session_factory() as session:
        linked = (
            session.execute(select(DeviceBulkChange.id).where(DeviceBulkChange.retry_of_bulk_change_id == bulk_id))
            .scalars()
            .all()
        )
        assert list(linked) == [retry["id"]]
        assert (
            session.execute(
                select(func.count()).select_from(M2MDeviceChange).where(M2MDeviceChange.iccid == good["ICCID"])
            ).scalar_one()
            == 1
        )


def test_not_found_and_service_providers(api: Api) -> None:
    assert api.http.get("/api/v1/bulk-changes/999").status_code == 404
    assert api.http.get("/api/v1/bulk-changes/999/changes").status_code == 404
    assert api.http.get("/api/v1/bulk-changes/999/export.csv").status_code == 404
    assert api.http.post("/api/v1/bulk-changes/999/cancel").status_code == 404
    assert api.http.post("/api/v1/bulk-changes/999/retry").status_code == 404
    assert api.http.get("/api/v1/bulk-changes/1/changes/5").status_code == 404
    providers = api.http.get("/api/v1/service-providers").json()
    assert providers == [{"id": api.provider_id, "name": "acme", "callbacks": True}]
    missing = api.http.post(
        "/api/v1/bulk-changes", json={"service_provider_id": 42, "status": "active", "rows": [activation_row()]}
    )
    # Not a service provider of this key's tenant (here: none at all): refused before anything is read.
    assert missing.status_code == 403
