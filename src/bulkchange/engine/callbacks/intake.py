"""Storing callbacks by group commit, so a burst of 10,000 costs a few hundred transactions, not 10,000.

ThingSpace POSTs one CarrierService callback per device and many at once. A receiver that opened one
transaction per callback spends its time waiting for the database's write lock (on SQLite, in the
busy handler's sleeps) rather than storing. Here each request hands its callback to ``store`` and waits;
one writer stores everything that has queued up meanwhile in one transaction, then answers them all. The
2xx still goes out only after the callback is committed: nothing acknowledged is lost if the process
dies, and a callback whose batch failed gets an error, so ThingSpace sends it again.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import structlog

from bulkchange.carrier.port import CallbackReport
from bulkchange.engine.callbacks.apply import ingest_callbacks
from bulkchange.engine.context import EngineContext

log = structlog.get_logger("bulkchange.callbacks")

_Item = tuple[dict[str, Any], CallbackReport, int | None, "asyncio.Future[int | None]"]


class CallbackIntake:
    """One per receiver process (one event loop): queues callbacks, one writer stores them in batches."""

    def __init__(self, ctx: EngineContext, *, max_batch: int = 500, linger_s: float = 0.0) -> None:
        self._ctx = ctx
        self._max_batch = max_batch
        self._linger_s = linger_s
        self._queued: list[_Item] = []
        self._writer: asyncio.Task[None] | None = None

    async def store(
        self, payload: dict[str, Any], report: CallbackReport, *, service_provider_id: int | None
    ) -> int | None:
        """Store one callback (its body and the carrier's reading of it, so it is parsed once); its row id, or
        None for a duplicate. Returns after commit."""
        future: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()
        self._queued.append((payload, report, service_provider_id, future))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_all(), name="callback-intake")
        return await future

    async def drain(self) -> None:
        """Wait until everything queued is stored (shutdown: answer every request still waiting)."""
        while self._writer is not None and not self._writer.done():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(self._writer)

    async def _write_all(self) -> None:
        # Yield once before writing, so requests already read by the event loop join this batch; while a
        # batch is being written, the next one gathers by itself. No fixed linger: the carrier waits for
        # every answer, so a linger would bound the throughput (docs/benchmarks.md).
        await asyncio.sleep(self._linger_s)
        while self._queued:
            batch, self._queued = self._queued[: self._max_batch], self._queued[self._max_batch :]
            try:
                ids = await asyncio.to_thread(ingest_callbacks, self._ctx, [item[:3] for item in batch])
            except Exception as exc:  # the database refused the batch: each request answers an error
                log.warning(
                    "storing callbacks failed; the carrier will send them again", count=len(batch), error=str(exc)
                )
                for *_, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (*_, future), stored_id in zip(batch, ids, strict=True):
                if not future.done():  # the caller may have gone (client disconnected): stored all the same
                    future.set_result(stored_id)
