"""M2M_DeviceChange.Status SCHEDULED: a change the carrier makes at a later date (issue 20).

Revision ID: 0013_scheduled_change
Revises: 0012_bulk_change_file_name
Create Date: 2026-12-05

A Control Center change with a future EffectiveDate is accepted by the carrier and made on that date. Until
then it used to wait as AWAITING_RESULT with NextAttemptAt set; it now has its own status, SCHEDULED, so an
operator sees it. SCHEDULED is unfinished: ``UX_M2M_DeviceChange_Unfinished`` (one unfinished change per
device) is rebuilt to cover it, and the rows already waiting for a date are moved to it. The downgrade
moves them back (same meaning for the older version) and rebuilds the index as 0007 made it.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mssql

revision: str = "0013_scheduled_change"
down_revision: str | Sequence[str] | None = "0012_bulk_change_file_name"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CHANGE_INDEX = "UX_M2M_DeviceChange_Unfinished"
BEFORE = ("AWAITING_RESULT", "READY", "SENDING")  # unfinished as of 0007
AFTER = ("AWAITING_RESULT", "READY", "SCHEDULED", "SENDING")  # ChangeStatus in flight, frozen as of this revision

_changes = sa.table(
    "M2M_DeviceChange",
    sa.column("Status", sa.String(30).with_variant(mssql.NVARCHAR(30), "mssql")),
    sa.column("NextAttemptAt", sa.DateTime()),
)


def _index(statuses: tuple[str, ...]) -> None:
    where = _changes.c.Status.in_(statuses)
    op.create_index(
        CHANGE_INDEX,
        "M2M_DeviceChange",
        ["ServiceProviderId", "ICCID"],
        unique=True,
        sqlite_where=where,
        postgresql_where=where,
        mssql_where=where,
    )


def upgrade() -> None:
    op.drop_index(CHANGE_INDEX, table_name="M2M_DeviceChange")
    op.execute(
        _changes.update()
        .where(_changes.c.Status == "AWAITING_RESULT", _changes.c.NextAttemptAt.is_not(None))
        .values(Status="SCHEDULED")
    )
    _index(AFTER)


def downgrade() -> None:
    op.drop_index(CHANGE_INDEX, table_name="M2M_DeviceChange")
    op.execute(_changes.update().where(_changes.c.Status == "SCHEDULED").values(Status="AWAITING_RESULT"))
    _index(BEFORE)
