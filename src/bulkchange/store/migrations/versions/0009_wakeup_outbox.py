"""The wake-up outbox: ``OutboxMessage`` (issue 18).

Revision ID: 0009_wakeup_outbox
Revises: 0008_callback_credentials
Create Date: 2026-12-02

A submission used to commit its bulk change and then send the wake-up message; when the queue was
unreachable the request failed after the commit and nothing woke the bulk change until a worker started
again. The wake-up is now a row written in the submission's transaction and relayed to the queue
afterwards (``bulkchange.engine.outbox``). A new table and its indexes only: nothing to rebuild on SQLite,
and the offline SQL renders for every dialect.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mssql

revision: str = "0009_wakeup_outbox"
down_revision: str | Sequence[str] | None = "0008_callback_credentials"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

# SQL Server variants, as in 0001_initial and store/tables.py: DATETIME2, NVARCHAR(n), NVARCHAR(max).
UtcDateTime = sa.DateTime().with_variant(mssql.DATETIME2, "mssql")
LongText = sa.Text().with_variant(mssql.NVARCHAR(), "mssql")


def Str(length: int) -> sa.String:
    return sa.String(length).with_variant(mssql.NVARCHAR(length), "mssql")


def upgrade() -> None:
    op.create_table(
        "OutboxMessage",
        sa.Column("id", BigId, nullable=False),
        sa.Column("Kind", Str(50), nullable=False),
        sa.Column("BulkChangeId", sa.BigInteger(), nullable=False),
        sa.Column("MessageAttributes", LongText, nullable=False),
        sa.Column("Body", Str(200), nullable=False),
        sa.Column("DelaySeconds", sa.Integer(), nullable=False),
        sa.Column("Status", Str(30), nullable=False),
        sa.Column("AttemptCount", sa.Integer(), nullable=False),
        sa.Column("NextAttemptAt", UtcDateTime, nullable=True),
        sa.Column("LeaseOwner", Str(100), nullable=True),
        sa.Column("LeaseExpiresAt", UtcDateTime, nullable=True),
        sa.Column("LastError", LongText, nullable=True),
        sa.Column("TransportMessageId", Str(100), nullable=True),
        sa.Column("CreatedDate", UtcDateTime, nullable=False),
        sa.Column("SentDate", UtcDateTime, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("PK_OutboxMessage")),
    )
    op.create_index(op.f("IX_OutboxMessage_BulkChangeId"), "OutboxMessage", ["BulkChangeId"], unique=False)
    op.create_index(
        op.f("IX_OutboxMessage_Status_NextAttemptAt"), "OutboxMessage", ["Status", "NextAttemptAt"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("IX_OutboxMessage_Status_NextAttemptAt"), table_name="OutboxMessage")
    op.drop_index(op.f("IX_OutboxMessage_BulkChangeId"), table_name="OutboxMessage")
    op.drop_table("OutboxMessage")
