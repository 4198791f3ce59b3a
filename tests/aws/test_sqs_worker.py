"""The long-polling worker on a real SQS API (moto server on loopback): in-process and as `bulkchange worker`."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bulkchange.engine.worker import run_worker
from bulkchange.queue.message import BulkChangeMessage
from bulkchange.queue.sqs import SqsQueue
from bulkchange.simulator import SimulatorConfig
from bulkchange.simulator.config import FaultConfig
from engine.conftest import Harness, activation_row, make_harness, new_iccid, new_imei

from .conftest import Queue, aws_environment, lambda_environment


@pytest.fixture
def harness_kwargs() -> dict[str, Any]:
    return {}


@pytest.fixture
def h(tmp_path: Path, queue: Queue, harness_kwargs: dict[str, Any]) -> Iterator[Harness]:
    harness_kwargs.setdefault("sqs_wait_time_s", 1)
    yield from make_harness(tmp_path, queue_url=queue.url, **harness_kwargs)


async def test_send_worker_database(h: Harness, queue: Queue) -> None:
    iccids = [new_iccid() for _ in range(5)]
    bulk = h.submit([activation_row(i, new_imei()) for i in iccids])
    assert isinstance(h.rt.transport, SqsQueue)

    processed = await run_worker(h.rt.engine, until_idle=True, poll_s=0.05)

    assert processed >= 1
    assert h.counts(bulk) == {"PROCESSED": 5}
    for iccid in iccids:
        assert h.actions(iccid) == {"add": 1, "activate": 1}
    stats = h.rt.transport.stats()
    assert (stats.visible, stats.delayed, stats.in_flight, stats.dead_lettered) == (0, 0, 0, 0)


@pytest.mark.parametrize("queue_kwargs", [{"max_receive_count": 5}])
@pytest.mark.parametrize(
    "harness_kwargs",
    [
        {
            "queue_visibility_timeout_s": 2,
            "carrier_timeout_s": 15.0,
            "sim_config": SimulatorConfig(
                activation_delay_s=0.1, faults=FaultConfig(p_slow=1.0, slow_s=4.0, endpoints=frozenset({"devices/"}))
            ),
        }
    ],
)
async def test_the_worker_keeps_a_long_message_invisible_and_deletes_it_after_commit(h: Harness, queue: Queue) -> None:
    """The carrier takes 4 s; the visibility timeout is 2 s. The heartbeat keeps the message hidden, so a
    competing consumer never sees it, and it is deleted only once its work is committed."""
    iccid = new_iccid()
    bulk = h.submit([{"ICCID": iccid}], status="inventory")
    [original] = queue.receive_raw(wait_s=0, visibility_s=0)  # learn its id; leave it visible
    seen: list[str] = []
    finished = threading.Event()

    def competitor() -> None:
        # From the moment the worker holds the message, nobody else may see it until it is deleted.
        while not finished.is_set() and h.rt.transport.stats().in_flight == 0:
            time.sleep(0.02)
        while not finished.is_set():
            seen.extend(m["MessageId"] for m in queue.receive_raw(wait_s=1, visibility_s=0))

    spy = threading.Thread(target=competitor, daemon=True)
    spy.start()
    started = time.monotonic()
    try:
        await run_worker(h.rt.engine, until_idle=True, poll_s=0.05)
    finally:
        finished.set()
        spy.join(5)

    assert time.monotonic() - started > 4.0  # the work outlived the visibility timeout twice over
    assert original["MessageId"] not in seen
    assert h.counts(bulk) == {"PROCESSED": 1} and h.actions(iccid) == {"add": 1}
    assert queue.receive_raw(wait_s=0, visibility_s=0) == []  # deleted


async def test_a_failing_message_is_not_deleted(h: Harness, queue: Queue) -> None:
    bulk = h.submit([{"ICCID": new_iccid()}], status="inventory")
    with h.rt.db.begin() as conn:
        from sqlalchemy import text

        conn.execute(
            text(
                "CREATE TRIGGER poison BEFORE UPDATE ON \"DeviceBulkChange\" BEGIN SELECT RAISE(ABORT, 'poisoned'); END"
            )
        )
    stop = asyncio.Event()

    async def stop_soon() -> None:
        await asyncio.sleep(1.5)
        stop.set()

    stopper = asyncio.create_task(stop_soon())
    processed = await run_worker(h.rt.engine, stop=stop, poll_s=0.05)
    await stopper

    assert processed == 0
    assert h.counts(bulk) == {"READY": 1}
    assert h.rt.transport.stats().in_flight >= 1  # still there, hidden until its visibility timeout ends


@pytest.mark.parametrize("harness_kwargs", [{"batch_max_devices": 2, "slice_max_changes": 2}])
def test_two_worker_processes_on_one_queue_never_repeat_a_change(h: Harness, queue: Queue, aws_env: str) -> None:
    """Two `bulkchange worker --queue-url URL` processes share one queue and one database; with duplicated
    wake-ups in flight, every carrier action still happens exactly once (the simulator's counters)."""
    bulks: dict[int, list[str]] = {}
    for _ in range(3):
        iccids = [new_iccid() for _ in range(6)]
        bulks[h.submit([activation_row(i, new_imei()) for i in iccids])] = iccids
    for bulk in bulks:
        for _ in range(4):  # at-least-once delivery: the same wake-up again and again
            h.rt.transport.send(BulkChangeMessage(bulk_change_id=bulk))

    env = {**os.environ, **aws_environment(aws_env), **lambda_environment(h.rt.settings)}
    env.pop("DEVICE_BULK_CHANGE_QUEUE_URL", None)  # the queue comes from --queue-url
    env["COLUMNS"] = "200"
    command = [str(Path(sys.executable).parent / "bulkchange"), "worker", "--queue-url", queue.url, "--until-idle"]
    logs = [h.rt.settings.database_url.rsplit("/", 1)[0].removeprefix("sqlite:///") + f"/worker{n}.log" for n in (1, 2)]
    workers = [
        subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=open(log, "w"), text=True)  # noqa: SIM115
        for log in logs
    ]
    outputs = []
    for worker, log in zip(workers, logs, strict=True):
        try:
            out, _ = worker.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            for w in workers:
                w.kill()
            raise AssertionError(Path(log).read_text()[-4000:]) from None
        assert worker.returncode == 0, Path(log).read_text()[-4000:]
        outputs.append(out)

    counts = [int(m.group(1)) for out in outputs for m in [re.search(r"(\d+) messages processed", out)] if m]
    assert len(counts) == 2 and all(n >= 1 for n in counts), outputs  # both really worked
    for bulk, iccids in bulks.items():
        assert h.counts(bulk) == {"PROCESSED": 6}
        for iccid in iccids:
            assert h.actions(iccid) == {"add": 1, "activate": 1}
