"""The Deadline value: remaining time, the margin kept free, bounded timeouts (a manual clock)."""

from __future__ import annotations

import pytest

from bulkchange.domain.deadline import Deadline, bounded


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_remaining_and_bounded_timeouts_shrink_as_time_passes() -> None:
    clock = Clock()
    deadline = Deadline.after(10.0, margin_s=2.0, clock=clock)

    assert (deadline.remaining_s(), deadline.usable_s(), deadline.expired) == (10.0, 8.0, False)
    assert deadline.bounded(30.0) == 8.0  # the call may use what is left less the margin
    assert deadline.bounded(5.0) == 5.0  # a shorter timeout is kept
    assert deadline.allows(8.0) and not deadline.allows(8.5)

    clock.now += 9.0
    assert (deadline.remaining_s(), deadline.usable_s(), deadline.bounded(30.0)) == (1.0, 0.0, 0.0)
    assert not deadline.expired and not deadline.allows(0.1)

    clock.now += 5.0
    assert deadline.expired and deadline.remaining_s() == 0.0 and deadline.bounded(30.0) == 0.0


def test_a_deadline_already_passed_allows_nothing() -> None:
    deadline = Deadline.after(-1.0, clock=Clock())
    assert deadline.expired and not deadline.allows(0.0)


def test_no_deadline_leaves_the_timeout_alone_and_the_earlier_of_two_wins() -> None:
    clock = Clock()
    soon, late = Deadline.after(5.0, clock=clock), Deadline.after(50.0, clock=clock)
    assert bounded(None, 30.0) == 30.0 and bounded(soon, 30.0) == 4.0
    assert late.earlier(soon) is soon and soon.earlier(late) is soon and soon.earlier(None) is soon


def test_a_negative_margin_is_refused() -> None:
    with pytest.raises(ValueError, match="margin_s"):
        Deadline.after(5.0, margin_s=-1.0)
