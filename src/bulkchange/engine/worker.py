"""``bulkchange worker``: the engine's work and the registered kinds, through the one worker loop."""

from __future__ import annotations

import asyncio

from bulkchange.engine.engine import Engine
from bulkchange.engine.sources import MessageSource, ProgressHook
from bulkchange.jobs.loop import WorkerLoop


async def run_worker(
    engine: Engine,
    *,
    until_idle: bool = False,
    on_message: ProgressHook | None = None,
    stop: asyncio.Event | None = None,
    poll_s: float = 0.5,
    callback_sweep_s: float = 5.0,
) -> int:
    """Run every kind of work until stopped (or, with ``until_idle``, until none has anything waiting —
    delayed messages included). Returns the number of messages processed.

    A lost database or an unreachable queue ends no worker: the turn stops where it is, the outage is logged
    once, and the loop carries on when the dependency answers. Messages received and not finished are not
    deleted; what they had started is picked up by the row claims and leases — nothing is sent twice.
    """
    sources = engine.sources(on_message=on_message, callback_sweep_s=callback_sweep_s)
    loop = WorkerLoop(sources, engine.ctx.db_outage, engine.ctx.queue_outage, poll_s=poll_s)
    await loop.run(until_idle=until_idle, stop=stop)
    return sum(s.processed for s in sources if isinstance(s, MessageSource))
