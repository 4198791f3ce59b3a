"""Keeping Python's cyclic garbage collector off the objects a long-running process makes once.

A worker or receiver process holds over a hundred thousand long-lived objects the collector tracks from
start-up: imported modules, SQLAlchemy's mappers and compiled statements, pydantic's validators. The
collector's oldest generation walks all of them again and again, although none of them will ever be
garbage, and the engine's set-based writes allocate fast enough to trigger it often. Freezing them cuts the
CPU per applied callback and the wall time of a 10,000-device run (docs/benchmarks.md).

``gc.freeze`` moves every object alive at that moment out of the collector's sight; reference counting
still frees them as usual, only reference cycles among them are never reclaimed — which is why it is
called once, by an entry point, after start-up, and never from library code (tests build and drop many
engines in one process).

The same holds, for a while, for what one unit of work makes — a worker's slice, an applier's pass: its rows
live until it ends and are freed by reference counting then, so ``collection_paused`` keeps the collector
off while it runs.
"""

from __future__ import annotations

import contextlib
import gc
import threading
import time
from collections.abc import Iterator

YOUNG_THRESHOLD = 10_000
"""Net allocations between young collections (CPython's default is 700). Recording a batch of 2,000 changes
keeps its row objects alive for the whole pass, and every young collection examines them again; a higher
threshold lowers the worker's CPU per device (docs/benchmarks.md)."""

MIDDLE_THRESHOLD = 10
"""Young collections between collections of the middle generation once a process runs: CPython's default."""

START_UP_MIDDLE_THRESHOLD = 100
"""The same while a command starts: a middle collection every million net allocations. A start-up (imports,
Typer's tree, the mappers) makes 150,000–200,000 (``status``, ``submit``, ``worker`` on SQLite), so none
collects the middle generation (tests/cli/test_startup.py)."""


def settle_startup_objects() -> None:
    """Collect once, then freeze what survived and collect the youngest generation less often.

    For a process's entry point (``bulkchange worker``, ``bulkchange serve``, the Lambda container's
    first invocation) once its runtime is built.
    """
    gc.collect()
    gc.freeze()
    collect_young_less_often()
    collect_older_as_usual()


def collect_young_less_often() -> None:
    """Start a young collection every ``YOUNG_THRESHOLD`` net allocations instead of every 700.

    Also for the command line as soon as it starts (``bulkchange.cli``): a command's start-up is mostly
    imports, over a hundred thousand objects made and nearly all kept for the life of the process, and at
    the default threshold the collector examines them again and again while they are being made — about a
    tenth of the CPU of ``bulkchange status`` (docs/benchmarks.md). Nothing is frozen here, so every
    cycle is still reclaimed.
    """
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)


def collect_older_rarely_while_starting() -> None:
    """Collect the middle generation every ``START_UP_MIDDLE_THRESHOLD`` young collections, not every 10.

    For the command line as soon as it starts (``bulkchange.cli``), with ``collect_young_less_often``. What a
    start-up makes survives its young collection nearly whole (modules, classes, mappers: kept for the life
    of the process), and at the default pace the middle generation is collected once or twice during
    ``bulkchange status`` and examines each of those objects a second time, for nothing: 0.02–0.05 s of its
    start-up (timed by gc callbacks). Young collections still run, so the short-lived cycles of start-up are
    reclaimed as before; a command that runs on after its start-up keeps this pace unless it calls
    ``collect_older_as_usual`` (``settle_startup_objects`` does).
    """
    young, _, old = gc.get_threshold()
    gc.set_threshold(young, START_UP_MIDDLE_THRESHOLD, old)


def collect_older_as_usual() -> None:
    """Collect the middle generation every ``MIDDLE_THRESHOLD`` young collections again (CPython's pace):
    for a long-running process once its start-up is over."""
    young, _, old = gc.get_threshold()
    gc.set_threshold(young, MIDDLE_THRESHOLD, old)


MAX_PAUSE_S = 10.0
"""The longest the collector stays off while pauses overlap one another without a break (a receiver's
applier beside a slice of its ``--with-worker`` loop can chain them): a block that ends after that collects
once, in full, before the collector waits again, so cyclic garbage never piles up for longer."""

_pause_lock = threading.Lock()
_pauses = 0
_resume = False  # whether the collector was on when the first of the current pauses began
_off_since = 0.0  # when the collector last went off, or last collected in full while off
_clock = time.monotonic


@contextlib.contextmanager
def collection_paused() -> Iterator[None]:
    """No cyclic collection while the block runs; the collector is back on (if it was on) once the last
    block still running in the process has ended.

    For a unit of work that allocates many objects kept until it ends and freed by reference counting then:
    a worker's slice of device changes (its claimed rows, requests, outcomes and row dictionaries), one pass
    of the callback applier. Every young collection meanwhile would examine all of them again and find
    nothing to free; that was most of the collector's time in a 10,000-device run (docs/benchmarks.md).
    Garbage in reference cycles made meanwhile waits for the first collection after the block, so a block
    must be bounded — a slice, a pass — never a process's lifetime.

    The collector's switch is the process's, so blocks count: overlapping blocks (several batches of a slice
    on the event loop, the applier's thread beside the receiver's) keep it off until the last one ends — but
    never more than ``MAX_PAUSE_S`` without a full collection.
    """
    global _pauses, _resume, _off_since
    with _pause_lock:
        if _pauses == 0:
            _resume = gc.isenabled()
            _off_since = _clock()
            gc.disable()
        _pauses += 1
    try:
        yield
    finally:
        overdue = False
        with _pause_lock:
            _pauses -= 1
            if _pauses == 0:
                if _resume:
                    gc.enable()
            elif _resume and _clock() - _off_since > MAX_PAUSE_S:
                overdue, _off_since = True, _clock()
        if overdue:
            gc.collect()
