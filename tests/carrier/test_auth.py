"""Access token and session handling, the login lockout guard and concurrency, against the simulator."""

from __future__ import annotations

import asyncio

import pytest

from bulkchange.carrier.errors import AuthenticationFailed, LoginLocked, SessionExpired, TransientError
from bulkchange.carrier.thingspace.client import InMemoryLoginGuard, ThingSpaceClient
from bulkchange.carrier.thingspace.models import DeviceId
from bulkchange.simulator import FaultConfig, ManualClock, Simulator

from .conftest import ICCID, ClientFactory


def requests(sim: Simulator, endpoint: str) -> int:
    return sim.counters.requests.get(endpoint, 0)


async def test_tokens_are_reused(sim: Simulator, client: ThingSpaceClient) -> None:
    for _ in range(3):
        await client.list_page()
    await client.get_device(DeviceId(kind="iccid", id=ICCID))
    assert requests(sim, "oauth2/token") == 1
    assert requests(sim, "session/login") == 1
    assert requests(sim, "devices/actions/list") == 4


async def test_revoked_token_is_refreshed_once_and_call_retried(sim: Simulator, client: ThingSpaceClient) -> None:
    await client.list_page()
    with sim.lock:
        assert sim.auth.current_token is not None
        sim.auth.revoke_token(sim.auth.current_token)
    await client.list_page()  # 401 900901 -> new token -> same call again
    assert requests(sim, "oauth2/token") == 2
    assert requests(sim, "devices/actions/list") == 3
    assert requests(sim, "session/login") == 1


@pytest.fixture
def sim_clock() -> ManualClock:
    return ManualClock()


async def test_token_refreshed_before_expiry_with_shared_clock(
    sim: Simulator, sim_clock: ManualClock, make_client: ClientFactory
) -> None:
    client = make_client(clock=sim_clock)
    await client.list_page()
    for _ in range(3):  # keep the session alive (sliding idle window) while the hour runs out
        sim_clock.advance(1000)
        await client.list_page()
    sim_clock.advance(570)  # 30 s before expiry: inside the 60 s skew, refreshed without a 401
    await client.list_page()
    assert requests(sim, "oauth2/token") == 2
    assert requests(sim, "session/login") == 1
    assert requests(sim, "devices/actions/list") == 5  # no call was wasted on a 401
    sim_clock.advance(1201)  # idle past the announced expiresIn: new session before the call
    await client.list_page()
    assert requests(sim, "session/login") == 2
    assert requests(sim, "devices/actions/list") == 6


async def test_expired_token_only_on_server_side(
    sim: Simulator, sim_clock: ManualClock, make_client: ClientFactory
) -> None:
    client = make_client()  # real clock: the client believes its token is fresh
    await client.list_page()
    sim_clock.advance(3700)  # token and session both gone on the server
    await client.list_page()  # 401 900901 -> new token -> session expired -> login -> call
    assert requests(sim, "oauth2/token") == 2
    assert requests(sim, "session/login") == 2
    assert requests(sim, "devices/actions/list") == 4


async def test_session_expiry_relogs_in_once(sim: Simulator, client: ThingSpaceClient) -> None:
    sim.faults = FaultConfig(session_expire_every=2)
    for _ in range(4):
        await client.list_page()
    # every 2nd session-bearing request loses its session (the re-sent ones count too):
    # requests 2, 4 and 6 expired, each answered by one new login and one re-send
    assert requests(sim, "session/login") == 4
    assert requests(sim, "devices/actions/list") == 7


async def test_session_expiring_twice_in_a_row_is_transient(sim: Simulator, client: ThingSpaceClient) -> None:
    await client.list_page()
    sim.faults = FaultConfig(session_expire_every=1)
    with pytest.raises(SessionExpired) as info:
        await client.list_page()
    assert isinstance(info.value, TransientError)
    assert info.value.code == "REQUEST_FAILED.SessionToken.Expired"
    # one re-login, not a retry storm of logins
    assert requests(sim, "session/login") == 2
    assert requests(sim, "devices/actions/list") == 3


async def test_session_expiry_on_provisioning_call_does_not_duplicate(sim: Simulator, client: ThingSpaceClient) -> None:
    sim.add_device(ICCID, state="active")
    await client.list_page()
    sim.faults = FaultConfig(session_expire_every=2, endpoints=frozenset({"devices/actions/suspend"}))
    await client.suspend([[DeviceId(kind="iccid", id=ICCID)]])  # 1st: fine
    await client.restore([[DeviceId(kind="iccid", id=ICCID)]])
    sim.settle(5)
    # the 2nd suspend expires before any work, is re-sent once, performed once
    await client.suspend([[DeviceId(kind="iccid", id=ICCID)]])
    sim.settle(5)
    assert sim.counters.actions[ICCID] == {"suspend": 2, "restore": 1}
    assert requests(sim, "devices/actions/suspend") == 3


