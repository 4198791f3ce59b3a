"""A callback receiver process for the benchmarks: `python bench/_receiver.py DB_URL PORT [intake-only]`.

Runs in its own process (as it would in production), so the worker's CPU figures are the worker's.
``intake-only``: the receiver stores and answers but does not apply (its applier is not started), so its
CPU is the intake's alone.
"""

from __future__ import annotations

import sys

import uvicorn

from bulkchange.api.callbacks import callback_app
from bulkchange.engine.callbacks.applier import CallbackApplier
from bulkchange.heap import settle_startup_objects
from bulkchange.logging_setup import configure_logging
from bulkchange.runtime import build_runtime
from bulkchange.settings import Settings


async def _nothing(_applier: CallbackApplier) -> None:
    pass


def _without_applier() -> None:
    """``intake-only``: the receiver's applier neither starts nor applies at shutdown (patched on the class,
    so this bench runs against any tree's receiver alike); the stored callbacks stay unapplied."""
    CallbackApplier.start = _nothing  # type: ignore[method-assign]
    CallbackApplier.stop = _nothing  # type: ignore[method-assign]


def main() -> None:
    db_url, port = sys.argv[1], int(sys.argv[2])
    configure_logging("WARNING")
    rt = build_runtime(Settings(database_url=db_url), migrate=False)
    if sys.argv[3:] == ["intake-only"]:
        _without_applier()
    app = callback_app(rt.engine)
    settle_startup_objects()  # as `bulkchange serve` does
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
