"""A carrier that hangs cannot hold a caller past its deadline (ThingSpace client, real simulator on loopback).

Without a deadline the same calls would take their full timeout on each of their attempts (30 s × 4 here):
with one, every attempt's timeout, the limiter's wait and the retry budget shrink to the time left, and
a call that cannot start in time is not made (``DeadlineExceeded``: nothing happened at the carrier).
"""

from __future__ import annotations

import asyncio

import pytest

from bulkchange.carrier.errors import DeadlineExceeded, OutcomeUnknown, RateLimited, TransientError
from bulkchange.carrier.thingspace.client import InMemoryLoginGuard
from bulkchange.carrier.thingspace.models import DeviceId
from bulkchange.domain.deadline import Deadline
from bulkchange.simulator import FaultConfig, Simulator

from .conftest import ICCID, IMEI, ClientFactory

DEVICE = [[DeviceId(kind="iccid", id=ICCID), DeviceId(kind="imei", id=IMEI)]]
HANG = 60.0  # the simulator answers this late: far beyond every deadline below


def requests(sim: Simulator, endpoint: str) -> int:
    return sim.counters.requests.get(endpoint, 0)


async def test_a_hanging_read_returns_before_the_deadline_as_deadline_exceeded(
    sim: Simulator, make_client: ClientFactory
) -> None:
    client = make_client(timeout=30.0, min_call_s=0.5)
    await client.authenticate()
    sim.faults = FaultConfig(p_slow=1.0, slow_s=HANG, endpoints=frozenset({"devices/actions/list"}))
    deadline = Deadline.after(2.0, margin_s=0.5)
    client.deadline = deadline

    with pytest.raises(DeadlineExceeded) as info:
        await client.list_page()

    assert not deadline.expired  # the margin is still there for the caller to record what happened
    assert info.value.endpoint == "devices/actions/list"
    assert requests(sim, "devices/actions/list") == 1  # cut short once, not retried into the deadline


async def test_a_hanging_login_is_cut_short_and_not_counted_as_a_failed_login(
    sim: Simulator, make_client: ClientFactory
) -> None:
    guard = InMemoryLoginGuard()
    sim.faults = FaultConfig(p_slow=1.0, slow_s=HANG, endpoints=frozenset({"session/login"}))
    deadline = Deadline.after(2.0, margin_s=0.5)
    client = make_client(timeout=30.0, min_call_s=0.5, login_guard=guard, deadline=deadline)

    with pytest.raises(DeadlineExceeded):
        await client.authenticate()

    assert not deadline.expired
    assert requests(sim, "session/login") == 1
    guard.check()  # not locked: running out of time says nothing about the credentials


async def test_a_provisioning_call_cut_short_after_it_left_is_outcome_unknown(
    sim: Simulator, make_client: ClientFactory
) -> None:
    client = make_client(timeout=30.0, min_call_s=0.5)
    await client.authenticate()
    sim.faults = FaultConfig(p_slow=1.0, slow_s=HANG, endpoints=frozenset({"devices/actions/activate"}))
    deadline = Deadline.after(2.0, margin_s=0.5)
    client.deadline = deadline

    with pytest.raises(OutcomeUnknown):  # the request had reached the carrier: reconcile, never "not started"
        await client.activate(DEVICE, service_plan="M2M_4G", mdn_zip_code="98801")

    assert not deadline.expired and requests(sim, "devices/actions/activate") == 1


async def test_no_call_is_started_with_less_than_the_minimum_left(sim: Simulator, make_client: ClientFactory) -> None:
    client = make_client(deadline=Deadline.after(2.5, margin_s=1.0), min_call_s=2.0)

    with pytest.raises(DeadlineExceeded, match="not made"):
        await client.list_page()

    assert sim.counters.requests == {}  # not even the token: nothing left this process


async def test_the_retry_budget_shrinks_to_the_time_left(sim: Simulator, make_client: ClientFactory) -> None:
    """A 429 asking for 5 s when 3 s are left: no sleeping into the deadline, the carrier's answer is raised."""
    client = make_client(backoff_cap_s=10.0, max_attempts=4)
    await client.authenticate()
    sim.faults = FaultConfig(p_rate_limited=1.0, retry_after_s=5)
    deadline = Deadline.after(3.0, margin_s=0.5)
    client.deadline = deadline

    with pytest.raises(RateLimited):
        await client.list_page()

    assert not deadline.expired and requests(sim, "devices/actions/list") == 1


async def test_a_rate_limiter_wait_past_the_deadline_is_not_sat_out(sim: Simulator, make_client: ClientFactory) -> None:
    async def slow_limiter(_endpoint: str) -> None:
        await asyncio.sleep(HANG)

    deadline = Deadline.after(3.0, margin_s=0.5)
    client = make_client(limiter=slow_limiter, deadline=deadline)

    with pytest.raises(DeadlineExceeded, match="rate limit"):
        await client.list_page()

    assert not deadline.expired and sim.counters.requests == {}


async def test_deadline_exceeded_is_a_transient_error_the_client_does_not_retry(
    sim: Simulator, make_client: ClientFactory
) -> None:
    client = make_client(timeout=30.0, min_call_s=0.5, max_attempts=4)
    await client.authenticate()
    sim.faults = FaultConfig(p_slow=1.0, slow_s=HANG, endpoints=frozenset({"devices/actions/list"}))
    client.deadline = Deadline.after(2.0, margin_s=0.5)

    with pytest.raises(TransientError) as info:  # what today's engine does with it: retry later, nothing sent
        await client.list_page()

    assert isinstance(info.value, DeadlineExceeded) and requests(sim, "devices/actions/list") == 1
