"""The shared limiter's "one call in flight per account" lease and its every-call (``"*"``) rule, on each
database: unit checks with a clock that only moves when someone sleeps, then worker processes and threads
against the Control Center simulator, whose detector answers 429 to a second open call or a call too soon."""

from __future__ import annotations

import asyncio
import itertools
import json
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from bulkchange.carrier.controlcenter import ControlCenterClient, ControlCenterConnection
from bulkchange.carrier.controlcenter.adapter import SPACING_MARGIN, ControlCenterCarrier, controlcenter_account
from bulkchange.carrier.errors import RateLimited
from bulkchange.carrier.port import RateRule, RateRules, TokenBucket
from bulkchange.engine.ratelimit import DbRateLimiter
from bulkchange.simulator import run_in_thread
from bulkchange.simulator.controlcenter import API_ROOT, ControlCenterConfig, ControlCenterSimulator
from bulkchange.simulator.controlcenter.limits import TokenBucket as CarrierBucket
from bulkchange.store.db import make_engine, make_session_factory
from bulkchange.store.migrate import upgrade
from bulkchange.store.tables import CarrierInFlight

from .test_ratelimit import FakeTime

WORKER = Path(__file__).with_name("cc_limiter_worker.py")
ONE_AT_A_TIME = RateRules({"*": RateRule(1, 0.5)}, max_in_flight=1)


@pytest.fixture
def sessions(db_url: str) -> Iterator[sessionmaker[Session]]:
    upgrade(db_url)
    engine = make_engine(db_url)
    yield make_session_factory(engine)
    engine.dispose()


def _limiter(sessions: sessionmaker[Session], clock: FakeTime, rules: RateRules = ONE_AT_A_TIME) -> DbRateLimiter:
    return DbRateLimiter.for_account(sessions, scope="cc:acct", rules=rules, clock=clock, sleep=clock.sleep, lease_s=60)


async def test_one_lease_per_account_until_it_is_given_back(sessions: sessionmaker[Session]) -> None:
    clock = FakeTime()
    a, b = _limiter(sessions, clock), _limiter(sessions, clock)
    await a("devices/edit")
    assert not b.try_lease()  # a's call is in flight
    await a.release("devices/edit")
    assert b.try_lease()
    other = DbRateLimiter.for_account(sessions, scope="cc:other", rules=ONE_AT_A_TIME, clock=clock, sleep=clock.sleep)
    assert other.try_lease()  # another account has its own


async def test_a_dead_holders_lease_expires_and_its_late_release_frees_nothing(sessions: sessionmaker[Session]) -> None:
    clock = FakeTime()
    dead, b, c = _limiter(sessions, clock), _limiter(sessions, clock), _limiter(sessions, clock)
    await dead("devices/edit")  # and never releases: the worker died
    assert not b.try_lease()
    clock.now += 61
    assert b.try_lease()  # expired: taken over
    await dead.release("devices/edit")  # a holder that comes back late gives back nothing of b's
    assert not c.try_lease()
    with sessions() as s:
        assert s.execute(select(CarrierInFlight.owner)).scalars().all()[0] is not None


async def test_a_waiting_worker_takes_the_lease_once_it_is_released(sessions: sessionmaker[Session]) -> None:
    # Real time here: the waiter polls with asyncio.sleep, so the holder's release can happen meanwhile.
    rules = RateRules({}, max_in_flight=1)
    a, b = (DbRateLimiter.for_account(sessions, scope="cc:acct", rules=rules, poll_s=0.005) for _ in range(2))
    await a("devices/get")
    waiting = asyncio.ensure_future(b("devices/get"))
    await asyncio.sleep(0.1)
    assert not waiting.done()
    await a.release("devices/get")
    await asyncio.wait_for(waiting, timeout=10)
    await b.release("devices/get")


