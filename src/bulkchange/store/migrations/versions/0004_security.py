"""Security: API keys (issue 10).

Revision ID: 0004_security
Revises: 0003_api
Create Date: 2026-11-28

* ``ApiKey`` — one row per API key: its SHA-256 (never the key), the tenant and, optionally, the
  service providers it may act on, and when it was revoked.

The secret columns (``ThingSpaceAuthentication.ClientSecret`` / ``Password``,
``IntegrationAuthentication.Password`` / ``SubscriptionKey``) keep their type: their values become
``enc:v1:<Fernet token>`` when written (``bulkchange.security.crypto.EncryptedSecret``). Existing
plaintext rows are not touched here (a revision has no key); ``bulkchange credentials rotate`` encrypts
them.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mssql

revision: str = "0004_security"
down_revision: str | Sequence[str] | None = "0003_api"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# SQL Server variants, as in ``tables.py`` (written out here: a revision does not import live code).
UtcDateTime = sa.DateTime().with_variant(mssql.DATETIME2, "mssql")


def Str(length: int) -> sa.String:
    return sa.String(length).with_variant(mssql.NVARCHAR(length), "mssql")


def upgrade() -> None:
    op.create_table(
        "ApiKey",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("Name", Str(200), nullable=True),
        sa.Column("TenantId", sa.Integer(), nullable=False),
        sa.Column("ServiceProviderIds", Str(1000), nullable=True),
        sa.Column("KeyPrefix", Str(16), nullable=False),
        sa.Column("KeyHash", Str(64), nullable=False),
        sa.Column("CreatedDate", UtcDateTime, nullable=False),
        sa.Column("RevokedDate", UtcDateTime, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("PK_ApiKey")),
        sa.UniqueConstraint("KeyHash", name=op.f("UQ_ApiKey_KeyHash")),
    )
    op.create_index(op.f("IX_ApiKey_KeyPrefix"), "ApiKey", ["KeyPrefix"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("IX_ApiKey_KeyPrefix"), table_name="ApiKey")
    op.drop_table("ApiKey")
