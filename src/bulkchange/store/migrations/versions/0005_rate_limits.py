"""Shared carrier rate limits, and an index for the stored-callback applier (issue 8).

Revision ID: 0005_rate_limits
Revises: 0004_security
Create Date: 2026-11-27

* ``CarrierRateLimit`` / ``CarrierRateSlot`` — a sliding-window limit per carrier account and endpoint
  (e.g. ThingSpace's 100 Activate requests per minute), counted in the database so every worker in
  every process shares it, plus the carrier's Retry-After as ``BlockedUntil``.
* ``IX_ThingSpaceCallBackResponseLog_Outcome_id`` — callbacks are stored first and applied in batches;
  the applier looks for rows with no Outcome yet, oldest first.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mssql

revision: str = "0005_rate_limits"
down_revision: str | Sequence[str] | None = "0004_security"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _str(length: int) -> sa.types.TypeEngine[str]:
    return sa.String(length).with_variant(mssql.NVARCHAR(length), "mssql")


def upgrade() -> None:
    op.create_table(
        "CarrierRateLimit",
        sa.Column("LimitKey", _str(200), nullable=False),
        sa.Column("BlockedUntil", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("LimitKey", name=op.f("PK_CarrierRateLimit")),
    )
    op.create_table(
        "CarrierRateSlot",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("LimitKey", _str(200), nullable=False),
        sa.Column("CalledAt", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("PK_CarrierRateSlot")),
    )
    op.create_index(
        op.f("IX_CarrierRateSlot_LimitKey_CalledAt"), "CarrierRateSlot", ["LimitKey", "CalledAt"], unique=False
    )
    op.create_index(
        op.f("IX_ThingSpaceCallBackResponseLog_Outcome_id"),
        "ThingSpaceCallBackResponseLog",
        ["Outcome", "id"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index(op.f("IX_ThingSpaceCallBackResponseLog_Outcome_id"), table_name="ThingSpaceCallBackResponseLog")
    op.drop_index(op.f("IX_CarrierRateSlot_LimitKey_CalledAt"), table_name="CarrierRateSlot")
    op.drop_table("CarrierRateSlot")
    op.drop_table("CarrierRateLimit")
