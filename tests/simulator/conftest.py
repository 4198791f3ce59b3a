"""Fixtures: a simulator on real loopback HTTP, a logged-in client, a callback receiver."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from bulkchange.simulator import ManualClock, Simulator, SimulatorConfig, run_in_thread

from .helpers import Api, Env, Receiver


@pytest.fixture
def make_env() -> Iterator[Callable[..., Env]]:
    """Factory: ``make_env(**SimulatorConfig fields)`` -> a running simulator with a logged-in Api."""
    stack: list[tuple[Any, Api]] = []

    def factory(login: bool = True, **config: Any) -> Env:
        clock = ManualClock()
        sim = Simulator(SimulatorConfig(**config), clock=clock)
        ctx = run_in_thread(sim)
        server = ctx.__enter__()
        api = Api(server.base_url)
        stack.append((ctx, api))
        if login:
            assert api.login().status_code == 200
        return Env(sim, clock, api, server.base_url)

    yield factory
    for ctx, api in reversed(stack):
        api.close()
        ctx.__exit__(None, None, None)


@pytest.fixture
def env(make_env: Callable[..., Env]) -> Env:
    return make_env()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rec = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = json.loads(self.rfile.read(length))
            with rec.lock:
                rec.received.append(body)
                status = rec.statuses.pop(0) if rec.statuses else 200
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    class Server(ThreadingHTTPServer):
        request_queue_size = 256  # the default 5 drops SYNs under concurrent deliveries (1 s stalls)
        daemon_threads = True

    server = Server(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    rec.url = f"http://127.0.0.1:{server.server_address[1]}/cb/carrier"
    yield rec
    server.shutdown()
    server.server_close()
