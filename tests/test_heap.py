"""The start-up heap is frozen out of the collector's sight, but the collector still reclaims new cycles; a unit
of work can keep the collector off while it runs."""

from __future__ import annotations

import gc
import threading
import weakref

import pytest

from bulkchange import heap
from bulkchange.heap import (
    MIDDLE_THRESHOLD,
    START_UP_MIDDLE_THRESHOLD,
    YOUNG_THRESHOLD,
    collect_older_rarely_while_starting,
    collect_young_less_often,
    collection_paused,
    settle_startup_objects,
)


class _Node:
    def __init__(self) -> None:
        self.other: _Node | None = None


def _cycle() -> weakref.ref[_Node]:
    a, b = _Node(), _Node()
    a.other, b.other = b, a
    return weakref.ref(a)


def test_objects_alive_at_start_up_are_frozen_and_the_young_threshold_raised() -> None:
    survivor = _Node()
    settle_startup_objects()
    assert gc.is_tracked(survivor)
    assert gc.get_freeze_count() > 0
    assert survivor not in gc.get_objects(generation=2)  # the oldest generation no longer walks it
    assert gc.get_threshold()[0] == YOUNG_THRESHOLD


def test_cycles_made_after_settling_are_still_collected_without_being_asked() -> None:
    settle_startup_objects()
    dead = _cycle()
    assert dead() is not None  # kept alive by its own cycle: only the collector can free it
    # Enough new objects kept alive (the collector counts allocations net of frees) to start a young
    # collection on their own.
    kept = [_Node() for _ in range(2 * YOUNG_THRESHOLD)]
    assert dead() is None
    assert len(kept) == 2 * YOUNG_THRESHOLD


def test_garbage_cycles_of_start_up_are_reclaimed_before_freezing() -> None:
    dead = _cycle()
    settle_startup_objects()
    assert dead() is None  # collected, not frozen for the life of the process


def test_settling_returns_the_older_generations_to_the_usual_pace_after_a_start_up() -> None:
    """The command line starts at a slower pace for the middle generation (bulkchange.cli); a process that runs
    on after its start-up collects it as CPython does again once settled."""
    collect_older_rarely_while_starting()
    assert gc.get_threshold()[1] == START_UP_MIDDLE_THRESHOLD
    settle_startup_objects()
    assert gc.get_threshold()[:2] == (YOUNG_THRESHOLD, MIDDLE_THRESHOLD)


def test_no_collection_while_paused_and_cycles_collected_once_it_ends() -> None:
    collect_young_less_often()
    with collection_paused():
        dead = _cycle()
        kept = [_Node() for _ in range(3 * YOUNG_THRESHOLD)]  # would start young collections on their own
        assert not gc.isenabled()
        assert dead() is not None  # nothing examined it meanwhile
    assert gc.isenabled()
    more = [_Node() for _ in range(2 * YOUNG_THRESHOLD)]  # the collector runs again without being asked
    assert dead() is None
    assert len(kept) + len(more) == 5 * YOUNG_THRESHOLD


def test_overlapping_pauses_keep_the_collector_off_until_the_last_ends() -> None:
    first_in, second_in, first_out = threading.Event(), threading.Event(), threading.Event()
    observed: list[bool] = []

    def second() -> None:
        first_in.wait(5)
        with collection_paused():
            second_in.set()
            first_out.wait(5)
            observed.append(gc.isenabled())  # the first pause ended; this one still runs

    thread = threading.Thread(target=second)
    thread.start()
    with collection_paused():
        first_in.set()
        second_in.wait(5)
    first_out.set()
    thread.join(5)
    assert observed == [False]
    assert gc.isenabled()


def test_a_collector_switched_off_before_stays_off() -> None:
    gc.disable()
    try:
        with collection_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_pauses_chained_without_a_break_still_collect_now_and_then(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr(heap, "_clock", lambda: now[0])
    first = collection_paused()
    first.__enter__()
    dead = _cycle()
    for _ in range(3):  # each block starts before the one before it ends: the collector never comes back on
        following = collection_paused()
        following.__enter__()
        first.__exit__(None, None, None)
        first = following
        assert dead() is not None
        now[0] += heap.MAX_PAUSE_S / 4
    now[0] += heap.MAX_PAUSE_S
    following = collection_paused()
    following.__enter__()
    first.__exit__(None, None, None)  # ends more than MAX_PAUSE_S after the collector went off
    assert dead() is None
    assert not gc.isenabled()  # still off for the block that runs on
    following.__exit__(None, None, None)
    assert gc.isenabled()
