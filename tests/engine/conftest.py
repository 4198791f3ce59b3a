"""Engine fixtures: a real simulator on loopback, a real database, the real worker loop.

Every engine test runs twice: on a SQLite file and on a fresh PostgreSQL database (the autouse
``db_url`` fixture below; ``make_harness`` builds its runtime on whichever the test is running with).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from bulkchange.api.callbacks import callback_app
from bulkchange.domain.identifiers import luhn_check_digit
from bulkchange.domain.statuses import DeviceStatusId
from bulkchange.engine import changes as ch
from bulkchange.engine.submit import create_bulk_change
from bulkchange.engine.worker import run_worker
from bulkchange.providers import add_provider, callback_listener
from bulkchange.runtime import Runtime, build_runtime
from bulkchange.settings import Settings
from bulkchange.simulator import Simulator, SimulatorConfig
from bulkchange.simulator.server import ServerHandle, serve_in_thread
from bulkchange.store.tables import Device, M2MDeviceChange

_rng = random.Random(7)


def new_iccid() -> str:
    body = "8914800" + "".join(_rng.choice("0123456789") for _ in range(12))
    return body + luhn_check_digit(body)


def new_imei() -> str:
    body = "99" + "".join(_rng.choice("0123456789") for _ in range(12))
    return body + luhn_check_digit(body)


def success_callback(
    request_id: str,
    iccid: str,
    *,
    action: str = "activate",
    state: str = "active",
    count: int = 1,
    credentials: tuple[str, str] = ("", ""),
) -> dict[str, Any]:
    """A CarrierService success callback as ThingSpace POSTs it, echoing ``credentials`` (the listener's)."""
    inner = {"deviceIds": [{"id": iccid, "kind": "iccid"}], "state": state}
    return {
        "username": credentials[0],
        "password": credentials[1],
        "requestId": request_id,
        "deviceIds": [{"id": iccid, "kind": "Iccid"}],
        "deviceResponse": {f"{action}Response": inner},
        "status": "Success",
        "callbackCount": count,
        "maxCallbackThreshold": 4,
    }


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
        "carrier_call_attempts": 2,
        "max_attempts": 3,
        "update_device_status_retry_number": 2,
    }
    values.update(overrides)
    return Settings(**values)


@dataclass
class Harness:
    """A simulator, a runtime on a fresh SQLite file, and a provider pointing at the simulator."""

    sim: Simulator
    carrier: ServerHandle
    rt: Runtime
    provider_id: int
    receiver: ServerHandle | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def submit(self, rows: list[dict[str, Any]], *, status: str = "active", ignore: bool = False) -> int:
        with self.rt.session_factory() as session:
            return create_bulk_change(
                session,
                self.rt.transport,
                rows,
                status=status,
                service_provider_id=self.provider_id,
                ignore_current_status=ignore,
            )

    async def run(self) -> int:
        return await run_worker(self.rt.engine, until_idle=True, poll_s=0.05)

    async def run_once(self) -> int:
        """Process the messages visible now, once each (no follow-ups)."""
        handled = 0
        for received in self.rt.transport.receive(max_messages=10):
            await self.rt.engine.handle(received)
            self.rt.transport.delete(received.receipt_handle)
            handled += 1
        return handled

    def changes(self, bulk_id: int) -> list[M2MDeviceChange]:
        with self.rt.session_factory() as session:
            return list(
                session.execute(
                    select(M2MDeviceChange)
                    .where(M2MDeviceChange.bulk_change_id == bulk_id)
                    .order_by(M2MDeviceChange.id)
                ).scalars()
            )

    def counts(self, bulk_id: int) -> dict[str, int]:
        with self.rt.session_factory() as session:
            return {s.value: n for s, n in ch.counts_by_status(session, bulk_id).items()}

    def device(self, iccid: str) -> Device | None:
        with self.rt.session_factory() as session:
            return session.execute(
                select(Device).where(Device.iccid == iccid, Device.is_deleted.is_(False))
            ).scalar_one_or_none()

    def seed_device(self, iccid: str, state: str, imei: str | None = None) -> None:
        """A device that already exists at the carrier and locally (as if synced)."""
        seed_synced_device(self.sim, self.rt.session_factory, self.provider_id, iccid, state, imei)

    def count_rows(self, table: type) -> int:
        with self.rt.session_factory() as session:
            return int(session.execute(select(func.count()).select_from(table)).scalar_one())

    def actions(self, iccid: str) -> dict[str, int]:
        return dict(self.sim.counters.actions.get(iccid, {}))

    @property
    def callback_credentials(self) -> tuple[str, str]:
        """The provider's callback username and password (generated by ``providers add``)."""
        return provider_callback_credentials(self.rt, self.provider_id)