async def test_wrong_password_then_guard_blocks_further_logins(sim: Simulator, make_client: ClientFactory) -> None:
    guard = InMemoryLoginGuard()
    client = make_client(conn_overrides={"password": "wrong"}, login_guard=guard)
    with pytest.raises(AuthenticationFailed) as first:
        await client.list_page()
    assert not isinstance(first.value, LoginLocked)
    assert first.value.code == "REQUEST_FAILED.InvalidCredentials"
    assert first.value.endpoint == "session/login"
    for _ in range(3):
        with pytest.raises(LoginLocked) as again:
            await client.list_page()
        assert "operator" in again.value.message and "5 consecutive" in again.value.message
    assert requests(sim, "session/login") == 1
    assert requests(sim, "devices/actions/list") == 0

    # Another client sharing the guard (e.g. after a restart with fixed credentials) still waits
    fixed = make_client(login_guard=guard)
    with pytest.raises(LoginLocked):
        await fixed.list_page()
    assert requests(sim, "session/login") == 1
    guard.clear()  # the operator's action
    await fixed.list_page()
    assert requests(sim, "session/login") == 2


async def test_carrier_lockout_is_login_locked(sim: Simulator, make_client: ClientFactory) -> None:
    with sim.lock:
        sim.auth.locked.add("sim-user")
    client = make_client()
    with pytest.raises(LoginLocked) as info:
        await client.list_page()
    assert info.value.code == "REQUEST_FAILED.UserLocked"
    with pytest.raises(LoginLocked):
        await client.list_page()
    assert requests(sim, "session/login") == 1


async def test_wrong_client_secret(sim: Simulator, make_client: ClientFactory) -> None:
    client = make_client(conn_overrides={"client_secret": "nope"})
    with pytest.raises(AuthenticationFailed) as info:
        await client.list_page()
    assert info.value.code == "900901" and info.value.http_status == 401
    assert info.value.endpoint == "oauth2/token"
    assert requests(sim, "oauth2/token") == 1  # not retried: credentials do not heal
    assert requests(sim, "session/login") == 0


async def test_concurrent_callers_share_one_token_and_one_login(sim: Simulator, client: ThingSpaceClient) -> None:
    sim.preload(5)
    results = await asyncio.gather(*(client.list_page() for _ in range(20)))
    assert all(len(page.devices) == 5 for page in results)
    assert requests(sim, "oauth2/token") == 1
    assert requests(sim, "session/login") == 1
    assert requests(sim, "devices/actions/list") == 20


async def test_concurrent_callers_with_wrong_password_cost_one_login(
    sim: Simulator, make_client: ClientFactory
) -> None:
    client = make_client(conn_overrides={"password": "wrong"})
    results = await asyncio.gather(*(client.list_page() for _ in range(20)), return_exceptions=True)
    assert all(isinstance(r, AuthenticationFailed) for r in results)
    assert sum(isinstance(r, LoginLocked) for r in results) == 19
    assert requests(sim, "session/login") == 1


async def test_concurrent_callers_after_revocation_refresh_once(sim: Simulator, client: ThingSpaceClient) -> None:
    await client.list_page()
    with sim.lock:
        assert sim.auth.current_token is not None
        sim.auth.revoke_token(sim.auth.current_token)
    await asyncio.gather(*(client.list_page() for _ in range(20)))
    assert requests(sim, "oauth2/token") == 2


async def test_no_secret_leaks(sim: Simulator, make_client: ClientFactory) -> None:
    client = make_client()
    await client.list_page()
    await client.register_callback("CarrierService", "http://127.0.0.1:9001/x", username="u", password="cb-secret")
    sim.faults = FaultConfig(p_server_error=1.0)
    errors: list[BaseException] = []
    try:
        await client.list_page()
    except TransientError as exc:
        errors.append(exc)
    bad = make_client(conn_overrides={"password": "wrong-pass-123"})
    try:
        await bad.list_page()
    except AuthenticationFailed as exc:
        errors.append(exc)
    secrets = sim.issued_secrets() | {"sim-secret", "sim-pass", "wrong-pass-123", "cb-secret"}
    texts = [repr(client), repr(client.conn), repr(bad)]
    for exc in errors:
        texts += [str(exc), repr(exc), exc.request_text or "", exc.response_text or ""]  # type: ignore[attr-defined]
    blob = "\n".join(texts)
    assert errors and len(errors) == 2
    for secret in secrets:
        assert secret not in blob


async def test_authenticate_gets_both_tokens_once(sim: Simulator, client: ThingSpaceClient) -> None:
    await client.authenticate()
    await client.authenticate()
    await client.list_page()
    assert requests(sim, "oauth2/token") == 1
    assert requests(sim, "session/login") == 1


async def test_authenticate_with_wrong_password_then_locked(sim: Simulator, make_client: ClientFactory) -> None:
    client = make_client(conn_overrides={"password": "wrong"})
    with pytest.raises(AuthenticationFailed):
        await client.authenticate()
    with pytest.raises(LoginLocked):
        await client.authenticate()
    assert requests(sim, "session/login") == 1