async def test_the_tasks_of_one_process_wait_for_the_lease_without_asking_the_database(
    sessions: sessionmaker[Session],
) -> None:
    """A worker has several batches at the carrier at once: while one task holds the account's lease the others
    wait in memory, and each asks the database once, when its turn comes."""
    attempts = 0

    class Counting(DbRateLimiter):
        def try_lease(self) -> bool:
            nonlocal attempts
            attempts += 1
            return super().try_lease()

    rules = RateRules({}, max_in_flight=1)
    limiters = [Counting.for_account(sessions, scope="cc:acct", rules=rules, poll_s=0.005) for _ in range(4)]

    async def call(limiter: DbRateLimiter) -> None:
        await limiter("devices/get")
        await limiter.release("devices/get")

    await limiters[0]("devices/get")
    waiting = [asyncio.ensure_future(call(limiter)) for limiter in limiters[1:]]
    await asyncio.sleep(0.2)  # forty polling periods
    assert attempts == 1 and not any(w.done() for w in waiting)
    await limiters[0].release("devices/get")
    await asyncio.wait_for(asyncio.gather(*waiting), timeout=10)
    assert attempts == 4


async def test_a_task_cancelled_while_waiting_for_the_lease_frees_its_turn(sessions: sessionmaker[Session]) -> None:
    rules = RateRules({}, max_in_flight=1)
    other_process, b, c = (
        DbRateLimiter.for_account(sessions, scope="cc:acct", rules=rules, poll_s=0.005) for _ in range(3)
    )
    assert other_process.try_lease()  # the database lease, taken without this process's gate
    cancelled = asyncio.ensure_future(b("devices/get"))  # passes the gate, then polls the database
    await asyncio.sleep(0.05)
    cancelled.cancel()
    await other_process.release("devices/get")
    await asyncio.wait_for(c("devices/get"), timeout=10)  # b kept neither the lease nor the gate
    await c.release("devices/get")


async def test_the_every_call_rule_spaces_all_endpoints_and_a_block_pauses_the_account(
    sessions: sessionmaker[Session],
) -> None:
    clock = FakeTime()
    a, b = _limiter(sessions, clock), _limiter(sessions, clock)
    at: list[float] = []
    for i, endpoint in enumerate(["devices/edit", "devices/get", "devices/auditTrails", "devices/edit"]):
        limiter = (a, b)[i % 2]
        await limiter(endpoint)
        at.append(clock.now)
        await limiter.release(endpoint)
    assert all(later - earlier >= 0.5 for earlier, later in itertools.pairwise(at))
    a.block("*", 30)
    before = clock.now
    await b("devices/get")
    assert clock.now >= before + 30


# ----------------------------------------------------------------------------- the account's token bucket


async def _bucket_calls(
    limiter: DbRateLimiter, clock: FakeTime, round_trips: list[float], arrive_at: list[float]
) -> list[tuple[float, float, float]]:
    """One call per round trip through ``limiter``: (sent, arrived at the carrier, answered) of each, the
    arrival ``arrive_at[i]`` of the way from sending to the answer."""
    calls = []
    for round_trip, share in zip(round_trips, arrive_at, strict=True):
        await limiter("devices/get")
        sent = clock.now
        clock.now += round_trip  # the answer is in
        calls.append((sent, sent + share * round_trip, clock.now))
        await limiter.release("devices/get")
    return calls


async def test_after_a_burst_calls_follow_one_period_apart_whatever_their_round_trip(
    sessions: sessionmaker[Session],
) -> None:
    clock = FakeTime()
    rules = RateRules({}, max_in_flight=1, bucket=TokenBucket(rate_per_s=2.0, burst=3))
    limiter = _limiter(sessions, clock, rules)
    calls = await _bucket_calls(limiter, clock, [0.1] * 8, [1.0] * 8)
    sent = [c[0] for c in calls]
    assert sent[2] - sent[0] == pytest.approx(0.2)  # three back to back: each waited only for the answer before
    gaps = [later - earlier for earlier, later in itertools.pairwise(sent[3:])]
    assert gaps == pytest.approx([0.5] * 4)  # then the bucket's rate, the round trip absorbed


