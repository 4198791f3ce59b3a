"""Bounded concurrency: one worker keeps up to ``carrier_concurrency`` batches at the carrier at once, and
still sends each device once and records every outcome."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bulkchange.simulator import SimulatorConfig

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
