"""Bounded concurrency: one worker keeps up to ``carrier_concurrency`` batches at the carrier at once, and
still sends each device once and records every outcome."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from bulkchange.engine import slice as slice_module
from bulkchange.engine.accounts import load_account
from bulkchange.simulator import SimulatorConfig
from bulkchange.store.tables import DeviceBulkChange

from .conftest import Harness, activation_row, make_harness, new_iccid, new_imei


def _harness(tmp_path: Path, concurrency: int) -> Iterator[Harness]:
    # 120 ms per M2M answer: long enough that batches sent together are seen together at the carrier.
    config = SimulatorConfig(activation_delay_s=0.1, callback_retry_interval_s=0.2, latency_s=0.12)
    yield from make_harness(tmp_path, sim_config=config, batch_max_devices=3, carrier_concurrency=concurrency)


@pytest.fixture
def concurrent(tmp_path: Path) -> Iterator[Harness]:
    yield from _harness(tmp_path, 4)


@pytest.fixture
def sequential(tmp_path: Path) -> Iterator[Harness]:
    yield from _harness(tmp_path, 1)


async def _run_twelve(h: Harness) -> tuple[int, list[str]]:
    iccids = [new_iccid() for _ in range(12)]
    bulk = h.submit([activation_row(i, new_imei()) for i in iccids])  # 4 batches of 3 at every step
    await h.run()
    return bulk, iccids


async def test_batches_overlap_at_the_carrier(concurrent: Harness) -> None:
    bulk, iccids = await _run_twelve(concurrent)
    assert concurrent.counts(bulk) == {"PROCESSED": 12}
    assert concurrent.sim.counters.max_in_flight >= 2  # the carrier answered several of our requests at once
    for iccid in iccids:  # and nothing was done twice
        assert concurrent.actions(iccid) == {"add": 1, "activate": 1}


async def test_concurrency_one_is_sequential(sequential: Harness) -> None:
    bulk, iccids = await _run_twelve(sequential)
    assert sequential.counts(bulk) == {"PROCESSED": 12}
    assert sequential.sim.counters.max_in_flight == 1
    for iccid in iccids:
        assert sequential.actions(iccid) == {"add": 1, "activate": 1}


class _HeldBatches:
    """Stands in for ``engine.batch.send_and_record`` in the slice: each claimed batch waits until the test
    lets it finish, so the order in which batches start and finish is the test's, not the clock's."""

    def __init__(self, fail: set[int] | None = None) -> None:
        self.started: list[list[int]] = []
        self.finished: list[int] = []
        self._gates: list[asyncio.Event] = []
        self._fail = fail or set()
        self._changed = asyncio.Event()

    async def __call__(self, ctx: Any, session: Any, bulk: Any, account: Any, batch: list[Any]) -> None:
        number = len(self.started)
        gate = asyncio.Event()
        self.started.append([c.id for c in batch])
        self._gates.append(gate)
        self._changed.set()
        await gate.wait()
        self.finished.append(number)
        self._changed.set()
        if number in self._fail:
            raise RuntimeError(f"batch {number} failed")

    async def until(self, condition: Callable[[], bool]) -> None:
        async def wait() -> None:
            while not condition():
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(wait(), timeout=10)

    async def until_started(self, n: int) -> None:
        await self.until(lambda: len(self.started) >= n)

    def release(self, number: int) -> None:
        self._gates[number].set()


async def _slice_with(
    h: Harness, held: _HeldBatches, devices: int, monkeypatch: pytest.MonkeyPatch
) -> asyncio.Task[None]:
    bulk_id = h.submit([activation_row(new_iccid(), new_imei()) for _ in range(devices)])
    with h.rt.session_factory() as session:
        bulk = session.get(DeviceBulkChange, bulk_id)
        account = load_account(session, h.provider_id)
    monkeypatch.setattr(slice_module, "send_and_record", held)
    return asyncio.create_task(slice_module.process_slice(h.rt.ctx, cast(Any, None), bulk, account))


@pytest.fixture
def two_at_once(tmp_path: Path) -> Iterator[Harness]:
    yield from make_harness(tmp_path, callbacks=False, batch_max_devices=3, carrier_concurrency=2)


async def test_a_finished_batch_makes_room_for_the_next_while_the_other_is_still_out(
    two_at_once: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    held = _HeldBatches()
    task = await _slice_with(two_at_once, held, 12, monkeypatch)  # four batches of three
    await held.until_started(2)
    held.release(0)
    # Batch 2 goes out as soon as batch 0 is done; it does not wait for batch 1 (a pipeline, not rounds).
    await held.until_started(3)
    assert held.finished == [0]
    for number in (1, 2):
        held.release(number)
    await held.until_started(4)
    held.release(3)
    await asyncio.wait_for(task, timeout=10)
    claimed = [change_id for batch in held.started for change_id in batch]
    assert len(claimed) == len(set(claimed)) == 12  # each change claimed once


async def test_a_failed_batch_stops_the_claiming_and_the_others_finish_first(
    two_at_once: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    held = _HeldBatches(fail={0})
    task = await _slice_with(two_at_once, held, 12, monkeypatch)
    await held.until_started(2)
    held.release(0)  # fails
    await held.until(lambda: held.finished == [0])
    for _ in range(20):  # event-loop turns, not time: enough for the slice to see the failure and react
        await asyncio.sleep(0)
    assert not task.done()  # batch 1 is still out: the failure waits for it to be recorded
    assert len(held.started) == 2  # and no further batch is claimed after a failure
    held.release(1)
    with pytest.raises(RuntimeError, match="batch 0 failed"):
        await asyncio.wait_for(task, timeout=10)
    assert len(held.started) == 2 and sorted(held.finished) == [0, 1]
