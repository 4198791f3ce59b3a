"""The wake-up outbox relay: a leased row, sent once per lease, taken over when its owner is gone."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import select, update

from bulkchange.engine.outbox import OutboxStatus, WakeupRelay, wakeup_pending
from bulkchange.engine.submit import create_bulk_change
from bulkchange.store.tables import OutboxMessage

from .conftest import Harness, activation_row, new_iccid, new_imei


class Unreachable:
    """A queue that takes nothing (the submitting process's view during an outage of the queue)."""

    def send(self, *_args: Any, **_kwargs: Any) -> str:
        raise ConnectionError("queue unreachable")


def _submit_with_queue_down(h: Harness) -> int:
    with h.rt.session_factory() as session:
        return create_bulk_change(
            session,
            Unreachable(),  # type: ignore[arg-type]
            [activation_row(new_iccid(), new_imei())],
            status="active",
            service_provider_id=h.provider_id,
        )


def _row(h: Harness, bulk_id: int) -> OutboxMessage:
    with h.rt.session_factory() as session:
        return session.execute(select(OutboxMessage).where(OutboxMessage.bulk_change_id == bulk_id)).scalar_one()


async def test_a_refused_wake_up_stays_due_and_a_relay_sends_it_once(polling_harness: Harness) -> None:
    h = polling_harness
    bulk_id = _submit_with_queue_down(h)
    row = _row(h, bulk_id)
    assert row.status == OutboxStatus.PENDING and row.attempt_count == 1
    assert "queue unreachable" in (row.last_error or "")
    assert row.next_attempt_at is not None and row.next_attempt_at <= h.rt.ctx.clock()  # due for the workers now
    first, second = WakeupRelay(h.rt.ctx, worker_id="a"), WakeupRelay(h.rt.ctx, worker_id="b")
    assert first.claim() == [row.id]
    assert second.claim() == []  # leased to the first
    assert await second.run_due() == 0
    # The first dies before sending: once its lease runs out the second takes the row over and sends it.
    with h.rt.session_factory.begin() as session:
        session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id == row.id)
            .values(lease_expires_at=h.rt.ctx.clock() - timedelta(seconds=1))
        )
    assert await second.run_due() == 1
    assert await first.run_due() == 0  # nothing of its own left to send
    assert h.rt.transport.stats().visible == 1  # one wake-up in the queue, not two
    sent = _row(h, bulk_id)
    assert sent.status == OutboxStatus.SENT and sent.transport_message_id and sent.lease_owner is None
    with h.rt.session_factory() as session:
        assert not wakeup_pending(session, bulk_id)
    assert h.rt.engine.wakeups.next_due_in_s() is None


async def test_a_submission_whose_queue_answers_leaves_nothing_for_the_relay(polling_harness: Harness) -> None:
    h = polling_harness
    bulk_id = h.submit([activation_row(new_iccid(), new_imei())])
    row = _row(h, bulk_id)
    assert row.status == OutboxStatus.SENT and row.attempt_count == 1
    assert h.rt.engine.wakeups.claim() == []
    await h.run()
    assert h.counts(bulk_id) == {"PROCESSED": 1}
