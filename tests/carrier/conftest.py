"""Fixtures: a real simulator on loopback HTTP and clients pointed at it."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import Response

from bulkchange.carrier.thingspace.client import ThingSpaceClient
from bulkchange.carrier.thingspace.models import ThingSpaceConnection
from bulkchange.simulator import ManualClock, ServerHandle, Simulator, SimulatorConfig, run_in_thread, serve_in_thread

ACCOUNT = "0000123456-00001"
ICCID = "89148000000800784259"  # Luhn-valid
IMEI = "990013907835573"

ClientFactory = Callable[..., ThingSpaceClient]


@pytest.fixture
def sim_config() -> SimulatorConfig:
    """Override in a test module (or parametrize) to change simulator settings."""
    return SimulatorConfig(activation_delay_s=0.0)


@pytest.fixture
def sim_clock() -> ManualClock | None:
    """None: the simulator runs on real time.  Override to return a ManualClock."""
    return None


@pytest.fixture
def sim(sim_config: SimulatorConfig, sim_clock: ManualClock | None) -> Simulator:
    return Simulator(sim_config, clock=sim_clock)


@pytest.fixture
def server(sim: Simulator) -> Iterator[ServerHandle]:
    with run_in_thread(sim, host="127.0.0.1", port=0) as handle:
        yield handle


def connection(base_url: str, **overrides: Any) -> ThingSpaceConnection:
    values: dict[str, Any] = {
        "base_url": base_url,
        "client_id": "sim-client",
        "client_secret": "sim-secret",
        "username": "sim-user",
        "password": "sim-pass",
        "account_name": ACCOUNT,
    }
    values.update(overrides)
    return ThingSpaceConnection(**values)


@pytest.fixture
async def make_client(server: ServerHandle) -> AsyncIterator[ClientFactory]:
    """Build clients with tiny backoff; every client built is closed at teardown.

    Keyword arguments go to :class:`ThingSpaceClient`, except ``conn_overrides`` (a dict for
    :class:`ThingSpaceConnection`).
    """
    made: list[ThingSpaceClient] = []

    def factory(conn_overrides: dict[str, Any] | None = None, **kwargs: Any) -> ThingSpaceClient:
        kwargs.setdefault("timeout", 5.0)
        kwargs.setdefault("backoff_initial_s", 0.01)
        kwargs.setdefault("backoff_cap_s", 0.2)
        client = ThingSpaceClient(connection(server.base_url, **(conn_overrides or {})), **kwargs)
        made.append(client)
        return client

    yield factory
    for client in made:
        await client.aclose()


@pytest.fixture
async def client(make_client: ClientFactory) -> ThingSpaceClient:
    return make_client()


class CallbackReceiver:
    """A real HTTP listener that records every callback body it acknowledges."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self._lock = threading.Lock()
        self.app = FastAPI()

        @self.app.post("/cb/carrier")
        async def receive(request: Request) -> Response:
            body = await request.body()
            with self._lock:
                self.bodies.append(body)
            return Response(status_code=200)

    def received(self) -> list[bytes]:
        with self._lock:
            return list(self.bodies)


@pytest.fixture
def receiver() -> Iterator[tuple[CallbackReceiver, str]]:
    rec = CallbackReceiver()
    with serve_in_thread(rec.app, host="127.0.0.1", port=0) as handle:
        yield rec, f"{handle.base_url}/cb/carrier"
