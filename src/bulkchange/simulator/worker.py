"""Background task in the server's event loop: completes due actions, delivers callbacks.

It polls every ~20 ms instead of sleeping until the next due time because the
clock may be a :class:`~.clock.ManualClock` moved by another thread at any moment.
Callbacks are POSTed concurrently, ``SimulatorConfig.callback_concurrency`` at a time, each on a
kept-alive connection, so 10k-device requests finish quickly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

import httpx

from .callbacks import OutgoingCallback

if TYPE_CHECKING:
    from .simulator import Simulator

log = logging.getLogger(__name__)

TICK_S = 0.02


class Worker:
    def __init__(self, sim: Simulator) -> None:
        self._sim = sim
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._deliveries: set[asyncio.Task[None]] = set()

    def running_in(self, loop: asyncio.AbstractEventLoop) -> bool:
        return self._loop is loop and self._task is not None and not self._task.done()

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._task = loop.create_task(self._run(), name="thingspace-sim-worker")

    async def stop(self) -> None:
        tasks = [t for t in (self._task, *self._deliveries) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _run(self) -> None:
        sim = self._sim
        width = sim.config.callback_concurrency
        limiter = asyncio.Semaphore(width)
        limits = httpx.Limits(max_connections=width, max_keepalive_connections=width)
        async with httpx.AsyncClient(timeout=sim.config.callback_timeout_s, limits=limits) as client:
            while True:
                try:
                    for message in sim.tick():
                        task = asyncio.create_task(self._deliver(client, limiter, message))
                        self._deliveries.add(task)
                        task.add_done_callback(self._deliveries.discard)
                except Exception:  # keep the simulator alive; a bug here must not stop time
                    log.exception("simulator worker tick failed")
                await asyncio.sleep(TICK_S)

    async def _deliver(self, client: httpx.AsyncClient, limiter: asyncio.Semaphore, message: OutgoingCallback) -> None:
        acked = False
        try:
            async with limiter:
                response = await client.post(message.url, json=message.body_for_next_attempt())
                acked = 200 <= response.status_code < 300
        except httpx.HTTPError as exc:
            log.debug("callback to %s failed: %s", message.url, exc)
        finally:
            self._sim.delivery_done(message, acked)
