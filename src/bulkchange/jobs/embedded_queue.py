"""A queue in the database, with SQS standard-queue semantics, so one machine needs no AWS.

Each message is a ``BulkChangeQueueMessage`` row. The row's ``VisibleAt`` carries both SQS timers: at
send it is ``now + DelaySeconds``; at each receive it moves to ``now + visibility timeout``, so a message
that is not deleted in time is simply visible again. ``ReceiveCount`` counts deliveries, and a message
found visible after ``max_receives`` deliveries is dead-lettered (``DeadLetteredAt`` and a reason set)
instead of being delivered: a message that keeps crashing workers stops doing so, and an operator can
inspect it and ``redrive`` it.

Every delivery gets a new receipt handle (``<row id>:<random token>``). ``delete`` and
``change_visibility`` match the row id *and* the handle, so a worker that was too slow cannot delete or
extend a message that has since been delivered to another worker.

Several worker processes may receive at once. A receive is a claim of durable work like any other
(``bulkchange.jobs.kinds.queue_messages``): one UPDATE … RETURNING whose row choice runs once and cannot
hand the same row to two claimers on any database (``bulkchange.jobs.statements.claim_statement``).

Times come from the injectable ``clock`` (naive UTC) and are sent as bound parameters, never taken from
the database server, so tests move time forward without sleeping.
"""

from __future__ import annotations

import json
import secrets
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import (
    ColumnElement,
    CursorResult,
    Row,
    String,
    Table,
    and_,
    case,
    func,
    insert,
    literal,
    select,
    update,
)
from sqlalchemy import cast as sql_cast
from sqlalchemy import delete as sql_delete
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session, sessionmaker

from bulkchange.jobs.kinds import queue_messages
from bulkchange.jobs.statements import claim_statement, lease_values, lock_candidates
from bulkchange.queue.base import MAX_DELAY_S, MAX_VISIBILITY_TIMEOUT_S, QueueStats, ReceivedMessage
from bulkchange.queue.message import BulkChangeMessage
from bulkchange.store.db import read_only_session
from bulkchange.store.tables import QueueMessage, utcnow

_T = cast(Table, QueueMessage.__table__)
_C = _T.c

MAX_MESSAGES_PER_RECEIVE = 10
"""As SQS ``MaxNumberOfMessages``: keeps code written against this queue portable to SQS."""


def _check_int(name: str, value: int, low: int, high: int) -> None:
    # bool is an int subclass; True as a delay is a bug, not one second.
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if not low <= value <= high:
        raise ValueError(f"{name} must be between {low} and {high}, got {value}")


def _parse_handle(receipt_handle: str) -> int | None:
    """The row id a receipt handle names, or ``None`` when the handle is not one of ours."""
    row_id, sep, token = receipt_handle.partition(":")
    if not sep or not token or not row_id.isascii() or not row_id.isdigit():
        return None
    return int(row_id)


