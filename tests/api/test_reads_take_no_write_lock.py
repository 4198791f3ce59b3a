"""Reading takes no write lock: on SQLite, every page, API read, export and scrape an operator makes while a
run goes on reads a snapshot, so none of them waits for the workers' transactions or holds up the callback
receiver's acknowledgements (counted by the write-lock tallies on /metrics)."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from .conftest import Api, activation_row


def _write_transactions(api: Api) -> float:
    """Every SQLite write transaction this process has begun, from /metrics (the scrape itself included)."""
    return sum(
        sample.value
        for family in text_string_to_metric_families(api.http.get("/metrics").text)
        for sample in family.samples
        if sample.name == "bulkchange_sqlite_write_transactions_total"
    )


def test_pages_api_reads_exports_and_scrapes_take_no_write_lock(idle_api: Api) -> None:
    api = idle_api
    bulk_id = api.create([activation_row() for _ in range(2)]).json()["id"]
    change_id = api.http.get(f"/api/v1/bulk-changes/{bulk_id}/changes").json()["items"][0]["id"]
    reads = [
        "/api/v1/bulk-changes",
        f"/api/v1/bulk-changes/{bulk_id}",
        f"/api/v1/bulk-changes/{bulk_id}/changes",
        f"/api/v1/bulk-changes/{bulk_id}/changes/{change_id}",
        f"/api/v1/bulk-changes/{bulk_id}/export.csv",
        "/api/v1/service-providers",
        "/ui/",
        f"/ui/bulk-changes/{bulk_id}",
        f"/ui/fragments/bulk-changes/{bulk_id}",
        f"/ui/fragments/bulk-changes/{bulk_id}/changes/{change_id}/logs",
        "/ui/providers",
        "/ui/upload",
    ]
    before = _write_transactions(api)
    assert before > 0, "the submission was a write transaction"
    for path in reads:
        response = api.http.get(path)
        assert response.status_code == 200, path
    assert _write_transactions(api) == before
