"""The wake-up outbox: a committed bulk change gets its wake-up message whatever the queue does meanwhile.

A submission writes the bulk change, its device changes and an ``OutboxMessage`` row (the wake-up) in one
transaction (``add_wakeup``). After the commit:

* the submitting process sends it at once (``send_after_commit``, the fast path). If the queue refuses or
  cannot be reached, the row stays PENDING and due now, and the submission still succeeds — the bulk
  change exists, the client is told its wake-up is pending (``wakeup_pending``), never given an error;
* every running worker relays due rows as part of its side work (``WakeupRelay``): claimed with a lease
  (PENDING → SENDING), sent, marked SENT; a failed send goes back to PENDING with the outage backoff
  (``EngineContext.outage_policy``) and is never given up. A queue outage is logged once per process
  (``EngineContext.queue_outage``), not once per row and attempt.

Until the fast path has had its chance the row is not due (``FAST_PATH_HOLD_S``), so a worker does not send
the same wake-up a moment after the submitter did. A duplicate can still happen (a process that dies between
sending and marking the row SENT; a lease that runs out during a slow send) and is harmless: a wake-up only
wakes a worker, the row claims decide what is sent to the carrier.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

import structlog
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from bulkchange.engine.context import EngineContext
from bulkchange.jobs import statements as jobs
from bulkchange.jobs.kinds import WAKE_UP
from bulkchange.jobs.outage import describe
from bulkchange.queue.base import Transport
from bulkchange.queue.message import BulkChangeMessage
from bulkchange.store.db import is_connection_lost, read_only_session
from bulkchange.store.tables import OutboxMessage, utcnow

log = structlog.get_logger("bulkchange.outbox")

WAKEUP = "bulk-change-wake-up"
FAST_PATH_HOLD_S = 10
"""Seconds a new row is left to the submitting process before the workers relay it."""
LEASE_S = 30
"""How long a worker owns a row it is sending (a send that takes longer may be repeated: harmless)."""
WAKEUP_PENDING_WARNING = (
    "the bulk change was created, but its wake-up message could not be sent to the queue yet; the running "
    "workers send it as soon as the queue answers"
)


class OutboxStatus(StrEnum):
    PENDING = "PENDING"  # to send (NextAttemptAt: not before)
    SENDING = "SENDING"  # claimed by a worker (LeaseOwner until LeaseExpiresAt)
    SENT = "SENT"  # handed to the transport (TransportMessageId)


def add_wakeup(
    session: Session, message: BulkChangeMessage, *, now: datetime, body: str = "bulk change"
) -> OutboxMessage:
    """Write the wake-up of ``message`` into the caller's transaction (it exists iff that commit happens)."""
    row = OutboxMessage(
        kind=WAKEUP,
        bulk_change_id=message.bulk_change_id,
        attributes=json.dumps(message.to_attributes()),
        body=body,
        delay_seconds=0,
        status=OutboxStatus.PENDING.value,
        attempt_count=0,
        next_attempt_at=now + timedelta(seconds=FAST_PATH_HOLD_S),
        created_date=now,
    )
    session.add(row)
    return row


def send_after_commit(session: Session, transport: Transport, outbox_id: int) -> bool:
    """The fast path: send the committed row's message now and mark it SENT. Never raises.

    Returns ``False`` when the message could not be sent (or not confirmed sent): the row is then left due
    for the workers' relay, and the caller reports the wake-up as pending.
    """
    try:
        row = session.get(OutboxMessage, outbox_id)
        if row is None or row.status != OutboxStatus.PENDING.value:
            session.rollback()
            return row is not None
        message, delay, body = _message_of(row)
        session.rollback()  # no transaction held open while the queue is called
    except Exception as exc:
        _quietly_rollback(session)
        log.warning("wake-up not sent after the commit; the workers will send it", error=describe(exc))
        return False
    try:
        message_id = transport.send(message, delay_s=delay, body=body)
    except Exception as exc:
        log.warning(
            "wake-up not sent: the queue did not take it; the workers will send it",
            bulk_change_id=message.bulk_change_id,
            error=describe(exc),
        )
        _record(session, outbox_id, _failed_values(1, exc, due=utcnow()), only_status=OutboxStatus.PENDING)
        return False
    return _record(
        session, outbox_id, _sent_values(message_id), only_status=OutboxStatus.PENDING, attempt_increment=True
    )


def wakeup_pending(session: Session, bulk_change_id: int) -> bool:
    """True when the bulk change has a wake-up on record that has not reached the queue yet."""
    return (
        session.execute(
            select(OutboxMessage.id)
            .where(
                OutboxMessage.bulk_change_id == bulk_change_id,
                OutboxMessage.status != OutboxStatus.SENT.value,
            )
            .limit(1)
        ).first()
        is not None
    )


