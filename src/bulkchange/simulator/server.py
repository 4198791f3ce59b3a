"""Serve a simulator with real uvicorn on a background thread.

Clients under test must talk real HTTP (timeouts, connection reuse, partial
bodies), so tests and benchmarks run the app in uvicorn rather than through an
in-process transport. Binding the socket ourselves gives a free port for
``port=0`` without racing another process for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import uvicorn


class Served(Protocol):
    """Anything with an ASGI ``app``: the ThingSpace and the Control Center simulators."""

    @property
    def app(self) -> Any: ...


@dataclass
class ServerHandle:
    host: str
    port: int
    server: Any
    thread: threading.Thread

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def stop(self, timeout: float = 5.0) -> None:
        self.server.request_exit()
        self.thread.join(timeout)


class _ThreadServer(uvicorn.Server):
    """uvicorn's server, told to stop by an event: uvicorn's own loop looks at ``should_exit`` only every
    0.1 s, a wait every server started here paid once more at its end (tests start and stop thousands)."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._exit: asyncio.Event | None = None

    async def main_loop(self) -> None:
        self._loop, self._exit = asyncio.get_running_loop(), asyncio.Event()
        counter = 0
        while not await self.on_tick(counter):  # the date header once a second, and the exit flag
            counter = (counter + 1) % 864000
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._exit.wait(), timeout=0.1)

    def request_exit(self) -> None:
        """Stop serving, from any thread (the loop wakes at once instead of at its next tick)."""
        self.should_exit = True
        loop, event = self._loop, self._exit
        if loop is not None and event is not None:
            with contextlib.suppress(RuntimeError):  # the loop has already finished
                loop.call_soon_threadsafe(event.set)


@contextlib.contextmanager
def serve_in_thread(
    app: Any, host: str = "127.0.0.1", port: int = 0, startup_timeout: float = 10.0
) -> Iterator[ServerHandle]:
    """Run any ASGI ``app`` on ``host:port`` in a daemon thread for the ``with`` block."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    bound_port = sock.getsockname()[1]
    config = uvicorn.Config(
        app,
        log_level="warning",
        lifespan="on",
        access_log=False,
        timeout_graceful_shutdown=1,
    )
    server = _ThreadServer(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="carrier-sim", daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.request_exit()
            sock.close()
            raise RuntimeError("simulator server failed to start")
        time.sleep(0.005)
    handle = ServerHandle(host, bound_port, server, thread)
    try:
        yield handle
    finally:
        handle.stop()
        sock.close()


@contextlib.contextmanager
def run_in_thread(sim: Served, host: str = "127.0.0.1", port: int = 0) -> Iterator[ServerHandle]:
    """Serve ``sim.app`` on loopback for the ``with`` block; ``port=0`` picks a free port."""
    with serve_in_thread(sim.app, host, port) as handle:
        yield handle
