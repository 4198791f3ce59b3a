"""Per-provider CarrierService callback credentials (issue 18).

Revision ID: 0008_callback_credentials
Revises: 0007_unfinished_change_unique
Create Date: 2026-12-01

* ``ThingSpaceAuthentication.CallbackUsername`` / ``CallbackPassword`` — what ThingSpace echoes in every
  callback of this provider. The password is written encrypted (``enc:v1:…``) by the application.

The revision only adds the (nullable) columns: it cannot generate credentials, because it runs without the
encryption keys (``db sql`` renders it offline). New providers get theirs from ``bulkchange providers add``;
a provider that existed before this revision gets them from ``bulkchange credentials set --provider N
--rotate-callback`` (new random ones, then register them with ThingSpace) or ``--callback-username …
--callback-password …`` (the values already registered). Until then a callback receiver refuses to start.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mssql

revision: str = "0008_callback_credentials"
down_revision: str | Sequence[str] | None = "0007_unfinished_change_unique"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def Str(length: int) -> sa.String:
    return sa.String(length).with_variant(mssql.NVARCHAR(length), "mssql")


def upgrade() -> None:
    op.add_column("ThingSpaceAuthentication", sa.Column("CallbackUsername", Str(200), nullable=True))
    op.add_column("ThingSpaceAuthentication", sa.Column("CallbackPassword", Str(500), nullable=True))


def downgrade() -> None:
    op.drop_column("ThingSpaceAuthentication", "CallbackPassword")
    op.drop_column("ThingSpaceAuthentication", "CallbackUsername")
