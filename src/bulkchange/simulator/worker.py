"""Background task in the server's event loop: completes due actions, delivers callbacks.

It polls every ~20 ms instead of sleeping until the next due time because the
clock may be a :class:`~.clock.ManualClock` moved by another thread at any moment.
Callbacks are POSTed by ``SimulatorConfig.callback_concurrency`` senders, each on its own kept-alive
connection, so 10k-device requests finish quickly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

import aiohttp

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
        self._senders: list[asyncio.Task[None]] = []
        self._outbox: asyncio.Queue[OutgoingCallback] = asyncio.Queue()

    def running_in(self, loop: asyncio.AbstractEventLoop) -> bool:
        return self._loop is loop and self._task is not None and not self._task.done()

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._outbox = asyncio.Queue()
        self._task = loop.create_task(self._run(), name="thingspace-sim-worker")
        self._senders = [
            loop.create_task(self._send_from_outbox(), name=f"thingspace-sim-callbacks-{i}")
            for i in range(self._sim.config.callback_concurrency)
        ]

    async def stop(self) -> None:
        tasks = [t for t in (self._task, *self._senders) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        while not self._outbox.empty():  # never sent: back in the simulator's queue, as a failed attempt
            self._sim.delivery_done(self._outbox.get_nowait(), False)

    async def _run(self) -> None:
        sim = self._sim
        while True:
            try:
                for message in sim.tick():
                    self._outbox.put_nowait(message)
            except Exception:  # keep the simulator alive; a bug here must not stop time
                log.exception("simulator worker tick failed")
            await asyncio.sleep(TICK_S)

    async def _send_from_outbox(self) -> None:
        """One sender: its own session with one kept-alive connection.

        The sender is aiohttp, not httpx: this process plays the carrier, and on a two-core machine every
        millisecond it spends sending a callback is taken from the bulkchange processes a benchmark
        measures, and aiohttp's client spends several times less CPU per request than httpx's (the
        comparison is in docs/benchmarks.md).
        """
        timeout = aiohttp.ClientTimeout(total=self._sim.config.callback_timeout_s)
        connector = aiohttp.TCPConnector(limit=1)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
            while True:
                message = await self._outbox.get()
                await self._deliver(session, message)

    async def _deliver(self, session: aiohttp.ClientSession, message: OutgoingCallback) -> None:
        acked = False
        try:
            async with session.post(message.url, json=message.body_for_next_attempt()) as response:
                await response.read()
                acked = 200 <= response.status < 300
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.debug("callback to %s failed: %s", message.url, exc)
        finally:
            self._sim.delivery_done(message, acked)
