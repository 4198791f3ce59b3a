"""The worker loop on its own: registered kinds run each turn, one kind's failure does not stop the others,
``until_idle`` ends once nothing waits, and a database outage is waited out with one log line each way."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest
from sqlalchemy.exc import OperationalError
from structlog.testing import capture_logs

from bulkchange.domain.retry import RetryPolicy
from bulkchange.jobs.loop import WorkerLoop
from bulkchange.jobs.outage import Outage, QueueUnavailable
from bulkchange.logging_setup import configure_logging

FAST = RetryPolicy(max_attempts=1000, base_s=0.001, cap_s=0.002)


@pytest.fixture(autouse=True)
def _info_logs() -> None:
    """These tests read INFO lines; another test may have left the level higher (the Lambda's settings)."""
    configure_logging("INFO")


@dataclass
class Countdown:
    """Has ``left`` units of work, one per turn; raises ``failures`` (in order) first."""

    kind: str
    left: int
    failures: list[BaseException] = field(default_factory=list)
    runs: int = 0
    asked: int = 0  # how often the loop asked when work is due

    async def run_due(self) -> int:
        self.runs += 1
        if self.failures:
            raise self.failures.pop(0)
        if self.left:
            self.left -= 1
            return 1
        return 0

    def next_due_in_s(self) -> float | None:
        self.asked += 1
        return 0.0 if self.left else None


def _lost_connection() -> OperationalError:
    return OperationalError("SELECT 1", {}, Exception("connection refused"), connection_invalidated=True)


def _loop(*sources: Countdown, poll_s: float = 0.01) -> WorkerLoop:
    return WorkerLoop(list(sources), Outage("database", FAST), Outage("queue", FAST), poll_s=poll_s)


async def test_until_idle_runs_every_kind_until_none_has_work() -> None:
    a, b = Countdown("a", 3), Countdown("b", 5)
    done = await _loop(a, b).run(until_idle=True)
    assert done == 8 and a.left == b.left == 0


async def test_when_work_is_due_is_asked_only_after_an_idle_turn() -> None:
    """A productive turn is followed by another at once, so asking every kind when its work is due (a
    database read each) would be wasted; only the idle turns that end the run ask."""
    a = Countdown("a", 4)
    done = await _loop(a).run(until_idle=True)
    assert done == 4 and a.runs == 6  # four productive turns, then the two quiet ones
    assert a.asked == 2


async def test_a_failing_kind_is_retried_and_does_not_stop_the_others() -> None:
    broken = Countdown("broken", 1, failures=[RuntimeError("bug"), RuntimeError("bug")])
    fine = Countdown("fine", 2)
    with capture_logs() as logs:
        done = await _loop(broken, fine).run(until_idle=True)
    assert done == 3 and broken.left == fine.left == 0
    assert [e["kind"] for e in logs if e["event"].startswith("work failed")] == ["broken", "broken"]


async def test_a_database_outage_is_waited_out_logged_once_each_way_and_reported_not_ready() -> None:
    source = Countdown("messages", 2, failures=[_lost_connection() for _ in range(5)])
    loop = _loop(source)
    seen_ready: list[bool] = []

    async def watch() -> None:
        while source.failures:
            seen_ready.append(not loop.db_outage.active)
            await asyncio.sleep(0)

    with capture_logs() as logs:
        watcher = asyncio.create_task(watch())
        done = await loop.run(until_idle=True)
        await watcher
    assert done == 2 and not loop.db_outage.active
    assert False in seen_ready
    events = [e["event"] for e in logs]
    assert events.count("database unavailable; waiting for it to come back") == 1
    back = [e for e in logs if e["event"] == "database available again"]
    assert len(back) == 1 and back[0]["failed_attempts"] == 5


async def test_a_queue_outage_is_told_apart_from_a_database_one() -> None:
    source = Countdown("messages", 1, failures=[QueueUnavailable("connection refused")])
    loop = _loop(source)
    with capture_logs() as logs:
        assert await loop.run(until_idle=True) == 1
    assert [e["event"] for e in logs if "unavailable" in e["event"]] == [
        "queue unavailable; waiting for it to come back"
    ]


async def test_stop_ends_a_loop_that_is_waiting() -> None:
    stop = asyncio.Event()
    loop = _loop(Countdown("idle", 0), poll_s=5.0)
    task = asyncio.create_task(loop.run(stop=stop))
    await asyncio.sleep(0.05)
    stop.set()
    assert await asyncio.wait_for(task, timeout=2) == 0


def test_errors_that_are_not_outages_are_not_mistaken_for_one() -> None:
    from bulkchange.store.db import is_connection_lost as is_connection_error

    assert is_connection_error(_lost_connection())
    wrapped = RuntimeError("while applying")
    wrapped.__cause__ = _lost_connection()
    assert is_connection_error(wrapped)
    assert not is_connection_error(ValueError("bad row"))