class WakeupRelay:
    """The workers' side of the outbox: relays due rows to the transport. Safe with any number of workers."""

    kind = "wake-up relay"

    def __init__(self, ctx: EngineContext, *, worker_id: str | None = None, batch: int = 20) -> None:
        self.ctx = ctx
        self.worker_id = worker_id or f"{ctx.worker_id}:outbox"
        self.batch = batch

    def next_due_in_s(self) -> float | None:
        """Seconds until a row is due (0 = now), or None when every wake-up has been sent."""
        with read_only_session(self.ctx.session_factory) as session:
            return jobs.next_due_in_s(session, WAKE_UP, now=self.ctx.clock())

    def claim(self) -> list[int]:
        """Lease up to ``batch`` due rows to this worker; their ids, oldest first."""
        now = self.ctx.clock()
        with read_only_session(self.ctx.session_factory) as probe:
            if not jobs.any_due(probe, WAKE_UP, now=now):
                return []  # a read first: no write lock (nor a wait for one) on the turns that find nothing
        with self.ctx.session_factory.begin() as session:
            rows = jobs.claim(
                session,
                WAKE_UP,
                where=[WAKE_UP.claimable(now)],
                owner=self.worker_id,
                now=now,
                lease_s=LEASE_S,
                limit=self.batch,
                count_attempt=False,  # counted when a send fails or succeeds
            )
            return [int(row[0]) for row in rows]

    async def run_due(self) -> int:
        """Send the due wake-ups; stop at the first the queue refuses (the rest wait for the next pass)."""
        ids = self.claim()
        sent = 0
        for index, outbox_id in enumerate(ids):
            if not self._send(outbox_id):
                self._release(ids[index + 1 :])
                break
            sent += 1
        return sent

    def _send(self, outbox_id: int) -> bool:
        with read_only_session(self.ctx.session_factory) as session:
            row = session.get(OutboxMessage, outbox_id)
            if row is None or row.lease_owner != self.worker_id or row.status != OutboxStatus.SENDING.value:
                return True  # another worker took it over (our lease ran out): nothing of ours to send
            message, delay, body = _message_of(row)
            attempts = row.attempt_count
        try:
            message_id = self.ctx.transport.send(message, delay_s=delay, body=body)
        except Exception as exc:
            if is_connection_lost(exc):  # the embedded queue is the database: the worker loop waits it out
                raise
            delay_s = self.ctx.queue_outage.failed(exc)
            due = self.ctx.clock() + timedelta(seconds=delay_s)
            with self.ctx.session_factory() as session:
                _record(session, outbox_id, _failed_values(attempts + 1, exc, due=due), owner=self.worker_id)
            return False
        self.ctx.queue_outage.recovered()
        with self.ctx.session_factory() as session:
            _record(session, outbox_id, _sent_values(message_id), owner=self.worker_id, attempt_increment=True)
        log.info("wake-up relayed", bulk_change_id=message.bulk_change_id, outbox_id=outbox_id)
        return True

    def _release(self, ids: list[int]) -> None:
        """Give claimed rows back unsent (the queue is down: they are due again with the next attempt)."""
        if ids:
            with self.ctx.session_factory.begin() as session:
                jobs.release(session, WAKE_UP, ids, owner=self.worker_id, refund_attempt=False)


def _message_of(row: OutboxMessage) -> tuple[BulkChangeMessage, int, str]:
    return BulkChangeMessage.from_attributes(json.loads(row.attributes)), int(row.delay_seconds), row.body


def _sent_values(message_id: str) -> dict[str, Any]:
    return {
        "status": OutboxStatus.SENT.value,
        "transport_message_id": str(message_id)[:100],
        "sent_date": utcnow(),
        "next_attempt_at": None,
        "lease_owner": None,
        "lease_expires_at": None,
        "last_error": None,
    }


def _failed_values(attempts: int, exc: BaseException, *, due: datetime) -> dict[str, Any]:
    return {
        "status": OutboxStatus.PENDING.value,
        "attempt_count": attempts,
        "next_attempt_at": due,
        "lease_owner": None,
        "lease_expires_at": None,
        "last_error": f"{type(exc).__name__}: {describe(exc, 1000)}",
    }


def _record(
    session: Session,
    outbox_id: int,
    values: dict[str, Any],
    *,
    only_status: OutboxStatus | None = None,
    owner: str | None = None,
    attempt_increment: bool = False,
) -> bool:
    """Write the outcome of a send onto the row (if it is still ours); ``False`` if that write failed.

    The message may well be in the queue when this fails (the database went away meanwhile): the row then
    stays unsent and is relayed again later — a duplicate wake-up, which is harmless.
    """
    conditions = [OutboxMessage.id == outbox_id]
    if only_status is not None:
        conditions.append(OutboxMessage.status == only_status.value)
    if owner is not None:
        conditions += [OutboxMessage.lease_owner == owner, OutboxMessage.status == OutboxStatus.SENDING.value]
    if attempt_increment:
        values = {**values, "attempt_count": OutboxMessage.attempt_count + 1}
    try:
        session.execute(
            update(OutboxMessage).where(*conditions).values(**values).execution_options(synchronize_session=False)
        )
        session.commit()
    except Exception as exc:
        _quietly_rollback(session)
        if owner is not None and is_connection_lost(exc):
            raise  # a worker: its loop waits the outage out
        log.warning(
            "could not record the wake-up's send; it may be sent again", outbox_id=outbox_id, error=describe(exc)
        )
        return False
    return True


def _quietly_rollback(session: Session) -> None:
    try:
        session.rollback()
    except Exception:  # the connection is gone; the session is discarded by its owner
        log.debug("rollback after a failed outbox write failed too", exc_info=True)
