"""The callback applier alone: its CPU, its write transactions and statements per callback.

    python bench/applier.py --json [--callbacks 10000] [--per-pass 120]

N suspend changes AWAITING their callback (as ``bench/callbacks.py`` sets them up); their success callbacks
are stored ``--per-pass`` at a time (as a receiver's group commits would) and applied after each store with
``apply_callbacks_after``, as the receiver's applier applies them during a burst — then once more with
nothing new. In-process and single-threaded, so the figures are the applier's alone: CPU (``process_time``
around the apply calls only), the wall time spent inside write transactions (``session_factory.begin``
blocks; on SQLite each holds the database's write lock from its ``BEGIN IMMEDIATE``), how many, and the SQL
statements executed. Where the tree has ``PacedRefresh`` it is used as ``CallbackApplier`` uses it, with a
clock that advances 0.25 s per pass (the applier's gathering time during a burst); any tree can be measured.
The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from callbacks import _awaiting_changes, _body
from sqlalchemy import event, func, select
from sqlalchemy.orm import Session

from bulkchange.engine.callbacks.apply import apply_callbacks_after, ingest_callbacks, reader
from bulkchange.logging_setup import configure_logging
from bulkchange.runtime import build_runtime
from bulkchange.settings import Settings
from bulkchange.store.tables import DeviceBulkChange, M2MDeviceChange


class _Meter:
    """Wall time inside write transactions and statements executed, while ``on``."""

    def __init__(self) -> None:
        self.on = False
        self.write_s = 0.0
        self.writes = 0
        self.statements = 0


def _metered(rt: Any, meter: _Meter) -> None:
    factory = rt.ctx.session_factory
    begin = factory.begin

    @contextlib.contextmanager
    def timed_begin() -> Iterator[Session]:
        started = time.perf_counter()
        with begin() as session:
            yield session
        if meter.on:
            meter.write_s += time.perf_counter() - started
            meter.writes += 1

    factory.begin = timed_begin

    @event.listens_for(factory.kw["bind"], "before_cursor_execute")
    def _count(*_args: Any) -> None:
        if meter.on:
            meter.statements += 1


def _paced(ctx: Any, clock: list[float]) -> dict[str, Any]:
    try:
        from bulkchange.engine.bulk_status import PacedRefresh
    except ImportError:  # a tree before it: every pass refreshes
        return {}
    return {"statuses": PacedRefresh(ctx, interval_s=1.0, clock=lambda: clock[0])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--callbacks", type=int, default=10_000)
    parser.add_argument("--per-pass", type=int, default=120, help="callbacks stored between two passes")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    configure_logging("WARNING")
    with tempfile.TemporaryDirectory() as tmp:
        db_url = f"sqlite:///{Path(tmp)}/applier.sqlite3"
        provider_id, credentials, bulk_id, sent = _awaiting_changes(db_url, args.callbacks, random.Random(7))
        rt = build_runtime(Settings(database_url=db_url), migrate=False)
        meter, clock = _Meter(), [0.0]
        _metered(rt, meter)
        options = _paced(rt.ctx, clock)
        read = reader(rt.ctx).read_callback
        cpu, seen = 0.0, 0
        for start in range(0, len(sent), args.per_pass):
            bodies = [_body(r, i, credentials) for r, i in sent[start : start + args.per_pass]]
            ingest_callbacks(rt.ctx, [(b, read(b), provider_id) for b in bodies])
            clock[0] += 0.25
            for _ in range(2 if start + args.per_pass >= len(sent) else 1):
                began, meter.on = time.process_time(), True
                _, seen = apply_callbacks_after(rt.ctx, seen, **options)  # after the last: nothing new
                meter.on, cpu = False, cpu + time.process_time() - began
        with rt.session_factory() as session:
            processed = session.execute(select(func.count()).where(M2MDeviceChange.status == "PROCESSED")).scalar_one()
            bulk = session.get(DeviceBulkChange, bulk_id)
            assert bulk is not None
            finished = (bulk.status, bulk.processed_date is not None, bulk.status_details)
        rt.close()
    n = max(1, len(sent))
    summary = {
        "callbacks": len(sent),
        "per_pass": args.per_pass,
        "paced_refresh": bool(options),
        "changes_processed": processed,
        "bulk_change": list(finished),
        "apply_cpu_ms_per_callback": round(1000 * cpu / n, 3),
        "write_transaction_ms_per_callback": round(1000 * meter.write_s / n, 3),
        "write_transactions": meter.writes,
        "statements": meter.statements,
    }
    if not args.json:
        print(json.dumps(summary, indent=2), file=sys.stderr)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
