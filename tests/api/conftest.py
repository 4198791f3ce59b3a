"""API fixtures: the whole application (``create_app``) served by uvicorn on loopback, a real ThingSpace
simulator on loopback, a real SQLite file, the real worker inside the application's lifespan, and the
simulator's CarrierService listener registered to the application's callback receiver with the provider's
callback credentials (set to ``CALLBACK_USER`` / ``CALLBACK_PASSWORD``, as an operator may with
``credentials set --callback-username … --callback-password …``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from bulkchange.api.app import create_app
from bulkchange.api.settings import ApiSettings
from bulkchange.metrics import observe_carrier_calls
from bulkchange.providers import add_provider
from bulkchange.runtime import Runtime, build_runtime
from bulkchange.services.apikeys import create_key
from bulkchange.services.credentials import set_callback
from bulkchange.settings import Settings
from bulkchange.simulator import Simulator, SimulatorConfig
from bulkchange.simulator.server import ServerHandle, serve_in_thread
from bulkchange.store.tables import DeviceBulkChange, M2MDeviceChange, utcnow
from engine.conftest import new_iccid as new_iccid
from engine.conftest import new_imei as new_imei
from engine.conftest import seed_synced_device

ACCOUNT = "0000123456-00001"
CALLBACK_USER = "ts-callback"
CALLBACK_PASSWORD = "s3cret-echo"


def activation_row(iccid: str | None = None, **extra: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "ICCID": iccid or new_iccid(),
        "IMEI": new_imei(),
        "ServicePlan": "M2M_4G",
        "MdnZipCode": "98801",
    }
    row.update(extra)
    return row


def fast_settings(db_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": db_url,
        "activation_check_delay_s": 1,
        "continuation_delay_s": 0,
        "retry_base_s": 0.05,
        "retry_cap_s": 0.2,
        "reconcile_window_s": 0,
        "reconcile_retry_s": 0,
        "carrier_timeout_s": 2.0,
        "carrier_call_attempts": 3,
        "max_attempts": 3,
        "update_device_status_retry_number": 2,
    }
    values.update(overrides)
    return Settings(**values)


@dataclass
class Api:
    """The served application and what it runs on."""

    sim: Simulator
    carrier: ServerHandle
    rt: Runtime
    provider_id: int
    server: ServerHandle
    http: httpx.Client
    key: str = ""
    """The API key ``http`` sends (tenant 1, every provider of it)."""

    @property
    def base_url(self) -> str:
        return self.server.base_url

    def create(self, rows: list[dict[str, Any]], *, status: str = "active", **kwargs: Any) -> httpx.Response:
        body = {"service_provider_id": self.provider_id, "status": status, "rows": rows}
        headers = kwargs.pop("headers", None)
        # 10,000 rows take seconds to validate on a loaded machine: more than the client's 10 s default for them.
        timeout = 120 if len(rows) > 1000 else httpx.USE_CLIENT_DEFAULT
        return self.http.post(
            "/api/v1/bulk-changes", json=body, headers=headers, params=kwargs or None, timeout=timeout
        )

    def wait_for(
        self, bulk_id: int, predicate: Callable[[dict[str, Any]], bool], *, timeout_s: float = 30.0
    ) -> dict[str, Any]:
        """Poll the API until ``predicate(bulk change)`` holds (a deadline, never a fixed sleep)."""
        deadline = time.monotonic() + timeout_s
        body: dict[str, Any] = {}
        while time.monotonic() < deadline:
            body = self.http.get(f"/api/v1/bulk-changes/{bulk_id}").json()
            if predicate(body):
                return body
            time.sleep(0.05)
        raise AssertionError(f"bulk change {bulk_id} did not get there in {timeout_s}s: {body}")

    def wait_processed(self, bulk_id: int, *, timeout_s: float = 30.0) -> dict[str, Any]:
        return self.wait_for(bulk_id, lambda b: b["status"] == "PROCESSED", timeout_s=timeout_s)

    def seed_device(self, iccid: str, state: str, imei: str | None = None, *, local: bool = True) -> None:
        """A device at the carrier (and, when ``local``, in our Device table as if synced)."""
        if local:
            seed_synced_device(self.sim, self.rt.session_factory, self.provider_id, iccid, state, imei)
        else:
            self.sim.add_device(iccid, imei=imei, state=state)

    def record_recent_actions(self, iccid: str, count: int) -> None:
        """``count`` provisioning actions on this line in the last hours (finished changes of past bulk changes)."""
        now = utcnow()
        with self.rt.session_factory.begin() as session:
            for i in range(count):
                bulk = DeviceBulkChange(
                    service_provider_id=self.provider_id, status="PROCESSED", created_date=now - timedelta(hours=2)
                )
                session.add(bulk)
                session.flush()
                session.add(
                    M2MDeviceChange(
                        bulk_change_id=bulk.id,
                        service_provider_id=self.provider_id,
                        iccid=iccid,
                        status="PROCESSED",
                        change_request="{}",
                        target_status="suspend" if i % 2 == 0 else "restore",
                        plan="SUSPEND" if i % 2 == 0 else "RESTORE",
                        step_index=0,
                        attempt_count=1,
                        sent_at=now - timedelta(hours=1),
                        is_processed=True,
                    )
                )


def register_listener(carrier_url: str, url: str, *, username: str | None, password: str | None) -> None:
    """Register the CarrierService listener through the carrier API with real auth, as an operator would."""
    token = httpx.post(
        f"{carrier_url}/api/ts/v1/oauth2/token",
        auth=("sim-client", "sim-secret"),
        data={"grant_type": "client_credentials"},
    ).json()["access_token"]
    session = httpx.post(
        f"{carrier_url}/api/m2m/v1/session/login",
        headers={"Authorization": f"Bearer {token}"},
        json={"username": "sim-user", "password": "sim-pass"},
    ).json()["sessionToken"]
    body: dict[str, Any] = {"name": "CarrierService", "url": url}
    if username is not None:
        body["username"] = username
    if password is not None:
        body["password"] = password
    r = httpx.post(
        f"{carrier_url}/api/m2m/v1/callbacks/{ACCOUNT}",
        headers={"Authorization": f"Bearer {token}", "VZ-M2M-Token": session},
        json=body,
    )
    r.raise_for_status()


def make_api(
    tmp_path: Path,
    *,
    with_worker: bool = True,
    callbacks: bool = True,
    api_settings: ApiSettings | None = None,
    sim_config: SimulatorConfig | None = None,
    listener_credentials: tuple[str, str] | None = (CALLBACK_USER, CALLBACK_PASSWORD),
    db_url: str | None = None,
    **settings: Any,
) -> Iterator[Api]:
    """The served application on ``db_url`` (default: a SQLite file in ``tmp_path``).

    ``listener_credentials``: what the simulator's listener is registered with (None: nothing, so it
    echoes empty strings); the provider's own callback credentials are always CALLBACK_USER/_PASSWORD."""
    sim = Simulator(sim_config or SimulatorConfig(activation_delay_s=0.1, callback_retry_interval_s=0.2))
    rt = build_runtime(
        fast_settings(db_url or f"sqlite:///{tmp_path}/api.sqlite3", **settings),
        services_hook=observe_carrier_calls,
    )
    with serve_in_thread(sim.app) as carrier:
        with rt.session_factory() as session:
            provider_id = add_provider(
                session,
                name="acme",
                base_url=carrier.base_url,
                client_id="sim-client",
                client_secret="sim-secret",
                username="sim-user",
                password="sim-pass",
                account=ACCOUNT,
                register_callback=callbacks,
            )
            set_callback(session, provider_id, username=CALLBACK_USER, password=CALLBACK_PASSWORD)
            key = create_key(session, tenant_id=1, name="tests").key
        app = create_app(rt, api_settings=api_settings or ApiSettings(), with_worker=with_worker, worker_poll_s=0.05)
        with (
            serve_in_thread(app) as server,
            httpx.Client(base_url=server.base_url, timeout=10, headers={"Authorization": f"Bearer {key}"}) as http,
        ):
            if callbacks:
                user, password = listener_credentials or (None, None)
                register_listener(
                    carrier.base_url,
                    f"{server.base_url}/callbacks/thingspace/{provider_id}",
                    username=user,
                    password=password,
                )
            yield Api(sim, carrier, rt, provider_id, server, http, key)
    rt.close()


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    """The application with its worker running and callbacks registered."""
    yield from make_api(tmp_path)


@pytest.fixture
def idle_api(tmp_path: Path) -> Iterator[Api]:
    """The application without a worker: what is created stays READY until a test moves it."""
    yield from make_api(tmp_path, with_worker=False)