def provider_callback_credentials(rt: Runtime, provider_id: int) -> tuple[str, str]:
    with rt.session_factory() as session:
        listener = callback_listener(session, provider_id)
    assert listener.username and listener.password
    return listener.username, listener.password


# The database of the running test, set by the ``db_url`` fixture; ``None`` (outside that fixture,
# e.g. a helper used from another folder) means a SQLite file under ``tmp_path`` as before.
_current_db_url: str | None = None


@pytest.fixture(autouse=True, params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The database this engine test runs on: a SQLite file, or a brand-new PostgreSQL database."""
    global _current_db_url
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/engine.sqlite3"
    else:
        url = str(request.getfixturevalue("pg_empty_url"))  # build_runtime migrates it
    _current_db_url = url
    try:
        yield url
    finally:
        _current_db_url = None


_LOCAL_STATUS = {
    "active": DeviceStatusId.ACTIVE,
    "suspend": DeviceStatusId.SUSPEND,
    "deactive": DeviceStatusId.DEACTIVE,
    "preactive": DeviceStatusId.INVENTORY,
}


def seed_synced_device(
    sim: Simulator,
    session_factory: sessionmaker[Session],
    provider_id: int,
    iccid: str,
    state: str,
    imei: str | None = None,
) -> None:
    """A device at the carrier in ``state`` and in our Device table with the same status, MSISDN and IP."""
    shown = sim.add_device(iccid, imei=imei, state=state)
    with session_factory.begin() as session:
        session.add(
            Device(
                service_provider_id=provider_id,
                iccid=iccid,
                imei=imei,
                msisdn=shown.msisdn,
                ip_address=shown.ip_address,
                device_status_id=_LOCAL_STATUS[state],
                status=state,
            )
        )


def make_harness(
    tmp_path: Path, *, sim_config: SimulatorConfig | None = None, callbacks: bool = True, **settings: Any
) -> Iterator[Harness]:
    sim = Simulator(sim_config or SimulatorConfig(activation_delay_s=0.1, callback_retry_interval_s=0.2))
    rt = build_runtime(fast_settings(_current_db_url or f"sqlite:///{tmp_path}/engine.sqlite3", **settings))
    with serve_in_thread(sim.app) as carrier:
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
                register_callback=callbacks,
            )
        harness = Harness(sim, carrier, rt, provider_id)
        if callbacks:
            with serve_in_thread(callback_app(rt.engine)) as receiver:
                harness.receiver = receiver
                _register(harness, f"{receiver.base_url}/callbacks/thingspace/{provider_id}")
                yield harness
        else:
            yield harness
    rt.close()


def register_listener(carrier_base_url: str, url: str, credentials: tuple[str, str] | None = None) -> None:
    """Register the CarrierService listener the way an operator would: through the carrier API, real auth,
    with the username/password ThingSpace is to echo in each callback."""
    import httpx

    token = httpx.post(
        f"{carrier_base_url}/api/ts/v1/oauth2/token",
        auth=("sim-client", "sim-secret"),
        data={"grant_type": "client_credentials"},
    ).json()["access_token"]
    session = httpx.post(
        f"{carrier_base_url}/api/m2m/v1/session/login",
        headers={"Authorization": f"Bearer {token}"},
        json={"username": "sim-user", "password": "sim-pass"},
    ).json()["sessionToken"]
    r = httpx.post(
        f"{carrier_base_url}/api/m2m/v1/callbacks/0000123456-00001",
        headers={"Authorization": f"Bearer {token}", "VZ-M2M-Token": session},
        json={"name": "CarrierService", "url": url}
        | ({"username": credentials[0], "password": credentials[1]} if credentials else {}),
    )
    r.raise_for_status()


def _register(h: Harness, url: str) -> None:
    register_listener(h.carrier.base_url, url, h.callback_credentials)


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    yield from make_harness(tmp_path)


@pytest.fixture
def polling_harness(tmp_path: Path) -> Iterator[Harness]:
    """No callback listener registered: results come from the deferred check (list polling)."""
    yield from make_harness(tmp_path, callbacks=False, activation_check_delay_s=1)


def activation_row(iccid: str, imei: str | None = None, **extra: Any) -> dict[str, Any]:
    row: dict[str, Any] = {"ICCID": iccid, "ServicePlan": "M2M_4G", "MdnZipCode": "98801"}
    if imei:
        row["IMEI"] = imei
    row.update(extra)
    return row
