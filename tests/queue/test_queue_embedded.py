"""EmbeddedQueue: SQS standard-queue semantics on a migrated SQLite file and on PostgreSQL.

Time is a hand-driven clock (``clock.advance``): no test sleeps.
"""

from __future__ import annotations

import sqlite3
import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from bulkchange.jobs.embedded_queue import EmbeddedQueue
from bulkchange.queue import BulkChangeMessage, QueueStats, ReceivedMessage, Transport
from bulkchange.store.tables import QueueMessage

QueueFactory = Callable[..., EmbeddedQueue]


def msg(bulk_change_id: int = 1, **kwargs: Any) -> BulkChangeMessage:
    return BulkChangeMessage(bulk_change_id=bulk_change_id, **kwargs)


def one(received: list[ReceivedMessage]) -> ReceivedMessage:
    assert len(received) == 1, received
    return received[0]


def test_embedded_queue_is_a_transport(make_queue: QueueFactory) -> None:
    transport: Transport = make_queue()
    assert transport.receive() == []


def test_a_message_round_trips_with_its_attributes(make_queue: QueueFactory) -> None:
    queue = make_queue()
    sent = msg(12, is_retry_new_activate_thingspace_device=True, service_provider_id=4, retry_number=2)
    message_id = queue.send(sent, body="wake up")

    received = one(queue.receive())

    assert received.message_id == message_id
    assert received.body == "wake up"
    assert received.attributes == sent.to_attributes()
    assert received.message() == sent
    assert received.receive_count == 1


def test_delay_hides_a_message_until_it_elapses(make_queue: QueueFactory, clock: Any) -> None:
    queue = make_queue()
    queue.send(msg(), delay_s=900)

    assert queue.receive() == []
    assert queue.stats() == QueueStats(visible=0, delayed=1, in_flight=0, dead_lettered=0, next_visible_in_s=900.0)

    clock.advance(899)
    assert queue.receive() == []
    assert queue.stats().next_visible_in_s == 1.0

    clock.advance(1)
    assert one(queue.receive()).receive_count == 1


@pytest.mark.parametrize("delay_s", [-1, 901, 10_000])
def test_delay_outside_the_sqs_range_is_refused(make_queue: QueueFactory, delay_s: int) -> None:
    with pytest.raises(ValueError, match="delay_s"):
        make_queue().send(msg(), delay_s=delay_s)


def test_a_bool_is_not_a_delay(make_queue: QueueFactory) -> None:
    with pytest.raises(TypeError):
        make_queue().send(msg(), delay_s=True)


def test_an_undeleted_message_comes_back_after_the_visibility_timeout(make_queue: QueueFactory, clock: Any) -> None:
    queue = make_queue(visibility_timeout_s=30)
    queue.send(msg())
    first = one(queue.receive())

    clock.advance(29)
    assert queue.receive() == []
    assert queue.stats().in_flight == 1

    clock.advance(1)
    second = one(queue.receive())
    assert second.message_id == first.message_id
    assert second.receive_count == 2
    assert second.receipt_handle != first.receipt_handle


def test_receive_can_override_the_visibility_timeout(make_queue: QueueFactory, clock: Any) -> None:
    queue = make_queue(visibility_timeout_s=600)
    queue.send(msg())
    one(queue.receive(visibility_timeout_s=5))
    clock.advance(5)
    assert one(queue.receive()).receive_count == 2


def test_a_deleted_message_never_comes_back(make_queue: QueueFactory, clock: Any) -> None:
    queue = make_queue(visibility_timeout_s=30)
    queue.send(msg())
    assert queue.delete(one(queue.receive()).receipt_handle) is True
    clock.advance(3600)
    assert queue.receive() == []
    assert queue.stats() == QueueStats(0, 0, 0, 0, None)


def test_a_stale_receipt_handle_cannot_delete_the_redelivered_message(make_queue: QueueFactory, clock: Any) -> None:
    queue = make_queue(visibility_timeout_s=30)
    queue.send(msg())
    slow_worker = one(queue.receive())
    clock.advance(30)
    fast_worker = one(queue.receive())

    assert queue.delete(slow_worker.receipt_handle) is False
    assert queue.change_visibility(slow_worker.receipt_handle, 600) is False
    assert queue.stats().in_flight == 1

    assert queue.delete(fast_worker.receipt_handle) is True
    assert queue.delete(fast_worker.receipt_handle) is False  # already gone


def test_the_latest_handle_still_deletes_after_the_timeout_if_nobody_received_it(
    make_queue: QueueFactory, clock: Any
) -> None:
    """As SQS: a late delete succeeds while no one else has received the message."""
    queue = make_queue(visibility_timeout_s=30)
    queue.send(msg())
    handle = one(queue.receive()).receipt_handle
    clock.advance(300)
    assert queue.delete(handle) is True


