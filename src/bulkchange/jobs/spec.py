"""Which columns of a table make its rows durable work: state, lease, attempts and due time.

Every kind of background work in bulkchange is a row that a worker *leases*: a device change's carrier
step, its billing step, a webhook delivery, a message of the embedded queue, a wake-up waiting to be
relayed. The rows live in different tables with the original system's column names, but they move
the same way:

    waiting ──claim (lease, attempt + 1)──▶ working ──settle──▶ done / failed
       ▲                                       │
       └──────── retry (decision: due at) ─────┤  transient failure
                                               └─ lease expires (worker died) → claimable again
                                                  (or, for carrier steps, reconciled first)

``LeasedRows`` names a table's columns for that shape once; ``bulkchange.jobs.statements`` holds every
state change as one named statement over it, so claim, heartbeat, settle, retry and "when is the next
one due" are written once, not once per table.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Table, and_, or_, true
from sqlalchemy.sql.elements import KeyedColumnElement


@dataclass(frozen=True)
class LeasedRows:
    """One table's durable work.

    * ``kind`` — a short name for logs and metrics (``change``, ``billing``, ``webhook`` …).
    * ``table`` / ``entity`` — the Core table, and the ORM class when claims should return ORM objects.
    * ``owner`` / ``lease_until`` — who holds a claimed row, and until when.
    * ``attempts`` — attempts so far, counted when a row is claimed (a crash loop still ends).
    * ``due_at`` — when waiting work is next due (NULL: now). It may be the same column as
      ``lease_until`` (the embedded queue's ``VisibleAt`` is both).
    * ``status`` with ``waiting`` / ``working`` — the status column and its two in-flight values; None
      when the state is implicit in the timers (the embedded queue).
    * ``scope`` — a fixed condition every statement adds (e.g. one logical queue of a shared table).
    """

    kind: str
    table: Table
    id: KeyedColumnElement[Any]
    owner: KeyedColumnElement[Any]
    lease_until: KeyedColumnElement[Any]
    attempts: KeyedColumnElement[Any]
    due_at: KeyedColumnElement[Any] | None = None
    status: KeyedColumnElement[Any] | None = None
    waiting: str | None = None
    working: str | None = None
    entity: Any = None
    scope: ColumnElement[bool] | None = None

    def scoped(self) -> list[ColumnElement[bool]]:
        return [self.scope] if self.scope is not None else []

    def is_waiting(self) -> ColumnElement[bool]:
        return self.status == self.waiting if self.status is not None else true()

    def is_working(self) -> ColumnElement[bool]:
        return self.status == self.working if self.status is not None else true()

    def due(self, now: datetime) -> ColumnElement[bool]:
        """Waiting work whose time has come."""
        if self.due_at is None:
            return and_(*self.scoped(), self.is_waiting())
        return and_(*self.scoped(), self.is_waiting(), or_(self.due_at.is_(None), self.due_at <= now))

    def lease_expired(self, now: datetime) -> ColumnElement[bool]:
        """Claimed work whose worker did not finish in time (it died, or hung past its lease)."""
        return and_(*self.scoped(), self.is_working(), self.lease_until < now)

    def claimable(self, now: datetime) -> ColumnElement[bool]:
        """Due, or leased to a worker that let its lease expire: the usual claim of a kind whose work is
        safe to run again (its own steps record intent before acting)."""
        return or_(self.due(now), self.lease_expired(now))
