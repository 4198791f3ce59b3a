"""The operator API: Idempotency-Key records and the retry link between bulk changes (issue 6).

Revision ID: 0003_api
Revises: 0002_billing_webhooks
Create Date: 2026-11-28

* ``ApiIdempotencyKey`` — one row per ``Idempotency-Key``: the request's hash and the bulk change it made.
* ``DeviceBulkChange.RetryOfBulkChangeId`` — set on a bulk change created by "retry failed".

Only a new table, a plain ``ADD COLUMN`` and an index: no batch mode on SQLite.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mssql

revision: str = "0003_api"
down_revision: str | Sequence[str] | None = "0002_billing_webhooks"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# SQL Server variants, as in 0001_initial and store/tables.py: DATETIME2, NVARCHAR(n), NVARCHAR(max).
UtcDateTime = sa.DateTime().with_variant(mssql.DATETIME2, "mssql")
LongText = sa.Text().with_variant(mssql.NVARCHAR(), "mssql")


def Str(length: int) -> sa.String:
    return sa.String(length).with_variant(mssql.NVARCHAR(length), "mssql")


def upgrade() -> None:
    op.create_table(
        "ApiIdempotencyKey",
        sa.Column("IdempotencyKey", Str(255), nullable=False),
        sa.Column("RequestHash", Str(64), nullable=False),
        sa.Column("BulkChangeId", sa.BigInteger(), nullable=True),
        sa.Column("CreatedDate", UtcDateTime, nullable=False),
        sa.PrimaryKeyConstraint("IdempotencyKey", name=op.f("PK_ApiIdempotencyKey")),
    )
    op.add_column("DeviceBulkChange", sa.Column("RetryOfBulkChangeId", sa.BigInteger(), nullable=True))
    op.create_index(
        op.f("IX_DeviceBulkChange_RetryOfBulkChangeId"), "DeviceBulkChange", ["RetryOfBulkChangeId"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("IX_DeviceBulkChange_RetryOfBulkChangeId"), table_name="DeviceBulkChange")
    op.drop_column("DeviceBulkChange", "RetryOfBulkChangeId")
    op.drop_table("ApiIdempotencyKey")
