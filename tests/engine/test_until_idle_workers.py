"""``bulkchange worker --until-idle`` with several workers on one database.

A worker that finds the rows of a bulk change held by another worker schedules a wake-up for when that
lease would expire (``BULKCHANGE_LEASE_SECONDS``, 300 s). Once the holder has finished, that delayed
message has nothing left to wake: the ``--until-idle`` runs end instead of waiting out the lease.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from bulkchange.engine.worker import run_worker
from bulkchange.queue.message import BulkChangeMessage
from bulkchange.runtime import build_runtime
from bulkchange.simulator import SimulatorConfig
from bulkchange.simulator.config import FaultConfig

from .conftest import Harness, activation_row, make_harness, new_iccid, new_imei

# Every Add answers 1.5 s late (work done): long enough for the second worker to run into the held rows.
SLOW_ADD = SimulatorConfig(
    activation_delay_s=0.1,
    faults=FaultConfig(p_slow=1.0, slow_s=1.5, endpoints=frozenset({"devices/actions/add"})),
)


async def _until(condition: Callable[[], bool], *, within_s: float, what: str) -> None:
    deadline = time.monotonic() + within_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


# Serial: with four test processes on a loaded machine it ended twice with a second delayed wake-up (a lost
# wake-up recovery woke the bulk change while A's slow Add was in flight); that race is not understood yet.
@pytest.mark.serial
async def test_until_idle_workers_stop_once_only_a_spare_lease_wakeup_is_left(tmp_path: Path) -> None:
    for h in make_harness(tmp_path, callbacks=False, sim_config=SLOW_ADD, carrier_timeout_s=10.0):
        await _run_two_workers(h)


async def _run_two_workers(h: Harness) -> None:
    rt_b = build_runtime(h.rt.settings, migrate=False)  # a second worker: its own engine and worker id
    h.rt.engine.ctx.worker_id = "worker-a"
    rt_b.engine.ctx.worker_id = "worker-b"
    try:
        iccid = new_iccid()
        bulk = h.submit([{"ICCID": iccid}], status="inventory")
        started = time.monotonic()
        worker_a = asyncio.create_task(run_worker(h.rt.engine, until_idle=True, poll_s=0.05))
        await _until(
            lambda: [(c.status, c.lease_owner) for c in h.changes(bulk)] == [("SENDING", "worker-a")],
            within_s=10,
            what="worker A to claim the change",
        )

        # Another wake-up for the same bulk change, taken by worker B while A waits for the carrier.
        h.rt.transport.send(BulkChangeMessage(bulk_change_id=bulk))
        worker_b = asyncio.create_task(run_worker(rt_b.engine, until_idle=True, poll_s=0.05))
        await _until(lambda: h.rt.transport.stats().delayed >= 1, within_s=10, what="B's wake-up for A's lease expiry")
        assert h.changes(bulk)[0].status == "SENDING"  # B found the row held and scheduled, not sent

        # Both runs end once A has finished, not when A's 300 s lease would have expired.
        await asyncio.wait_for(asyncio.gather(worker_a, worker_b), timeout=30)

        assert time.monotonic() - started < 30
        assert h.counts(bulk) == {"PROCESSED": 1}
        assert h.actions(iccid) == {"add": 1}
        stats = h.rt.transport.stats()
        assert (stats.visible, stats.in_flight, stats.delayed) == (0, 0, 1)  # the spare wake-up, left queued
    finally:
        rt_b.close()


async def test_until_idle_still_waits_for_a_delayed_message_a_change_needs(tmp_path: Path) -> None:
    """The deferred activation check is a delayed message too: with a change still awaiting its result,
    the run waits for it (here 1 s) and ends with the change verified."""
    for h in make_harness(tmp_path, callbacks=False, sim_config=SimulatorConfig(activation_delay_s=0.1)):
        iccid = new_iccid()
        bulk = h.submit([activation_row(iccid, new_imei())])
        await asyncio.wait_for(h.run(), timeout=60)
        assert h.counts(bulk) == {"PROCESSED": 1}
        assert h.actions(iccid) == {"add": 1, "activate": 1}
