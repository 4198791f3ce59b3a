"""Integration fixtures: the ThingSpace simulator, the Rev.io stand-in and a webhook receiver, all served
over real loopback HTTP, a real database and the real worker loop."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy import func, select

from bulkchange.api.callbacks import callback_app
from bulkchange.engine.submit import create_bulk_change
from bulkchange.engine.worker import run_worker
from bulkchange.integrations.kinds import Integrations, integrations_for
from bulkchange.integrations.settings import IntegrationSettings
from bulkchange.providers import add_provider
from bulkchange.runtime import Runtime, build_runtime
from bulkchange.settings import Settings
from bulkchange.simulator import Simulator, SimulatorConfig
from bulkchange.simulator.revio import RevioStandIn
from bulkchange.simulator.server import ServerHandle, serve_in_thread
from bulkchange.store.tables import (
    CustomerRatePlan,
    DeviceBulkChangeLog,
    IntegrationAuthentication,
    M2MDeviceChange,
    RevService,
    RevServiceProduct,
)
from engine.conftest import new_iccid as new_iccid
from engine.conftest import new_imei as new_imei
from engine.conftest import provider_callback_credentials, register_listener

SECRET = "whsec-test-0123456789"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ------------------------------------------------------------------------------ webhook receiver


@dataclass
class WebhookReceiver:
    """A real receiver: verifies the signature as docs/webhooks.md says, drops duplicates by event id + page."""

    secret: str = SECRET
    status: int = 200  # what it answers (503 = "down" while listening)
    requests: list[dict[str, Any]] = field(default_factory=list)  # every POST, verified or not
    documents: dict[tuple[str, int], dict[str, Any]] = field(default_factory=dict)  # unique (event, page)
    duplicates: int = 0
    bad_signatures: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def verify(self, timestamp: str, body: bytes, signature: str) -> bool:
        # The documented algorithm, written out independently of bulkchange.integrations.webhooks.
        expected = (
            "sha256=" + hmac.new(self.secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
        )
        return hmac.compare_digest(expected, signature) and abs(time.time() - int(timestamp)) <= 300

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/hook")
        async def hook(request: Request) -> JSONResponse:
            body = await request.body()
            headers = request.headers
            entry = {"headers": dict(headers), "body": body}
            with self.lock:
                self.requests.append(entry)
                if self.status >= 300:
                    return JSONResponse({"ok": False}, status_code=self.status)
                ok = self.verify(
                    headers.get("x-bulkchange-timestamp", "0"), body, headers.get("x-bulkchange-signature", "")
                )
                if not ok:
                    self.bad_signatures += 1
                    return JSONResponse({"ok": False, "error": "bad signature"}, status_code=401)
                key = (headers["x-bulkchange-event-id"], int(headers["x-bulkchange-page"]))
                if key in self.documents:
                    self.duplicates += 1
                else:
                    self.documents[key] = json.loads(body)
            return JSONResponse({"ok": True})

        return app


# ---------------------------------------------------------------------------------------- harness


@dataclass
class BillingHarness:
    sim: Simulator
    rt: Runtime
    provider_id: int
    revio: RevioStandIn
    revio_url: str
    auth_id: int
    integrations: Integrations
    webhook: WebhookReceiver | None = None
    webhook_url: str | None = None
    sim_url: str = ""  # the simulated carrier (another provider may use it too)

    def submit(self, rows: list[dict[str, Any]], *, status: str = "active") -> int:
        with self.rt.session_factory() as session:
            return create_bulk_change(
                session, self.rt.transport, rows, status=status, service_provider_id=self.provider_id
            )

    def configure(self, **overrides: Any) -> Integrations:
        """Re-install the integrations with other settings (e.g. a webhook URL)."""
        values = dict(self.integrations.settings.model_dump())
        values.update(overrides)
        self.integrations = self.rt.use_integrations(integrations_for(self.rt.ctx, IntegrationSettings(**values)))
        return self.integrations

    async def run(self) -> int:
        return await run_worker(self.rt.engine, until_idle=True, poll_s=0.02)

    @asynccontextmanager
    async def worker(self) -> AsyncIterator[None]:
        """The worker loop running in the background of the test (stopped on exit)."""
        stop = asyncio.Event()
        task = asyncio.create_task(run_worker(self.rt.engine, stop=stop, poll_s=0.02))
        try:
            yield
        finally:
            stop.set()
            await asyncio.wait_for(task, timeout=10)

    def changes(self, bulk_id: int) -> list[M2MDeviceChange]:
        with self.rt.session_factory() as session:
            return list(
                session.execute(
                    select(M2MDeviceChange)
                    .where(M2MDeviceChange.bulk_change_id == bulk_id)
                    .order_by(M2MDeviceChange.id)
                ).scalars()
            )

    def rev_service(self, change_id: int) -> RevService | None:
        with self.rt.session_factory() as session:
            return session.execute(
                select(RevService).where(RevService.m2m_device_change_id == change_id)
            ).scalar_one_or_none()

    def rev_products(self, change_id: int) -> list[RevServiceProduct]:
        with self.rt.session_factory() as session:
            return list(
                session.execute(
                    select(RevServiceProduct)
                    .where(RevServiceProduct.m2m_device_change_id == change_id)
                    .order_by(RevServiceProduct.position)
                ).scalars()
            )

    def log_descriptions(self, change_id: int) -> list[str]:
        with self.rt.session_factory() as session:
            return list(
                session.execute(
                    select(DeviceBulkChangeLog.log_entry_description)
                    .where(DeviceBulkChangeLog.m2m_device_change_id == change_id)
                    .order_by(DeviceBulkChangeLog.id)
                ).scalars()
            )

    def count(self, table: type) -> int:
        with self.rt.session_factory() as session:
            return int(session.execute(select(func.count()).select_from(table)).scalar_one())


async def wait_for(condition: Callable[[], bool], *, within_s: float = 15.0, what: str = "condition") -> None:
    """Poll ``condition`` until it holds or the deadline passes (no fixed sleeps)."""
    deadline = time.monotonic() + within_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def fast_settings(db_url: str) -> Settings:
    return Settings(
        database_url=db_url,
        activation_check_delay_s=1,
        continuation_delay_s=0,
        retry_base_s=0.05,
        retry_cap_s=0.2,
        reconcile_window_s=0,
        reconcile_retry_s=0,
        carrier_timeout_s=2.0,
        carrier_call_attempts=2,
        max_attempts=3,
        update_device_status_retry_number=2,
    )


def fast_integrations(**overrides: Any) -> IntegrationSettings:
    values: dict[str, Any] = {
        "billing_max_attempts": 50,
        "billing_retry_base_s": 0.05,
        "billing_retry_cap_s": 0.2,
        "billing_timeout_s": 2.0,
        "billing_lease_s": 30,
        "webhook_url": None,
        "webhook_secret": SECRET,
        "webhook_retry_base_s": 0.05,
        "webhook_retry_cap_s": 0.2,
        "webhook_max_attempts": 50,
        "webhook_timeout_s": 5.0,
    }
    values.update(overrides)
    return IntegrationSettings(**values)


def _register(carrier: ServerHandle, url: str, credentials: tuple[str, str]) -> None:
    register_listener(carrier.base_url, url, credentials)


def make_billing_harness(db_url: str) -> Iterator[BillingHarness]:
    sim = Simulator(SimulatorConfig(activation_delay_s=0.05, callback_retry_interval_s=0.2))
    revio = RevioStandIn()
    rt = build_runtime(fast_settings(db_url))
    integrations = rt.use_integrations(integrations_for(rt.ctx, fast_integrations()))
    with (
        serve_in_thread(sim.app) as carrier,
        serve_in_thread(revio.app) as revio_server,
        serve_in_thread(callback_app(rt.engine)) as callbacks,
    ):
        with rt.session_factory() as session:
            provider_id = add_provider(
                session,
                name="test",
                base_url=carrier.base_url,
                client_id="sim-client",
                client_secret="sim-secret",
                username="sim-user",
                password="sim-pass",
                account="0000123456-00001",
                register_callback=True,
            )
            auth = IntegrationAuthentication(
                tenant_id=1,
                name="rev test",
                base_url=f"{revio_server.base_url}/v1",
                username=revio.config.username,
                client_code=revio.config.client_code,
                password=revio.config.password,
                subscription_key=revio.config.subscription_key,
            )
            session.add(auth)
            session.add_all(
                [
                    CustomerRatePlan(tenant_id=1, name="IOT-BASIC"),
                    CustomerRatePlan(tenant_id=1, name="IOT-POOL", is_pool=True),
                ]
            )
            session.commit()
            auth_id = auth.id
        _register(
            carrier,
            f"{callbacks.base_url}/callbacks/thingspace/{provider_id}",
            provider_callback_credentials(rt, provider_id),
        )
        yield BillingHarness(
            sim, rt, provider_id, revio, f"{revio_server.base_url}/v1", auth_id, integrations, sim_url=carrier.base_url
        )
    rt.close()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def any_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/integrations.sqlite3"
    return str(request.getfixturevalue("pg_empty_url"))


@pytest.fixture
def bh(tmp_path: Path) -> Iterator[BillingHarness]:
    yield from make_billing_harness(f"sqlite:///{tmp_path}/integrations.sqlite3")


@pytest.fixture
def bh_any(any_db_url: str) -> Iterator[BillingHarness]:
    """The harness on SQLite and on a fresh PostgreSQL database."""
    yield from make_billing_harness(any_db_url)


@pytest.fixture
def receiver() -> Iterator[tuple[WebhookReceiver, str]]:
    hook = WebhookReceiver()
    with serve_in_thread(hook.app()) as server:
        yield hook, f"{server.base_url}/hook"


def billed_row(iccid: str, imei: str, **extra: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "ICCID": iccid,
        "IMEI": imei,
        "ServicePlan": "M2M_4G",
        "MdnZipCode": "98801",
        "RevCustomerId": "4242",
        "ServiceTypeId": 7,
        "ProviderId": 3,
        "ActivatedDate": "2026-11-28",
    }
    row.update(extra)
    return row
