"""Reads about bulk changes that the entry points (the Lambda handler) need before or beside the engine.

* ``bulk_change_exists`` — whether a message's ``BulkChangeId`` names a row at all: a message for an
  unknown id is refused and counted, not processed.
* ``stalled_bulk_changes`` — bulk changes with unfinished changes whose wake-up is missing or overdue by
  more than a given age: nothing on the queue is going to move them, so they must be woken again.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import exists, or_, select
from sqlalchemy.orm import Session

from bulkchange.domain.statuses import ACTIVE_BULK_STATUSES, AT_CARRIER_VALUES, IN_FLIGHT_CHANGE_STATUSES
from bulkchange.store.tables import DeviceBulkChange, M2MDeviceChange


def bulk_change_exists(session: Session, bulk_change_id: int) -> bool:
    found = session.execute(select(DeviceBulkChange.id).where(DeviceBulkChange.id == bulk_change_id)).first()
    return found is not None


def stalled_bulk_changes(session: Session, *, due_before: datetime) -> list[int]:
    """NEW / PROCESSING bulk changes with an unfinished change and no wake-up due after ``due_before``.

    A wake-up (``NextWakeAt``) is cleared when its message is handled and set again by the follow-up, so
    one that is NULL, or was due before ``due_before``, belongs to a message that was lost, dead-lettered
    or never started.
    """
    B = DeviceBulkChange
    return list(
        session.execute(
            select(B.id)
            .where(
                B.status.in_([s.value for s in ACTIVE_BULK_STATUSES]),
                or_(B.next_wake_at.is_(None), B.next_wake_at < due_before),
                or_(
                    B.paused_at.is_(None),
                    exists().where(
                        M2MDeviceChange.bulk_change_id == B.id, M2MDeviceChange.status.in_(AT_CARRIER_VALUES)
                    ),
                ),
                exists().where(
                    M2MDeviceChange.bulk_change_id == B.id,
                    M2MDeviceChange.status.in_([s.value for s in IN_FLIGHT_CHANGE_STATUSES]),
                ),
            )
            .order_by(B.id)
        ).scalars()
    )
