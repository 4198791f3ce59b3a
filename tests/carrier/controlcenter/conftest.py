"""Fixtures: the Control Center simulator on loopback HTTP, a scripted stub server, and clients for both."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import Response

from bulkchange.carrier.controlcenter import ControlCenterClient, ControlCenterConnection
from bulkchange.simulator import ManualClock, ServerHandle, run_in_thread, serve_in_thread
from bulkchange.simulator.controlcenter import API_ROOT, ControlCenterConfig, ControlCenterSimulator

ClientFactory = Callable[..., ControlCenterClient]


@pytest.fixture
def cc_config() -> ControlCenterConfig:
    """Override (or parametrize) to change simulator settings; generous rate limit by default."""
    return ControlCenterConfig(tps=1000, tps_burst=1000)


@pytest.fixture
def cc_clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def cc_ticks() -> ManualClock:
    """The simulator's rate-limit clock; tests advance it to refill the token bucket."""
    return ManualClock(start=0.0)


@pytest.fixture
def cc_sim(cc_config: ControlCenterConfig, cc_clock: ManualClock, cc_ticks: ManualClock) -> ControlCenterSimulator:
    return ControlCenterSimulator(cc_config, clock=cc_clock, monotonic=cc_ticks)


@pytest.fixture
def cc_server(cc_sim: ControlCenterSimulator) -> Iterator[ServerHandle]:
    with run_in_thread(cc_sim) as handle:
        yield handle


def _factory(base_url: str, made: list[ControlCenterClient]) -> ClientFactory:
    def factory(username: str = "sim-user", api_key: str = "sim-api-key", **kwargs: Any) -> ControlCenterClient:
        kwargs.setdefault("timeout", 5.0)
        kwargs.setdefault("backoff_initial_s", 0.01)
        kwargs.setdefault("backoff_cap_s", 0.05)
        conn = ControlCenterConnection(base_url=base_url, username=username, api_key=api_key)
        client = ControlCenterClient(conn, **kwargs)
        made.append(client)
        return client

    return factory


@pytest.fixture
async def make_cc_client(cc_server: ServerHandle, cc_clock: ManualClock) -> AsyncIterator[ClientFactory]:
    """Clients of the simulator (tiny backoff, the simulator's wall clock); all closed at teardown."""
    made: list[ControlCenterClient] = []
    factory = _factory(cc_server.base_url + API_ROOT, made)

    def with_clock(*args: Any, **kwargs: Any) -> ControlCenterClient:
        kwargs.setdefault("clock", cc_clock)
        return factory(*args, **kwargs)

    yield with_clock
    for client in made:
        await client.aclose()


@pytest.fixture
async def cc_client(make_cc_client: ClientFactory) -> ControlCenterClient:
    return make_cc_client()


# --- a scripted stub, for answers the simulator never gives ---------------------------------------------------


@dataclass
class Scripted:
    status: int
    body: str | bytes = ""
    headers: dict[str, str] = field(default_factory=dict)
    media_type: str = "application/json"


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes


class Stub:
    """Answers each request with the next scripted answer (the last one repeats) and records it."""

    def __init__(self) -> None:
        self.script: list[Scripted] = []
        self.seen: list[Seen] = []
        self._lock = threading.Lock()
        self.app = FastAPI()

        @self.app.api_route("/{path:path}", methods=["GET", "PUT", "POST"])
        async def answer(request: Request, path: str) -> Response:
            body = await request.body()
            with self._lock:
                self.seen.append(
                    Seen(request.method, "/" + path, dict(request.query_params), dict(request.headers), body)
                )
                reply = self.script.pop(0) if len(self.script) > 1 else self.script[0]
            return Response(reply.body, status_code=reply.status, headers=reply.headers, media_type=reply.media_type)

    def answer(self, *replies: Scripted) -> None:
        with self._lock:
            self.script = list(replies)


@pytest.fixture
def stub() -> Iterator[tuple[Stub, str]]:
    """(stub, base URL up to /rws/api)."""
    instance = Stub()
    with serve_in_thread(instance.app, host="127.0.0.1", port=0) as handle:
        yield instance, handle.base_url + API_ROOT


@pytest.fixture
async def make_stub_client(stub: tuple[Stub, str]) -> AsyncIterator[ClientFactory]:
    made: list[ControlCenterClient] = []
    yield _factory(stub[1], made)
    for client in made:
        await client.aclose()
