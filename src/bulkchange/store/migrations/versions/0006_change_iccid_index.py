"""An index on M2M_DeviceChange (ICCID, Status) (issue 8).

Revision ID: 0006_change_iccid_index
Revises: 0005_rate_limits
Create Date: 2026-11-27

Two hot reads look changes up by device, across bulk changes: the callback applier (which change awaits
this ICCID) and the submission's busy-device check (does this ICCID have an unfinished change anywhere).
Without an index leading with ICCID both scanned the whole table, so every bulk change got slower as the
history grew.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0006_change_iccid_index"
down_revision: str | Sequence[str] | None = "0005_rate_limits"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(op.f("IX_M2M_DeviceChange_ICCID_Status"), "M2M_DeviceChange", ["ICCID", "Status"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("IX_M2M_DeviceChange_ICCID_Status"), table_name="M2M_DeviceChange")
