"""The shared carrier rate limit: every worker of an account draws from one budget kept in the database."""

from __future__ import annotations

from sqlalchemy import func, select

from bulkchange.engine.ratelimit import DbRateLimiter, Rule, parse_rules
from bulkchange.store.tables import CarrierRateSlot

from .conftest import Harness, activation_row, new_iccid, new_imei


class FakeTime:
    """A clock that only moves when someone sleeps on it: waits are exact and instant."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_rules_parse_and_refuse_nonsense() -> None:
    assert parse_rules("devices/actions/activate=100/60, devices/actions/suspend=10/1") == {
        "devices/actions/activate": Rule(100, 60.0),
        "devices/actions/suspend": Rule(10, 1.0),
    }
    for bad in ("x=0/60", "x=ten/60", "x=5/0"):
        try:
            parse_rules(bad)
        except ValueError:
            continue
        raise AssertionError(f"{bad!r} accepted")


async def test_two_workers_share_one_budget(harness: Harness) -> None:
    clock = FakeTime()
    rules = {"devices/actions/activate": Rule(5, 60)}
    workers = [
        DbRateLimiter(harness.rt.session_factory, scope="acct-1", rules=rules, clock=clock, sleep=clock.sleep)
        for _ in range(2)
    ]
    taken_at: list[float] = []
    for i in range(12):
        await workers[i % 2]("devices/actions/activate")
        taken_at.append(clock.now)
    # Never more than 5 in any 60 s window, whichever worker asked.
    for t in taken_at:
        assert sum(1 for u in taken_at if t <= u < t + 60) <= 5
    assert taken_at[4] == taken_at[0]  # the first five at once
    assert taken_at[5] >= taken_at[0] + 60  # the sixth waited for the window to slide
    # Other endpoints and other accounts are not limited by it.
    other = DbRateLimiter(harness.rt.session_factory, scope="acct-2", rules=rules, clock=clock, sleep=clock.sleep)
    before = clock.now
    await other("devices/actions/activate")
    await workers[0]("devices/actions/list")
    assert clock.now == before


async def test_retry_after_blocks_every_worker(harness: Harness) -> None:
    clock = FakeTime()
    rules = {"devices/actions/activate": Rule(100, 60)}
    a = DbRateLimiter(harness.rt.session_factory, scope="acct", rules=rules, clock=clock, sleep=clock.sleep)
    b = DbRateLimiter(harness.rt.session_factory, scope="acct", rules=rules, clock=clock, sleep=clock.sleep)
    start = clock.now
    a.block("devices/actions/activate", 30)
    await b("devices/actions/activate")
    assert clock.now >= start + 30


async def test_the_engine_counts_activations_in_the_shared_budget(harness: Harness) -> None:
    bulk = harness.submit([activation_row(new_iccid(), new_imei()) for _ in range(3)])
    await harness.run()
    assert harness.counts(bulk) == {"PROCESSED": 3}
    with harness.rt.session_factory() as s:
        slots = s.execute(
            select(func.count()).where(CarrierRateSlot.limit_key.like("%|devices/actions/activate"))
        ).scalar_one()
    assert slots >= 1  # one batched Activate request, counted where every worker sees it