async def test_with_a_burst_of_one_each_call_waits_a_period_after_the_previous_answer(
    sessions: sessionmaker[Session],
) -> None:
    clock = FakeTime()
    limiter = _limiter(sessions, clock, RateRules({}, max_in_flight=1, bucket=TokenBucket(rate_per_s=2.0)))
    calls = await _bucket_calls(limiter, clock, [0.1] * 4, [1.0] * 4)
    gaps = [later[0] - earlier[0] for earlier, later in itertools.pairwise(calls)]
    assert gaps == pytest.approx([0.6] * 3)  # the answer is the only moment known to follow the carrier's count


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    burst=st.integers(1, 4),
    rate=st.sampled_from([1.0, 5.0, 20.0]),
    calls=st.lists(st.tuples(st.floats(0.0, 0.4), st.floats(0.0, 1.0)), min_size=2, max_size=12),
)
async def test_the_carriers_own_bucket_never_refuses_a_call_the_limiter_let_go(
    sessions: sessionmaker[Session], burst: int, rate: float, calls: list[tuple[float, float]]
) -> None:
    """Whatever each round trip and wherever in it the call reaches the carrier, a carrier bucket of the
    contract's rate and burst (the simulator's) has a token for it. The limiter's bucket is the adapter's: 1 %
    slower, for rounding (epoch seconds as floats are exact to about 0.2 µs)."""
    clock = FakeTime()
    rules = RateRules({}, max_in_flight=1, bucket=TokenBucket(rate_per_s=rate / SPACING_MARGIN, burst=burst))
    limiter = DbRateLimiter.for_account(
        sessions, scope=f"cc:{uuid.uuid4().hex}", rules=rules, clock=clock, sleep=clock.sleep, lease_s=60
    )
    made = await _bucket_calls(limiter, clock, [c[0] for c in calls], [c[1] for c in calls])
    carrier = CarrierBucket(rate, burst, made[0][1])
    assert all(carrier.try_take(arrived) for _, arrived, _ in made)


async def test_a_429_pauses_an_account_that_has_only_a_bucket(sessions: sessionmaker[Session]) -> None:
    clock = FakeTime()
    rules = RateRules({}, max_in_flight=1, bucket=TokenBucket(rate_per_s=5.0, burst=5))
    a, b = _limiter(sessions, clock, rules), _limiter(sessions, clock, rules)
    a.block("*", 30)
    before = clock.now
    await b("devices/get")
    assert clock.now >= before + 30


async def test_without_an_in_flight_limit_the_bucket_counts_calls_as_they_leave(
    sessions: sessionmaker[Session],
) -> None:
    clock = FakeTime()
    rules = RateRules({}, bucket=TokenBucket(rate_per_s=1.0, burst=2))
    workers = [DbRateLimiter.for_account(sessions, scope="cc:open", rules=rules, clock=clock, sleep=clock.sleep)
               for _ in range(2)]
    sent = []
    for i in range(5):
        await workers[i % 2]("devices/get")
        sent.append(clock.now)
    assert sent[1] == sent[0]  # two at once, whichever worker
    assert [later - earlier for earlier, later in itertools.pairwise(sent[1:])] == pytest.approx([1.0] * 3)


def test_the_adapters_rules_make_a_one_call_limiter(sessions: sessionmaker[Session]) -> None:
    account = controlcenter_account(provider_id=1, credential_id=1, base_url="https://cc.example/rws/api",
                                    username="u", api_key="k-value", tps=4)
    carrier = ControlCenterCarrier()
    limiter = DbRateLimiter.for_account(sessions, scope=carrier.limit_scope(account),
                                        rules=carrier.rate_rules(account, ""))
    assert limiter.try_lease() and not limiter.try_lease()


# ------------------------------------------------------------------------- against the simulator, real time


@pytest.fixture
def cc_sim() -> Iterator[tuple[ControlCenterSimulator, str]]:
    # Strict: calls at most 20 a second with no back-to-back allowance, one open call; each call takes
    # 50 ms, so two workers that do not wait for each other's answer meet the detector.
    sim = ControlCenterSimulator(ControlCenterConfig(tps=20, tps_burst=1, max_in_flight=1, latency_s=0.05))
    with run_in_thread(sim) as server:
        yield sim, server.base_url + API_ROOT


