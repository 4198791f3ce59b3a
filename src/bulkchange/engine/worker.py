"""``bulkchange worker``: the engine's work and the registered kinds, through the one worker loop."""

from __future__ import annotations

import asyncio

import structlog

from bulkchange.engine.engine import Engine
from bulkchange.engine.sources import MessageSource, ProgressHook
from bulkchange.jobs.loop import WorkerLoop
from bulkchange.store.write_lock import WRITE_LOCK

log = structlog.get_logger("bulkchange.worker")

WRITE_LOCK_EVENT = "SQLite write transactions of this process, by work"


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
    try:
        await loop.run(until_idle=until_idle, stop=stop)
    finally:
        _log_write_lock()
    return sum(s.processed for s in sources if isinstance(s, MessageSource))


def _log_write_lock() -> None:
    """How long this process's SQLite write transactions waited for the write lock and held it (a worker
    started on its own has no ``/metrics``: this line is where an operator sees it). Nothing on other
    databases."""
    tallies = WRITE_LOCK.snapshot()
    if tallies:
        by_work = {
            work: {"transactions": t.transactions, "wait_s": round(t.wait_s, 3), "held_s": round(t.held_s, 3)}
            for work, t in sorted(tallies.items())
        }
        log.info(WRITE_LOCK_EVENT, write_lock=by_work)
