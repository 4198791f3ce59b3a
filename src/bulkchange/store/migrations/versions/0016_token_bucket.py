"""A token bucket per carrier account: CarrierRateLimit.BucketFullAt and JasperAuthentication.TpsBurst.

Revision ID: 0016_token_bucket
Revises: 0015_additional_step_count_index
Create Date: 2026-12-07

``TpsBurst`` is how many calls a Control Center account's contract admits back to back (the size of the
carrier's token bucket); 1 for every existing provider, which keeps its calls spaced by a full 1/TPS as
before. ``BucketFullAt`` is the shared limiter's state of that bucket: the moment it would be full again,
given the calls counted so far (NULL: full).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016_token_bucket"
down_revision: str | Sequence[str] | None = "0015_additional_step_count_index"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("CarrierRateLimit", sa.Column("BucketFullAt", sa.Float(), nullable=True))
    op.add_column("JasperAuthentication", sa.Column("TpsBurst", sa.Integer(), nullable=False, server_default="1"))


def downgrade() -> None:
    with op.batch_alter_table("JasperAuthentication") as batch:
        batch.drop_column("TpsBurst")
    with op.batch_alter_table("CarrierRateLimit") as batch:
        batch.drop_column("BucketFullAt")
