"""The engine as its callers see it: one object over the context, the flow and the background work.

Entry points (the worker loop, ``bulkchange serve``, the Lambda handlers, the CLI) hold an ``Engine``; it
holds no state of its own between messages beyond what it was built with — the kinds of background work
registered beside the engine's own (``extra_sources``: the integrations' billing steps and webhook
deliveries) are given when it is built, never attached later.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bulkchange.domain.deadline import Deadline
from bulkchange.domain.statuses import BulkStatus
from bulkchange.engine import bulk_status, flow, wakeups
from bulkchange.engine.callbacks import apply as callbacks
from bulkchange.engine.callbacks.store import Received
from bulkchange.engine.context import EngineContext
from bulkchange.engine.outbox import WakeupRelay
from bulkchange.engine.sources import CallbackSweep, MessageSource, ProgressHook, WakeupRecovery
from bulkchange.jobs.loop import WorkSource
from bulkchange.queue.base import ReceivedMessage
from bulkchange.queue.message import BulkChangeMessage


class Engine:
    """Processes bulk change messages and applies callbacks, on ``ctx``'s database, queue and carriers."""

    def __init__(self, ctx: EngineContext, *, extra_sources: Sequence[WorkSource] = ()) -> None:
        self.ctx = ctx
        self.wakeups = WakeupRelay(ctx)  # submissions' wake-ups the queue did not take at once
        self.extra_sources = list(extra_sources)

    # ------------------------------------------------------------------------------------ messages

    async def handle(self, received: ReceivedMessage, *, deadline: Deadline | None = None) -> None:
        """One queue message; returns normally when it may be deleted (``flow.handle``)."""
        await flow.handle(self.ctx, received, deadline=deadline)

    async def process(self, message: BulkChangeMessage, *, deadline: Deadline | None = None) -> None:
        await flow.process(self.ctx, message, deadline=deadline)

    def wake(self, bulk_id: int, *, delay_s: float, force: bool = False) -> bool:
        return wakeups.wake(self.ctx, bulk_id, delay_s=delay_s, force=force)

    def refresh_status(self, bulk_id: int) -> BulkStatus:
        return bulk_status.refresh_status(self.ctx, bulk_id)

    # ----------------------------------------------------------------------------------- callbacks

    def ingest_callback(self, payload: dict[str, Any], *, service_provider_id: int | None) -> int | None:
        return callbacks.ingest_callback(self.ctx, payload, service_provider_id=service_provider_id)

    def ingest_callbacks(self, items: Sequence[Received]) -> list[int | None]:
        return callbacks.ingest_callbacks(self.ctx, items)

    def apply_callback(self, payload: dict[str, Any], *, service_provider_id: int | None) -> str:
        return callbacks.apply_callback(self.ctx, payload, service_provider_id=service_provider_id)

    def apply_pending_callbacks(self, *, limit: int = 2000) -> int:
        return callbacks.apply_pending_callbacks(self.ctx, limit=limit)

    def apply_callbacks_after(self, after_id: int, *, limit: int = 2000) -> tuple[int, int]:
        return callbacks.apply_callbacks_after(self.ctx, after_id, limit=limit)

    # ----------------------------------------------------------------------------- background work

    def side_sources(self) -> list[WorkSource]:
        """Background work besides messages, in the order a turn runs it: the wake-up relay first (a bulk
        change whose wake-up the queue refused waits for nothing else), then the registered kinds."""
        return [self.wakeups, *self.extra_sources]

    def sources(self, *, on_message: ProgressHook | None = None, callback_sweep_s: float = 5.0) -> list[WorkSource]:
        """Every kind of work a worker loop runs, in turn order."""
        return [
            WakeupRecovery(self.ctx),
            MessageSource(self.ctx, self.handle, on_message=on_message),
            CallbackSweep(self.ctx, interval_s=callback_sweep_s),
            *self.side_sources(),
        ]
