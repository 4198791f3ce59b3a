"""A Control Center that hangs cannot hold a caller past its deadline (the real simulator on loopback)."""

from __future__ import annotations

import pytest

from bulkchange.carrier.errors import DeadlineExceeded, OutcomeUnknown
from bulkchange.domain.deadline import Deadline
from bulkchange.simulator.controlcenter import ControlCenterConfig, ControlCenterFaults, ControlCenterSimulator

from .conftest import ClientFactory

HANG = 60.0


@pytest.mark.parametrize("cc_config", [ControlCenterConfig(tps=1000, tps_burst=1000, max_in_flight=5)])
async def test_a_hanging_read_returns_before_the_deadline_as_deadline_exceeded(
    make_cc_client: ClientFactory, cc_sim: ControlCenterSimulator
) -> None:
    device = cc_sim.add_device()
    cc_sim.faults = ControlCenterFaults(p_slow=1.0, slow_s=HANG, endpoints=frozenset({"devices/get"}))
    deadline = Deadline.after(2.0, margin_s=0.5)
    client = make_cc_client(timeout=30.0, max_attempts=4, deadline=deadline, min_call_s=0.5)

    with pytest.raises(DeadlineExceeded) as info:
        await client.get_device(device.iccid)

    assert not deadline.expired and info.value.device == device.iccid
    assert cc_sim.counters.requests == {"devices/get": 1}


async def test_a_hanging_edit_cut_short_is_outcome_unknown(
    make_cc_client: ClientFactory, cc_sim: ControlCenterSimulator
) -> None:
    device = cc_sim.add_device()
    cc_sim.faults = ControlCenterFaults(p_slow=1.0, slow_s=HANG, endpoints=frozenset({"devices/edit"}))
    deadline = Deadline.after(2.0, margin_s=0.5)
    client = make_cc_client(timeout=30.0, deadline=deadline, min_call_s=0.5)

    with pytest.raises(OutcomeUnknown):
        await client.edit_device(device.iccid, status="ACTIVATED")

    assert not deadline.expired and cc_sim.counters.puts == {device.iccid: 1}


async def test_no_call_is_started_with_less_than_the_minimum_left(
    make_cc_client: ClientFactory, cc_sim: ControlCenterSimulator
) -> None:
    device = cc_sim.add_device()
    client = make_cc_client(deadline=Deadline.after(2.5, margin_s=1.0), min_call_s=2.0)

    with pytest.raises(DeadlineExceeded, match="not made"):
        await client.edit_device(device.iccid, status="ACTIVATED")

    assert cc_sim.counters.requests == {}