@pytest.mark.parametrize("handle", ["", "garbage", "12", ":abc", "x:abc", "99999:abc", "١:abc"])
def test_unknown_handles_are_stale(make_queue: QueueFactory, handle: str) -> None:
    queue = make_queue()
    queue.send(msg())
    one(queue.receive())
    assert queue.delete(handle) is False
    assert queue.change_visibility(handle, 0) is False
    assert queue.stats().in_flight == 1


def test_change_visibility_extends_or_releases_a_delivery(make_queue: QueueFactory, clock: Any) -> None:
    queue = make_queue(visibility_timeout_s=30)
    queue.send(msg())
    handle = one(queue.receive()).receipt_handle

    assert queue.change_visibility(handle, 120) is True
    clock.advance(119)
    assert queue.receive() == []
    assert queue.stats().next_visible_in_s == 1.0

    assert queue.change_visibility(handle, 0) is True
    assert one(queue.receive()).receive_count == 2


@pytest.mark.parametrize("timeout_s", [-1, 43_201])
def test_change_visibility_range(make_queue: QueueFactory, timeout_s: int) -> None:
    queue = make_queue()
    queue.send(msg())
    handle = one(queue.receive()).receipt_handle
    with pytest.raises(ValueError, match="timeout_s"):
        queue.change_visibility(handle, timeout_s)


def test_a_message_received_more_than_max_receives_times_is_dead_lettered(make_queue: QueueFactory, clock: Any) -> None:
    queue = make_queue(visibility_timeout_s=10, max_receives=3)
    message_id = queue.send(msg(77))
    counts = []
    for _ in range(3):
        counts.append(one(queue.receive()).receive_count)
        clock.advance(10)
    assert counts == [1, 2, 3]

    assert queue.receive() == []  # the 4th receive dead-letters instead of delivering
    clock.advance(10_000)
    assert queue.receive() == []

    assert queue.stats() == QueueStats(visible=0, delayed=0, in_flight=0, dead_lettered=1, next_visible_in_s=None)
    (dead,) = queue.dead_letters()
    assert dead.message_id == message_id
    assert dead.receive_count == 3
    assert dead.message() == msg(77)
    assert dead.dead_letter_reason is not None and "max_receives=3" in dead.dead_letter_reason


def test_the_last_handle_of_a_dead_letter_is_stale(make_queue: QueueFactory, clock: Any) -> None:
    queue = make_queue(visibility_timeout_s=10, max_receives=1)
    queue.send(msg())
    handle = one(queue.receive()).receipt_handle
    clock.advance(10)
    assert queue.receive() == []
    assert queue.delete(handle) is False
    assert len(queue.dead_letters()) == 1


def test_dead_lettering_does_not_starve_healthy_messages(make_queue: QueueFactory, clock: Any) -> None:
    queue = make_queue(visibility_timeout_s=10, max_receives=1)
    for i in range(3):
        queue.send(msg(i + 1))
    assert len(queue.receive()) == 3
    clock.advance(10)
    healthy = queue.send(msg(99))

    assert [m.message_id for m in queue.receive()] == [healthy]
    assert queue.stats().dead_lettered == 3


def test_redrive_puts_a_dead_letter_back_with_a_fresh_count(make_queue: QueueFactory, clock: Any) -> None:
    queue = make_queue(visibility_timeout_s=10, max_receives=1)
    message_id = queue.send(msg())
    one(queue.receive())
    clock.advance(10)
    assert queue.receive() == []

    queue.redrive(message_id)

    again = one(queue.receive())
    assert (again.message_id, again.receive_count) == (message_id, 1)
    assert queue.dead_letters() == []
    with pytest.raises(LookupError):
        queue.redrive(message_id)  # no longer a dead letter


def test_redrive_of_an_unknown_message_is_refused(make_queue: QueueFactory) -> None:
    with pytest.raises(LookupError, match="nope"):
        make_queue().redrive("nope")


def test_receive_takes_at_most_max_messages_in_send_order(make_queue: QueueFactory) -> None:
    queue = make_queue()
    ids = [queue.send(msg(i + 1)) for i in range(15)]
    assert [m.message_id for m in queue.receive(max_messages=10)] == ids[:10]
    assert [m.message_id for m in queue.receive(max_messages=10)] == ids[10:]
    for bad in (0, 11):
        with pytest.raises(ValueError, match="max_messages"):
            queue.receive(max_messages=bad)


