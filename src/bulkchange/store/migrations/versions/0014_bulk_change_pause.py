"""DeviceBulkChange.PausedAt / PausedBy: an operator's pause of a whole bulk change.

Revision ID: 0014_bulk_change_pause
Revises: 0013_scheduled_change
Create Date: 2026-12-05

While ``PausedAt`` is set no worker claims the bulk change's READY changes (the claim statement tests it);
changes already at the carrier still finish. Both NULL for every existing row: nothing is paused.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mssql

revision: str = "0014_bulk_change_pause"
down_revision: str | Sequence[str] | None = "0013_scheduled_change"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UtcDateTime = sa.DateTime().with_variant(mssql.DATETIME2, "mssql")


def upgrade() -> None:
    op.add_column("DeviceBulkChange", sa.Column("PausedAt", UtcDateTime, nullable=True))
    op.add_column(
        "DeviceBulkChange",
        sa.Column("PausedBy", sa.String(100).with_variant(mssql.NVARCHAR(100), "mssql"), nullable=True),
    )


def downgrade() -> None:
    with op.batch_alter_table("DeviceBulkChange") as batch:
        batch.drop_column("PausedBy")
        batch.drop_column("PausedAt")
