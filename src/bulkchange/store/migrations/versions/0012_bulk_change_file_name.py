"""DeviceBulkChange.FileName: the file a bulk change was created from (issue 22).

Revision ID: 0012_bulk_change_file_name
Revises: 0011_controlcenter
Create Date: 2026-12-04

The dashboard's list of bulk changes filters by the uploaded file's name. Nullable: bulk changes created
from JSON rows, by a retry, or before this revision have none.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mssql

revision: str = "0012_bulk_change_file_name"
down_revision: str | Sequence[str] | None = "0011_controlcenter"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "DeviceBulkChange",
        sa.Column("FileName", sa.String(255).with_variant(mssql.NVARCHAR(255), "mssql"), nullable=True),
    )


def downgrade() -> None:
    with op.batch_alter_table("DeviceBulkChange") as batch:
        batch.drop_column("FileName")