def test_stats_count_each_state(make_queue: QueueFactory, clock: Any) -> None:
    queue = make_queue(visibility_timeout_s=60, max_receives=1)
    assert queue.stats() == QueueStats(0, 0, 0, 0, None)

    doomed = queue.send(msg(1))
    assert one(queue.receive(visibility_timeout_s=0)).message_id == doomed  # back at once, receives used up
    in_flight = queue.send(msg(2))
    assert one(queue.receive()).message_id == in_flight  # and this receive dead-letters ``doomed``
    queue.send(msg(3), delay_s=100)  # delayed
    queue.send(msg(4))  # visible

    stats = queue.stats()
    assert (stats.visible, stats.delayed, stats.in_flight, stats.dead_lettered) == (1, 1, 1, 1)
    assert stats.next_visible_in_s == 0.0

    one(queue.receive())
    assert queue.stats().next_visible_in_s == 60.0  # the earlier of: in flight until +60, delayed until +100


def test_queues_sharing_the_table_are_separate(make_queue: QueueFactory, clock: Any) -> None:
    a = make_queue(queue_name="a", visibility_timeout_s=10, max_receives=1)
    b = make_queue(queue_name="b")
    a_id = a.send(msg())
    handle = one(a.receive()).receipt_handle

    assert b.receive() == []
    assert b.delete(handle) is False
    assert b.stats() == QueueStats(0, 0, 0, 0, None)
    clock.advance(10)
    assert b.receive() == []  # b's receive does not dead-letter a's messages
    with pytest.raises(LookupError):
        b.redrive(a_id)
    assert a.stats().visible == 1


@pytest.mark.parametrize(
    "kwargs",
    [{"visibility_timeout_s": -1}, {"visibility_timeout_s": 43_201}, {"max_receives": 0}, {"queue_name": ""}],
)
def test_bad_queue_settings_are_refused(make_queue: QueueFactory, kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        make_queue(**kwargs)


def test_concurrent_receivers_never_share_a_message(make_queue: QueueFactory, engine: Engine) -> None:
    """200 messages, 4 threads with their own connections: every message delivered exactly once."""
    queue = make_queue(visibility_timeout_s=600)
    sent = {queue.send(msg(i + 1)) for i in range(200)}
    start = threading.Barrier(4)

    rounds = 200 // (4 * 7) + 4  # enough for every message even if SKIP LOCKED briefly hides some

    def drain() -> list[str]:
        # Every thread receives once per round, all four starting each round together: the receives
        # really overlap (on SQLite they queue for the write lock, on PostgreSQL they skip each other's rows).
        got: list[str] = []
        for _ in range(rounds):
            start.wait()
            got.extend(m.message_id for m in queue.receive(max_messages=7))
        return got

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda _: drain(), range(4)))

    everything = [message_id for result in results for message_id in result]
    duplicates = [m for m, n in Counter(everything).items() if n > 1]
    assert duplicates == []
    assert set(everything) == sent
    assert sum(1 for r in results if r) >= 2, "the receivers did not actually run concurrently"
    with engine.connect() as conn:
        counts = conn.execute(select(QueueMessage.receive_count, func.count()).group_by(QueueMessage.receive_count))
        assert dict(counts.all()) == {1: 200}


def test_concurrent_receive_and_delete_lose_nothing(make_queue: QueueFactory, clock: Any) -> None:
    """Workers that delete what they get, while a producer keeps sending: everything ends deleted once."""
    queue = make_queue(visibility_timeout_s=600)
    deleted: list[int] = []
    lock = threading.Lock()
    producing = threading.Event()
    producing.set()

    def produce() -> None:
        for i in range(100):
            queue.send(msg(i + 1))
        producing.clear()

    def work() -> None:
        while True:
            batch = queue.receive(max_messages=5)
            if not batch and not producing.is_set() and queue.stats().visible == 0:
                return
            for m in batch:
                assert queue.delete(m.receipt_handle) is True
                with lock:
                    deleted.append(m.message().bulk_change_id)

    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = [pool.submit(produce), *(pool.submit(work) for _ in range(3))]
        for future in futures:
            future.result()

    assert sorted(deleted) == list(range(1, 101))
    assert queue.stats() == QueueStats(0, 0, 0, 0, None)


def test_receive_with_nothing_visible_does_not_wait_for_the_write_lock(
    make_queue: QueueFactory, engine: Engine, clock: Any
) -> None:
    """A worker polls ``receive`` every turn; on SQLite, asking for the write lock only to find nothing made
    every poll queue behind (and hold up) the callback receiver's writes."""
    queue = make_queue()
    queue.send(msg(1), delay_s=60)  # hidden: nothing visible yet
    if engine.dialect.name != "sqlite":
        assert queue.receive() == []
        return
    holder = sqlite3.connect(engine.url.database or "", isolation_level=None)
    answered = threading.Event()
    try:
        holder.execute("BEGIN IMMEDIATE")  # another process mid-write
        polled = threading.Thread(target=lambda: (queue.receive(), answered.set()), daemon=True)
        polled.start()
        assert answered.wait(timeout=10), "receive waited for the write lock to learn nothing was visible"
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    clock.advance(61)
    assert one(queue.receive()).message().bulk_change_id == 1
