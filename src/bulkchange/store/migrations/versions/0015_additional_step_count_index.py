"""An index on M2M_DeviceChange (BulkChangeId, AdditionalStepStatus).

Revision ID: 0015_additional_step_count_index
Revises: 0014_bulk_change_pause
Create Date: 2026-12-07

The bulk status is recomputed whenever changes settle (each batch of callbacks, each check round), and it
counts the bulk change's additional steps by status. With only the (BulkChangeId, Status, NextAttemptAt)
index that count read every change row of the bulk change; this index answers it from the index alone.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0015_additional_step_count_index"
down_revision: str | Sequence[str] | None = "0014_bulk_change_pause"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        op.f("IX_M2M_DeviceChange_BulkChangeId_AdditionalStepStatus"),
        "M2M_DeviceChange",
        ["BulkChangeId", "AdditionalStepStatus"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index(op.f("IX_M2M_DeviceChange_BulkChangeId_AdditionalStepStatus"), table_name="M2M_DeviceChange")