def _run_workers(db_url: str, base_url: str, iccids: list[str], *, tps: float, in_flight: bool) -> list[dict[str, int]]:
    procs = [
        subprocess.Popen(
            [sys.executable, str(WORKER), db_url, base_url, "cc:sim", str(tps), "1" if in_flight else "0", *iccids],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results


@pytest.mark.slow
@pytest.mark.serial
def test_three_processes_keep_one_call_in_flight_and_the_rate(
    db_url: str, cc_sim: tuple[ControlCenterSimulator, str]
) -> None:
    upgrade(db_url)
    sim, base_url = cc_sim
    iccids = [device.iccid for device in sim.preload(8)]
    results = _run_workers(db_url, base_url, iccids, tps=20, in_flight=True)
    assert results == [{"ok": 8, "rate_limited": 0, "other": 0}] * 3
    counters = sim.counters
    assert (counters.rate_limited, counters.max_in_flight) == (0, 1), counters.throttled
    assert counters.requests["devices/get"] == 24


@pytest.mark.slow
@pytest.mark.serial
def test_without_the_lease_the_carrier_sees_calls_overlap(
    db_url: str, cc_sim: tuple[ControlCenterSimulator, str]
) -> None:
    """The check above can fail: the same workers spaced by rate alone open a second call during the first."""
    upgrade(db_url)
    sim, base_url = cc_sim
    iccids = [device.iccid for device in sim.preload(8)]
    _run_workers(db_url, base_url, iccids, tps=40, in_flight=False)
    counters = sim.counters
    assert counters.max_in_flight > 1 and counters.throttled.get("in_flight", 0) > 0, counters


def _thread_worker(
    sessions: sessionmaker[Session],
    base_url: str,
    iccids: list[str],
    tps: float | None,
    burst: int,
    errors: list[BaseException],
) -> None:
    async def run() -> None:
        conn = ControlCenterConnection(base_url=base_url, username="sim-user", api_key="sim-api-key")
        limiter = None
        if tps is not None:  # the adapter's own rules for an account of this TPS
            account = controlcenter_account(provider_id=1, credential_id=1, base_url=base_url, username="sim-user",
                                            api_key="sim-api-key", tps=tps, burst=burst)
            carrier = ControlCenterCarrier()
            limiter = DbRateLimiter.for_account(
                sessions, scope=carrier.limit_scope(account), rules=carrier.rate_rules(account, ""), poll_s=0.005
            )
        async with ControlCenterClient(conn, limiter=limiter, max_attempts=1) as client:
            for iccid in iccids:
                await client.get_device(iccid)

    try:
        asyncio.run(run())
    except BaseException as exc:  # collected for the test thread
        errors.append(exc)


@pytest.mark.serial  # it measures the spacing of calls: other tests' load on the cores must not blur it
@pytest.mark.parametrize(
    ("limited", "burst"), [(True, 1), (True, 3), (False, 1)], ids=["adapter-rules", "adapter-rules-burst", "no-limiter"]
)
def test_three_threads_stay_within_the_accounts_tps(sessions: sessionmaker[Session], limited: bool, burst: int) -> None:
    """The simulator refuses a call its bucket (5 a second, ``burst`` back to back) has no token for, and
    allows many open calls: with the adapter's rules for the same contract no call is refused; the same
    threads without the limiter are (the check works)."""
    sim = ControlCenterSimulator(ControlCenterConfig(tps=5, tps_burst=burst, max_in_flight=10))
    iccids = [device.iccid for device in sim.preload(4)]
    errors: list[BaseException] = []
    with run_in_thread(sim) as server:
        url = server.base_url + API_ROOT
        threads = [
            threading.Thread(
                target=_thread_worker, args=(sessions, url, iccids, 5.0 if limited else None, burst, errors)
            )
            for _ in range(3)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
    if limited:
        assert errors == [] and sim.counters.rate_limited == 0, (errors, sim.counters.throttled)
        assert (sim.counters.requests["devices/get"], sim.counters.max_in_flight) == (12, 1)
    else:
        assert any(isinstance(e, RateLimited) for e in errors) and sim.counters.throttled.get("tps", 0) > 0
