"""Injected simulator faults mapped to typed errors, with the retry rules that keep provisioning safe."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest

from bulkchange.carrier.errors import OutcomeUnknown, RateLimited, TransientError
from bulkchange.carrier.thingspace.client import Limiter, ThingSpaceClient
from bulkchange.carrier.thingspace.models import DeviceId
from bulkchange.simulator import FaultConfig, ServerHandle, Simulator

from .conftest import ICCID, IMEI, ClientFactory, connection

DEVICE = [[DeviceId(kind="iccid", id=ICCID), DeviceId(kind="imei", id=IMEI)]]


def requests(sim: Simulator, endpoint: str) -> int:
    return sim.counters.requests.get(endpoint, 0)


def heal_after(sim: Simulator, endpoint: str, calls: int) -> Limiter:
    """A limiter hook that removes all faults just before the ``calls``-th request to ``endpoint``."""
    seen = {"n": 0}

    async def limiter(name: str) -> None:
        if name == endpoint:
            seen["n"] += 1
            if seen["n"] == calls:
                sim.faults = FaultConfig()

    return limiter


async def activate(client: ThingSpaceClient) -> str:
    accepted = await client.activate(DEVICE, service_plan="M2M_4G", mdn_zip_code="98801")
    return accepted.request_id


# ---------------------------------------------------------------------------------------------- 5xx


async def test_503_retried_then_transient(sim: Simulator, client: ThingSpaceClient) -> None:
    sim.faults = FaultConfig(p_server_error=1.0)
    with pytest.raises(TransientError) as info:
        await client.list_page()
    assert info.value.http_status == 503 and info.value.code == "REQUEST_FAILED.ServiceUnavailable"
    assert requests(sim, "devices/actions/list") == 4  # max_attempts


async def test_503_on_activate_is_retried_because_nothing_was_done(sim: Simulator, make_client: ClientFactory) -> None:
    sim.faults = FaultConfig(p_server_error=1.0)
    client = make_client(limiter=heal_after(sim, "devices/actions/activate", 3))
    assert await activate(client)
    sim.settle(5)
    assert requests(sim, "devices/actions/activate") == 3
    assert sim.counters.actions[ICCID]["activate"] == 1


# ---------------------------------------------------------------------------------------------- 429


async def test_429_waits_retry_after_then_succeeds(sim: Simulator, make_client: ClientFactory) -> None:
    sim.faults = FaultConfig(p_rate_limited=1.0, retry_after_s=1)
    client = make_client(backoff_cap_s=2.0, limiter=heal_after(sim, "devices/actions/list", 2))
    started = time.monotonic()
    await client.list_page()
    assert time.monotonic() - started >= 1.0  # honoured Retry-After, not the 10 ms backoff
    assert requests(sim, "devices/actions/list") == 2


async def test_429_persistent_raises_rate_limited_with_retry_after(sim: Simulator, make_client: ClientFactory) -> None:
    sim.faults = FaultConfig(p_rate_limited=1.0, retry_after_s=1)
    client = make_client(backoff_cap_s=2.0, max_attempts=2)
    with pytest.raises(RateLimited) as info:
        await activate(client)
    assert info.value.retry_after == 1.0 and info.value.http_status == 429
    assert info.value.code == "REQUEST_FAILED.RateLimitExceeded"
    assert requests(sim, "devices/actions/activate") == 2


async def test_429_longer_than_backoff_cap_is_left_to_the_caller(sim: Simulator, make_client: ClientFactory) -> None:
    sim.faults = FaultConfig(p_rate_limited=1.0, retry_after_s=120)
    client = make_client(backoff_cap_s=1.0)
    started = time.monotonic()
    with pytest.raises(RateLimited) as info:
        await activate(client)
    assert info.value.retry_after == 120.0
    assert time.monotonic() - started < 1.0
    assert requests(sim, "devices/actions/activate") == 1


# ------------------------------------------------------------------------------------- slow / timeout


async def test_slow_activate_is_outcome_unknown_and_never_resent(sim: Simulator, make_client: ClientFactory) -> None:
    sim.faults = FaultConfig(p_slow=1.0, slow_s=1.0)
    client = make_client(timeout=0.3)
    with pytest.raises(OutcomeUnknown) as info:
        await activate(client)
    assert info.value.endpoint == "devices/actions/activate" and info.value.device == ICCID
    assert info.value.request_text and '"servicePlan":"M2M_4G"' in info.value.request_text
    sim.settle(5)
    assert requests(sim, "devices/actions/activate") == 1
    assert sim.counters.actions[ICCID]["activate"] == 1  # it *was* performed: the engine must reconcile


async def test_slow_list_is_retried_then_transient(sim: Simulator, make_client: ClientFactory) -> None:
    sim.faults = FaultConfig(p_slow=1.0, slow_s=0.6)
    client = make_client(timeout=0.2, max_attempts=2)
    with pytest.raises(TransientError):
        await client.list_page()
    assert requests(sim, "devices/actions/list") == 2


# ------------------------------------------------------------------------------------------ malformed


async def test_malformed_activate_is_outcome_unknown(sim: Simulator, client: ThingSpaceClient) -> None:
    sim.faults = FaultConfig(p_malformed=1.0)
    with pytest.raises(OutcomeUnknown) as info:
        await activate(client)
    assert info.value.http_status == 200 and info.value.response_text
    sim.settle(5)
    assert requests(sim, "devices/actions/activate") == 1
    assert sim.counters.actions[ICCID]["activate"] == 1


async def test_malformed_add_is_outcome_unknown(sim: Simulator, client: ThingSpaceClient) -> None:
    sim.faults = FaultConfig(p_malformed=1.0)
    with pytest.raises(OutcomeUnknown):
        await client.add_devices(DEVICE)
    assert requests(sim, "devices/actions/add") == 1


async def test_malformed_list_is_transient_and_retried(sim: Simulator, make_client: ClientFactory) -> None:
    sim.faults = FaultConfig(p_malformed=1.0)
    with pytest.raises(TransientError):
        await make_client(max_attempts=3).list_page()
    assert requests(sim, "devices/actions/list") == 3
    sim.faults = FaultConfig(p_malformed=1.0)
    page = await make_client(limiter=heal_after(sim, "devices/actions/list", 2)).list_page()
    assert page.devices == []


async def test_malformed_request_status_is_transient(sim: Simulator, make_client: ClientFactory) -> None:
    client = make_client(max_attempts=2)
    request_id = await activate(client)
    sim.faults = FaultConfig(p_malformed=1.0)
    with pytest.raises(TransientError):
        await client.request_status(request_id)
    assert requests(sim, "requests/status") == 2


# ------------------------------------------------------------------------------------ no server at all


async def test_connection_refused_is_transient_and_retried() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed when the block ends: nothing listens there
    attempts: list[str] = []

    async def limiter(name: str) -> None:
        attempts.append(name)

    conn = connection(f"http://127.0.0.1:{port}")
    async with ThingSpaceClient(conn, backoff_initial_s=0.01, max_attempts=3, limiter=limiter) as client:
        with pytest.raises(TransientError) as info:
            await client.activate(DEVICE, service_plan="M2M_4G", mdn_zip_code="98801")
    assert "before sending" in info.value.message
    assert attempts == ["oauth2/token"] * 3  # safe to repeat: nothing was sent


async def test_connection_dropped_after_sending_real_http(server: ServerHandle) -> None:
    """Tokens from the simulator, M2M calls to a server that reads the request and hangs up."""
    received: list[bytes] = []

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received.append(await reader.read(65536))
        writer.close()

    dropper = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    port = dropper.sockets[0].getsockname()[1]
    conn = connection(
        f"http://127.0.0.1:{port}",
        token_url=f"{server.base_url}/api/ts/v1/oauth2/token",
        login_url=f"{server.base_url}/api/m2m/v1/session/login",
    )
    try:
        async with ThingSpaceClient(conn, backoff_initial_s=0.01, max_attempts=3) as client:
            with pytest.raises(OutcomeUnknown) as info:
                await client.activate(DEVICE, service_plan="M2M_4G", mdn_zip_code="98801")
            assert "may or may not" in info.value.message
            assert len(received) == 1  # provisioning: never re-sent
            with pytest.raises(TransientError):
                await client.list_page()
            assert len(received) == 4  # read-only: retried up to max_attempts
    finally:
        dropper.close()
        await dropper.wait_closed()
