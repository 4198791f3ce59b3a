"""Tenants all the way down: billing credentials, customer rate plans and webhook destinations per tenant.

Revision ID: 0010_tenants
Revises: 0009_wakeup_outbox
Create Date: 2026-12-02

* ``IntegrationAuthentication.TenantId`` and ``CustomerRatePlan.TenantId`` become NOT NULL. Existing rows
  with no tenant are given **tenant 1**: before this revision the command line could create neither a
  credential, nor a plan, nor a service provider of any other tenant (``ServiceProvider.TenantId`` and
  ``DeviceBulkChange.TenantId`` default to 1), so tenant 1 is the only tenant such rows can have been
  meant for. A deployment that imported providers of other tenants moves a credential or a plan to its
  tenant with ``UPDATE … SET TenantId = n WHERE id = …``; until then, those tenants' changes are refused
  at submit ("none configured"), never billed through tenant 1's account.
* ``ServiceProvider.TenantId``, ``DeviceBulkChange.TenantId`` and ``ApiKey.TenantId`` were NOT NULL already.
  ``Device.TenantId`` and ``ThingSpaceCallBackResponseLog.TenantId`` stay nullable: they are the original's
  informational columns, and a device's tenant is always taken from its ``ServiceProvider``.
* ``CustomerRatePlan.Name`` is unique per tenant (``UQ_CustomerRatePlan_TenantId_Name``) instead of
  globally: the global uniqueness guarantees the existing rows fit the new constraint.
* ``WebhookDestination`` — a tenant's (or a provider's) webhook URL and its encrypted signing secret; at
  most one per tenant and one per provider (filtered unique indexes, written out for each dialect).

SQLite cannot alter a column's nullability nor drop a constraint: those two tables are rebuilt (batch
mode, from the table definitions spelled out below, so the offline script renders without a database).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mssql

revision: str = "0010_tenants"
down_revision: str | Sequence[str] | None = "0009_wakeup_outbox"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Rows with no tenant are tenant 1's (see the module doc).
DEFAULT_TENANT = 1

# SQL Server variants, as in ``tables.py`` (written out here: a revision does not import live code).
UtcDateTime = sa.DateTime().with_variant(mssql.DATETIME2, "mssql")


def Str(length: int) -> sa.String:
    return sa.String(length).with_variant(mssql.NVARCHAR(length), "mssql")


def _integration_authentication(tenant_nullable: bool) -> sa.Table:
    """The table as 0002 created it (the source of SQLite's rebuild)."""
    return sa.Table(
        "IntegrationAuthentication",
        sa.MetaData(),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("Integration", Str(50), nullable=False),
        sa.Column("Name", Str(200), nullable=True),
        sa.Column("TenantId", sa.Integer(), nullable=tenant_nullable),
        sa.Column("BaseUrl", Str(500), nullable=False),
        sa.Column("Username", Str(200), nullable=False),
        sa.Column("ClientCode", Str(100), nullable=False),
        sa.Column("Password", Str(500), nullable=False),
        sa.Column("SubscriptionKey", Str(500), nullable=False),
        sa.Column("IsActive", sa.Boolean(), nullable=False),
        sa.Column("IsDeleted", sa.Boolean(), nullable=False),
        sa.Column("CreatedDate", UtcDateTime, nullable=False),
        sa.PrimaryKeyConstraint("id", name="PK_IntegrationAuthentication"),
    )


def _customer_rate_plan(tenant_nullable: bool, unique: sa.UniqueConstraint) -> sa.Table:
    return sa.Table(
        "CustomerRatePlan",
        sa.MetaData(),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("TenantId", sa.Integer(), nullable=tenant_nullable),
        sa.Column("Name", Str(100), nullable=False),
        sa.Column("DisplayName", Str(200), nullable=True),
        sa.Column("IsPool", sa.Boolean(), nullable=False),
        sa.Column("IsDeleted", sa.Boolean(), nullable=False),
        sa.Column("CreatedDate", UtcDateTime, nullable=False),
        sa.PrimaryKeyConstraint("id", name="PK_CustomerRatePlan"),
        unique,
    )


def _filtered(column: str, condition: str) -> dict[str, Any]:
    """The WHERE of a filtered index, quoted for each dialect."""
    return {
        "sqlite_where": sa.text(f'"{column}" {condition}'),
        "postgresql_where": sa.text(f'"{column}" {condition}'),
        "mssql_where": sa.text(f"[{column}] {condition}"),
    }


def upgrade() -> None:
    for name in ("IntegrationAuthentication", "CustomerRatePlan"):
        rows = sa.table(name, sa.column("TenantId", sa.Integer()))
        op.execute(rows.update().where(rows.c.TenantId.is_(None)).values(TenantId=DEFAULT_TENANT))

    with op.batch_alter_table("IntegrationAuthentication", copy_from=_integration_authentication(True)) as batch:
        batch.alter_column("TenantId", existing_type=sa.Integer(), nullable=False)
    op.create_index(
        op.f("IX_IntegrationAuthentication_TenantId"), "IntegrationAuthentication", ["TenantId"], unique=False
    )

    old_unique = sa.UniqueConstraint("Name", name="UQ_CustomerRatePlan_Name")
    with op.batch_alter_table("CustomerRatePlan", copy_from=_customer_rate_plan(True, old_unique)) as batch:
        batch.drop_constraint("UQ_CustomerRatePlan_Name", type_="unique")
        batch.alter_column("TenantId", existing_type=sa.Integer(), nullable=False)
        batch.create_unique_constraint("UQ_CustomerRatePlan_TenantId_Name", ["TenantId", "Name"])

    op.create_table(
        "WebhookDestination",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("TenantId", sa.Integer(), nullable=False),
        sa.Column("ServiceProviderId", sa.Integer(), nullable=True),
        sa.Column("Url", Str(1000), nullable=False),
        sa.Column("Secret", Str(500), nullable=False),
        sa.Column("CreatedDate", UtcDateTime, nullable=False),
        sa.Column("ModifiedDate", UtcDateTime, nullable=True),
        sa.ForeignKeyConstraint(
            ["ServiceProviderId"],
            ["ServiceProvider.id"],
            name=op.f("FK_WebhookDestination_ServiceProviderId_ServiceProvider"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("PK_WebhookDestination")),
    )
    op.create_index(
        "UX_WebhookDestination_TenantId",
        "WebhookDestination",
        ["TenantId"],
        unique=True,
        **_filtered("ServiceProviderId", "IS NULL"),
    )
    op.create_index(
        "UX_WebhookDestination_ServiceProviderId",
        "WebhookDestination",
        ["ServiceProviderId"],
        unique=True,
        **_filtered("ServiceProviderId", "IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("UX_WebhookDestination_ServiceProviderId", table_name="WebhookDestination")
    op.drop_index("UX_WebhookDestination_TenantId", table_name="WebhookDestination")
    op.drop_table("WebhookDestination")

    # Two tenants may now have plans of the same name: the global constraint comes back only if they do not.
    new_unique = sa.UniqueConstraint("TenantId", "Name", name="UQ_CustomerRatePlan_TenantId_Name")
    with op.batch_alter_table("CustomerRatePlan", copy_from=_customer_rate_plan(False, new_unique)) as batch:
        batch.drop_constraint("UQ_CustomerRatePlan_TenantId_Name", type_="unique")
        batch.alter_column("TenantId", existing_type=sa.Integer(), nullable=True)
        batch.create_unique_constraint("UQ_CustomerRatePlan_Name", ["Name"])

    op.drop_index(op.f("IX_IntegrationAuthentication_TenantId"), table_name="IntegrationAuthentication")
    with op.batch_alter_table("IntegrationAuthentication", copy_from=_integration_authentication(False)) as batch:
        batch.alter_column("TenantId", existing_type=sa.Integer(), nullable=True)
