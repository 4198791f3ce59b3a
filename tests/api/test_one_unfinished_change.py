"""One unfinished change per device, over real HTTP on SQLite and PostgreSQL.

The same file submitted by several clients at once (no Idempotency-Key) creates exactly one bulk change;
every other submission is refused row by row, naming the bulk change that holds each device. The work then
makes one carrier action and one Rev.io service per device (counted by the simulator and the Rev.io
stand-in, not by our own tables).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from bulkchange.engine.submit import RowValidator
from bulkchange.engine.worker import run_worker
from bulkchange.integrations.kinds import integrations_for
from bulkchange.integrations.settings import IntegrationSettings
from bulkchange.simulator.revio import RevioStandIn
from bulkchange.simulator.server import serve_in_thread
from bulkchange.store.tables import IntegrationAuthentication

from .conftest import Api, activation_row, make_api

SUBMITTERS = 4
ROWS = 300


@dataclass
class Billed:
    api: Api
    revio: RevioStandIn
    auth_id: int

    def rows(self, n: int) -> list[dict[str, Any]]:
        """Activation rows that are billed after success (a Rev.io service per device)."""
        return [
            activation_row(
                RevCustomerId="4242",
                ServiceTypeId=7,
                ProviderId=3,
                ActivatedDate="2026-12-01",
                IntegrationAuthenticationId=self.auth_id,
            )
            for _ in range(n)
        ]

    def body(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        return {"service_provider_id": self.api.provider_id, "status": "active", "rows": rows}

    def work(self) -> None:
        """The worker until nothing is left: carrier steps, the deferred check, billing."""
        asyncio.run(run_worker(self.api.rt.engine, until_idle=True, poll_s=0.02))


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def billed(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Billed]:
    """The served application (no worker inside) on SQLite or a fresh PostgreSQL database, with billing."""
    db_url = None if request.param == "sqlite" else str(request.getfixturevalue("pg_empty_url"))
    revio = RevioStandIn()
    with serve_in_thread(revio.app) as revio_server:
        for api in make_api(tmp_path, with_worker=False, db_url=db_url):
            api.rt.use_integrations(
                integrations_for(
                    api.rt.ctx,
                    IntegrationSettings(billing_retry_base_s=0.05, billing_retry_cap_s=0.2, webhook_url=None),
                )
            )
            with api.rt.session_factory.begin() as session:
                auth = IntegrationAuthentication(
                    tenant_id=1,
                    name="rev",
                    base_url=f"{revio_server.base_url}/v1",
                    username=revio.config.username,
                    client_code=revio.config.client_code,
                    password=revio.config.password,
                    subscription_key=revio.config.subscription_key,
                )
                session.add(auth)
                session.flush()
                auth_id = auth.id
            yield Billed(api, revio, auth_id)


def _post_at_once(b: Billed, body: dict[str, Any], n: int) -> list[httpx.Response]:
    """``n`` clients, each on its own connection, released together."""
    start = threading.Barrier(n)

    def one(_: int) -> httpx.Response:
        headers = {"Authorization": f"Bearer {b.api.key}"}
        with httpx.Client(base_url=b.api.base_url, timeout=120, headers=headers) as http:
            start.wait()
            return http.post("/api/v1/bulk-changes", json=body)

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(one, range(n)))


def _busy_refusal(rows: list[dict[str, Any]], holder: int) -> list[dict[str, Any]]:
    """The report a submission gets when every device is held by bulk change ``holder``."""
    message = f"device already has an unfinished change in bulk change {holder}"
    return [{"row": i, "field": "ICCID", "message": message, "iccid": r["ICCID"]} for i, r in enumerate(rows, 1)]


def _changes(api: Api, bulk_id: int) -> list[dict[str, Any]]:
    page = api.http.get(
        f"/api/v1/bulk-changes/{bulk_id}/changes", params={"limit": 500, "include_logs": "false"}
    ).json()
    assert page["total"] == len(page["items"])
    return list(page["items"])


def test_concurrent_submissions_of_one_file_create_one_bulk_change_and_bill_each_device_once(billed: Billed) -> None:
    b, api = billed, billed.api
    rows = b.rows(ROWS)

    answers = _post_at_once(b, b.body(rows), SUBMITTERS)

    assert sorted(r.status_code for r in answers) == [201] + [422] * (SUBMITTERS - 1), [r.text[:300] for r in answers]
    (winner,) = [r.json()["id"] for r in answers if r.status_code == 201]
    for refused in (r.json() for r in answers if r.status_code == 422):
        assert refused["rows"] == ROWS and refused["errors_omitted"] == 0
        assert refused["errors"] == _busy_refusal(rows, winner)
    assert api.http.get("/api/v1/bulk-changes").json()["total"] == 1

    b.work()

    done = api.http.get(f"/api/v1/bulk-changes/{winner}").json()
    assert done["counts"] == {"PROCESSED": ROWS}
    changes = _changes(api, winner)
    assert {c["iccid"] for c in changes} == {r["ICCID"] for r in rows}
    actions = api.sim.counters.actions
    for change in changes:
        assert actions[change["iccid"]].get("activate") == 1, actions[change["iccid"]]
        assert change["additional_step_status"] == "PROCESSED", change
        assert b.revio.counters.services_created[change["msisdn"]] == 1
    assert sum(b.revio.counters.services_created.values()) == ROWS


def test_a_second_submission_is_refused_by_the_database_even_without_the_early_check(
    billed: Billed, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The SELECT before the INSERT is only the friendly path: with it disabled the answer is the same."""
    b, api = billed, billed.api
    original = RowValidator._facts

    def facts_without_busy_devices(self: RowValidator, iccids: list[str]) -> Any:
        facts = original(self, iccids)
        facts.busy.clear()
        return facts

    monkeypatch.setattr(RowValidator, "_facts", facts_without_busy_devices)
    rows = b.rows(5)
    first = api.http.post("/api/v1/bulk-changes", json=b.body(rows))
    assert first.status_code == 201, first.text
    holder = first.json()["id"]

    # The same devices again, after a new one (row 1): rows 2-6 are held by the first bulk change.
    again = [b.rows(1)[0], *rows]
    second = api.http.post("/api/v1/bulk-changes", json=b.body(again))

    assert second.status_code == 422, second.text
    refused = second.json()
    assert refused["rows"] == 6
    assert refused["errors"] == [{**p, "row": p["row"] + 1} for p in _busy_refusal(rows, holder)]
    assert api.http.get("/api/v1/bulk-changes").json()["total"] == 1  # nothing half-created
