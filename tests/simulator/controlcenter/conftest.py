"""Fixtures: a Control Center simulator on real loopback HTTP with controllable clocks."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from bulkchange.simulator import ManualClock, run_in_thread
from bulkchange.simulator.controlcenter import ControlCenterConfig, ControlCenterSimulator

API = "/rws/api/v1"
USER = ("sim-user", "sim-api-key")


@dataclass
class CCEnv:
    sim: ControlCenterSimulator
    clock: ManualClock  # wall time: dates, effective dates, audit history
    ticks: ManualClock  # monotonic time of the rate limiter
    base_url: str
    api: httpx.Client  # authenticated as the configured user, under /rws/api/v1

    def status(self, iccid: str) -> str:
        device = self.sim.device(iccid)
        assert device is not None
        return device.status

    def put(self, iccid: str, body: Any) -> httpx.Response:
        return self.api.put(f"/devices/{iccid}", json=body)


@pytest.fixture
def make_cc() -> Iterator[Callable[..., CCEnv]]:
    """``make_cc(**ControlCenterConfig fields)``; the rate limit is generous unless a test sets ``tps``."""
    stack: list[tuple[Any, httpx.Client]] = []

    def factory(**config: Any) -> CCEnv:
        config.setdefault("tps", 1000.0)
        config.setdefault("tps_burst", 1000.0)
        clock, ticks = ManualClock(), ManualClock(start=0.0)
        sim = ControlCenterSimulator(ControlCenterConfig(**config), clock=clock, monotonic=ticks)
        ctx = run_in_thread(sim)
        server = ctx.__enter__()
        api = httpx.Client(base_url=server.base_url + API, auth=USER, timeout=10.0)
        stack.append((ctx, api))
        return CCEnv(sim, clock, ticks, server.base_url, api)

    yield factory
    for ctx, api in reversed(stack):
        api.close()
        ctx.__exit__(None, None, None)


@pytest.fixture
def cc(make_cc: Callable[..., CCEnv]) -> CCEnv:
    return make_cc()