class EmbeddedQueue:
    """A ``Transport`` on the ``BulkChangeQueueMessage`` table (see the module docstring).

    ``queue_name`` separates logical queues sharing the table. ``visibility_timeout_s`` is the default
    hiding time after a receive (SQS's queue attribute; ≥ 6× the worker's run time is AWS's advice).
    ``max_receives`` is the redrive policy's ``maxReceiveCount``.
    """

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        *,
        queue_name: str = "device-bulk-change",
        visibility_timeout_s: int = 600,
        max_receives: int = 5,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        _check_int("visibility_timeout_s", visibility_timeout_s, 0, MAX_VISIBILITY_TIMEOUT_S)
        _check_int("max_receives", max_receives, 1, 1000)
        if not queue_name or len(queue_name) > 100:
            raise ValueError(f"queue_name must be 1-100 characters, got {queue_name!r}")
        self._session_factory = session_factory
        self._queue_name = queue_name
        self._visibility_timeout_s = visibility_timeout_s
        self._max_receives = max_receives
        self._clock = clock
        self._work = queue_messages(queue_name)

    @property
    def queue_name(self) -> str:
        return self._queue_name

    # -- Transport -------------------------------------------------------------------------------

    def send(self, message: BulkChangeMessage, *, delay_s: int = 0, body: str = "bulk change") -> str:
        """Store the message, visible after ``delay_s`` (0–900) seconds; returns its new message id."""
        _check_int("delay_s", delay_s, 0, MAX_DELAY_S)
        now = self._clock()
        message_id = str(uuid.uuid4())
        with self._session_factory.begin() as session:
            session.connection().execute(
                insert(_T).values(
                    QueueName=self._queue_name,
                    MessageId=message_id,
                    Body=body,
                    MessageAttributes=json.dumps(message.to_attributes()),
                    VisibleAt=now + timedelta(seconds=delay_s),
                    ReceiveCount=0,
                    SentAt=now,
                )
            )
        return message_id

    def receive(self, *, max_messages: int = 10, visibility_timeout_s: int | None = None) -> list[ReceivedMessage]:
        """Claim up to ``max_messages`` visible messages, oldest-visible first, hiding each for the timeout.

        In the same transaction, visible messages that have used up ``max_receives`` deliveries are
        dead-lettered first, so they are never delivered again. Returns ``[]`` when nothing is visible
        (there is no long polling: callers wait using ``stats().next_visible_in_s``).
        """
        _check_int("max_messages", max_messages, 1, MAX_MESSAGES_PER_RECEIVE)
        timeout = self._visibility_timeout_s if visibility_timeout_s is None else visibility_timeout_s
        _check_int("visibility_timeout_s", timeout, 0, MAX_VISIBILITY_TIMEOUT_S)
        now = self._clock()
        if not self._any_visible(now):
            return []  # learnt without the write lock, which on SQLite a worker polling this would queue for
        with self._session_factory.begin() as session:
            conn = session.connection()
            self._dead_letter_exhausted(conn, now)
            rows = conn.execute(self._claim(conn.dialect.name, now, max_messages, timeout)).all()
        # RETURNING order is unspecified; hand messages out in send order.
        return [self._received(row) for row in sorted(rows, key=lambda row: int(row.id))]

    def _any_visible(self, now: datetime) -> bool:
        probe = select(_C.id).where(
            _C.QueueName == self._queue_name, _C.DeadLetteredAt.is_(None), _C.VisibleAt <= now
        ).limit(1)
        with read_only_session(self._session_factory) as session:
            return session.connection().execute(probe).first() is not None

    def delete(self, receipt_handle: str) -> bool:
        """Delete the message if ``receipt_handle`` is its latest delivery's; ``False`` (no-op) if stale."""
        row_id = _parse_handle(receipt_handle)
        if row_id is None:
            return False
        with self._session_factory.begin() as session:
            result = session.connection().execute(sql_delete(_T).where(self._current_delivery(row_id, receipt_handle)))
            return _rowcount(result) == 1

    def change_visibility(self, receipt_handle: str, timeout_s: int) -> bool:
        """Hide the delivered message for ``timeout_s`` (0–43,200) seconds from now; ``False`` if stale.

        Use it to keep a long job's message from being redelivered, or with 0 to give it back at once.
        """
        _check_int("timeout_s", timeout_s, 0, MAX_VISIBILITY_TIMEOUT_S)
        row_id = _parse_handle(receipt_handle)
        if row_id is None:
            return False
        visible_at = self._clock() + timedelta(seconds=timeout_s)
        with self._session_factory.begin() as session:
            result = session.connection().execute(
                update(_T).where(self._current_delivery(row_id, receipt_handle)).values(VisibleAt=visible_at)
            )
            return _rowcount(result) == 1

    def stats(self) -> QueueStats:
        """Counts by state in one read (see ``QueueStats``)."""
        now = self._clock()
        live = _C.DeadLetteredAt.is_(None)

        def count_where(condition: ColumnElement[bool]) -> ColumnElement[Any]:
            return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)

        query = select(
            count_where(and_(live, _C.VisibleAt <= now)),
            count_where(and_(live, _C.VisibleAt > now, _C.ReceiveCount == 0)),
            count_where(and_(live, _C.VisibleAt > now, _C.ReceiveCount > 0)),
            count_where(_C.DeadLetteredAt.is_not(None)),
            func.min(case((and_(live, _C.VisibleAt > now), _C.VisibleAt), else_=None)),
        ).where(_C.QueueName == self._queue_name)
        with read_only_session(self._session_factory) as session:
            visible, delayed, in_flight, dead, next_hidden = session.connection().execute(query).one()
        if visible:
            next_in: float | None = 0.0
        elif next_hidden is not None:
            next_in = max(0.0, (_as_datetime(next_hidden) - now).total_seconds())
        else:
            next_in = None
        return QueueStats(
            visible=int(visible),
            delayed=int(delayed),
            in_flight=int(in_flight),
            dead_lettered=int(dead),
            next_visible_in_s=next_in,
        )

    # -- Dead letters ------------------------------------------------------------------------------

    def dead_letters(self) -> list[ReceivedMessage]:
        """Dead-lettered messages, oldest first, with their reason (``receipt_handle`` is empty)."""
        query = (
            select(_C.id, _C.MessageId, _C.Body, _C.MessageAttributes, _C.ReceiveCount, _C.DeadLetterReason)
            .where(_C.QueueName == self._queue_name, _C.DeadLetteredAt.is_not(None))
            .order_by(_C.DeadLetteredAt, _C.id)
        )
        with self._session_factory() as session:
            rows = session.connection().execute(query).all()
        return [
            ReceivedMessage(
                message_id=row.MessageId,
                receipt_handle="",
                body=row.Body,
                attributes=json.loads(row.MessageAttributes),
                receive_count=row.ReceiveCount,
                dead_letter_reason=row.DeadLetterReason,
            )
            for row in rows
        ]

    def redrive(self, message_id: str) -> None:
        """Put a dead letter back: visible now, receive count reset (an operator's decision).

        Raises ``LookupError`` if this queue has no dead letter with that id.
        """
        with self._session_factory.begin() as session:
            result = session.connection().execute(
                update(_T)
                .where(
                    _C.QueueName == self._queue_name,
                    _C.MessageId == message_id,
                    _C.DeadLetteredAt.is_not(None),
                )
                .values(
                    DeadLetteredAt=None,
                    DeadLetterReason=None,
                    ReceiveCount=0,
                    ReceiptHandle=None,
                    VisibleAt=self._clock(),
                )
            )
            if _rowcount(result) != 1:
                raise LookupError(f"no dead-lettered message {message_id!r} in queue {self._queue_name!r}")

    # -- Statements --------------------------------------------------------------------------------

    def _visible(self, now: datetime) -> list[ColumnElement[bool]]:
        return [_C.QueueName == self._queue_name, _C.DeadLetteredAt.is_(None), _C.VisibleAt <= now]

    def _dead_letter_exhausted(self, conn: Connection, now: datetime) -> None:
        """Dead-letter every visible message already delivered ``max_receives`` times (SQS redrive policy)."""
        exhausted = lock_candidates(
            select(_C.id).where(*self._visible(now), _C.ReceiveCount >= self._max_receives),
            self._work,
            conn.dialect.name,
        )
        reason = (
            literal("received ", String)
            + sql_cast(_C.ReceiveCount, String)
            + literal(f" times without being deleted (max_receives={self._max_receives})", String)
        )
        conn.execute(
            update(_T)
            .where(_C.id.in_(exhausted))
            .values(DeadLetteredAt=now, DeadLetterReason=reason, ReceiptHandle=None)
        )

    def _claim(self, dialect_name: str, now: datetime, limit: int, timeout_s: int) -> Any:
        """One UPDATE … RETURNING that takes up to ``limit`` visible rows and starts a delivery of each
        (``jobs.statements.claim_statement``: the row choice runs once on every dialect; on SQL Server
        ``UPDATE TOP`` takes no ORDER BY, so a receive there is not oldest-first — SQS standard queues
        promise no order either)."""
        # One random token per claim; prefixing the row id makes each handle unique and lets
        # delete/change_visibility find the row by primary key.
        token = secrets.token_hex(16)
        handle = sql_cast(_C.id, String) + literal(f":{token}", String)
        values = lease_values(self._work, owner=handle, now=now, lease_s=timeout_s)
        values[_C.FirstReceivedAt] = func.coalesce(_C.FirstReceivedAt, now)
        return claim_statement(
            self._work,
            dialect_name,
            where=[*self._visible(now), _C.ReceiveCount < self._max_receives],
            values=values,
            limit=limit,
            order=[_C.VisibleAt],
            returning=[_C.id, _C.MessageId, _C.ReceiptHandle, _C.Body, _C.MessageAttributes, _C.ReceiveCount],
        )

    def _current_delivery(self, row_id: int, receipt_handle: str) -> ColumnElement[bool]:
        return and_(
            _C.id == row_id,
            _C.QueueName == self._queue_name,
            _C.ReceiptHandle == receipt_handle,
            _C.DeadLetteredAt.is_(None),
        )

    @staticmethod
    def _received(row: Row[Any]) -> ReceivedMessage:
        return ReceivedMessage(
            message_id=row.MessageId,
            receipt_handle=row.ReceiptHandle,
            body=row.Body,
            attributes=json.loads(row.MessageAttributes),
            receive_count=row.ReceiveCount,
        )


def _rowcount(result: Any) -> int:
    return cast(CursorResult[Any], result).rowcount


def _as_datetime(value: Any) -> datetime:
    """``MIN`` over a CASE may come back as text on SQLite; normalise to a naive datetime."""
    if isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value))


__all__: Sequence[str] = ("EmbeddedQueue",)
