"""Billing, customer rate plans and the status-update webhook (issue 4).

Revision ID: 0002_billing_webhooks
Revises: 0001_initial
Create Date: 2026-11-28

* ``IntegrationAuthentication`` — Rev.io credentials, named by a change's ``IntegrationAuthenticationId``.
* ``CustomerRatePlan`` — plans (and pools) a change may name; ``Device.CustomerRatePlanId`` / ``…PoolId``.
* ``M2M_DeviceChange.AdditionalStep*`` — the additional step's own claim (lease) and backoff.
* ``RevService`` / ``RevServiceProduct`` — intent columns (recorded before the Rev.io call) and the fields
  the original's stored procedures wrote.
* ``WebhookOutbox`` / ``WebhookDeliveryAttempt`` — the webhook outbox and every delivery attempt.

Only plain ``ADD COLUMN`` and new tables / indexes: no batch (table rebuild) is needed on SQLite, and
the offline SQL renders for every dialect.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mssql

revision: str = "0002_billing_webhooks"
down_revision: str | Sequence[str] | None = "0001_initial"
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
        "IntegrationAuthentication",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("Integration", Str(50), nullable=False),
        sa.Column("Name", Str(200), nullable=True),
        sa.Column("TenantId", sa.Integer(), nullable=True),
        sa.Column("BaseUrl", Str(500), nullable=False),
        sa.Column("Username", Str(200), nullable=False),
        sa.Column("ClientCode", Str(100), nullable=False),
        sa.Column("Password", Str(500), nullable=False),
        sa.Column("SubscriptionKey", Str(500), nullable=False),
        sa.Column("IsActive", sa.Boolean(), nullable=False),
        sa.Column("IsDeleted", sa.Boolean(), nullable=False),
        sa.Column("CreatedDate", UtcDateTime, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("PK_IntegrationAuthentication")),
    )
    op.create_table(
        "CustomerRatePlan",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("TenantId", sa.Integer(), nullable=True),
        sa.Column("Name", Str(100), nullable=False),
        sa.Column("DisplayName", Str(200), nullable=True),
        sa.Column("IsPool", sa.Boolean(), nullable=False),
        sa.Column("IsDeleted", sa.Boolean(), nullable=False),
        sa.Column("CreatedDate", UtcDateTime, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("PK_CustomerRatePlan")),
        sa.UniqueConstraint("Name", name=op.f("UQ_CustomerRatePlan_Name")),
    )
    op.create_table(
        "WebhookOutbox",
        sa.Column("id", BigId, nullable=False),
        sa.Column("EventId", Str(64), nullable=False),
        sa.Column("EventType", Str(50), nullable=False),
        sa.Column("BulkChangeId", sa.BigInteger(), nullable=False),
        sa.Column("Status", Str(30), nullable=False),
        sa.Column("PageCount", sa.Integer(), nullable=True),
        sa.Column("PagesDelivered", sa.Integer(), nullable=False),
        sa.Column("AttemptCount", sa.Integer(), nullable=False),
        sa.Column("NextAttemptAt", UtcDateTime, nullable=True),
        sa.Column("LeaseOwner", Str(100), nullable=True),
        sa.Column("LeaseExpiresAt", UtcDateTime, nullable=True),
        sa.Column("LastError", LongText, nullable=True),
        sa.Column("CreatedDate", UtcDateTime, nullable=False),
        sa.Column("DeliveredDate", UtcDateTime, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("PK_WebhookOutbox")),
        sa.UniqueConstraint("EventId", name=op.f("UQ_WebhookOutbox_EventId")),
        sa.UniqueConstraint("BulkChangeId", "EventType", name=op.f("UQ_WebhookOutbox_BulkChangeId_EventType")),
    )
    op.create_index(
        op.f("IX_WebhookOutbox_Status_NextAttemptAt"), "WebhookOutbox", ["Status", "NextAttemptAt"], unique=False
    )
    op.create_table(
        "WebhookDeliveryAttempt",
        sa.Column("id", BigId, nullable=False),
        sa.Column("WebhookOutboxId", sa.BigInteger(), nullable=False),
        sa.Column("EventId", Str(64), nullable=False),
        sa.Column("PageNumber", sa.Integer(), nullable=False),
        sa.Column("AttemptNumber", sa.Integer(), nullable=False),
        sa.Column("Url", Str(1000), nullable=False),
        sa.Column("ResponseStatus", sa.Integer(), nullable=True),
        sa.Column("Error", LongText, nullable=True),
        sa.Column("DurationMs", sa.Integer(), nullable=False),
        sa.Column("AttemptedDate", UtcDateTime, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("PK_WebhookDeliveryAttempt")),
    )
    op.create_index(
        op.f("IX_WebhookDeliveryAttempt_WebhookOutboxId"), "WebhookDeliveryAttempt", ["WebhookOutboxId"], unique=False
    )

    op.add_column("Device", sa.Column("CustomerRatePlanId", sa.Integer(), nullable=True))
    op.add_column("Device", sa.Column("CustomerRatePoolId", sa.Integer(), nullable=True))

    op.add_column(
        "M2M_DeviceChange",
        sa.Column("AdditionalStepAttemptCount", sa.Integer(), server_default="0", nullable=False),
    )
    op.add_column("M2M_DeviceChange", sa.Column("AdditionalStepNextAttemptAt", UtcDateTime, nullable=True))
    op.add_column("M2M_DeviceChange", sa.Column("AdditionalStepLeaseOwner", Str(100), nullable=True))
    op.add_column("M2M_DeviceChange", sa.Column("AdditionalStepLeaseExpiresAt", UtcDateTime, nullable=True))
    op.create_index(
        op.f("IX_M2M_DeviceChange_AdditionalStepStatus_AdditionalStepNextAttemptAt"),
        "M2M_DeviceChange",
        ["AdditionalStepStatus", "AdditionalStepNextAttemptAt"],
        unique=False,
    )

    op.add_column("RevService", sa.Column("Status", Str(30), nullable=True))
    op.add_column("RevService", sa.Column("Number2", Str(30), nullable=True))
    op.add_column("RevService", sa.Column("RevProviderId", sa.Integer(), nullable=True))
    op.add_column("RevService", sa.Column("RevUsagePlanGroupId", sa.Integer(), nullable=True))
    op.add_column("RevService", sa.Column("RevPackageId", sa.Integer(), nullable=True))
    op.add_column("RevService", sa.Column("IntegrationAuthenticationId", sa.Integer(), nullable=True))
    op.add_column("RevService", sa.Column("ModifiedDate", UtcDateTime, nullable=True))

    op.add_column("RevServiceProduct", sa.Column("M2MDeviceChangeId", sa.BigInteger(), nullable=True))
    op.add_column("RevServiceProduct", sa.Column("Position", sa.Integer(), nullable=True))
    op.add_column("RevServiceProduct", sa.Column("RevCustomerId", Str(50), nullable=True))
    op.add_column("RevServiceProduct", sa.Column("PackageId", sa.Integer(), nullable=True))
    op.add_column("RevServiceProduct", sa.Column("IntegrationAuthenticationId", sa.Integer(), nullable=True))
    op.add_column("RevServiceProduct", sa.Column("ModifiedDate", UtcDateTime, nullable=True))
    op.create_index(
        op.f("IX_RevServiceProduct_M2MDeviceChangeId_Position"),
        "RevServiceProduct",
        ["M2MDeviceChangeId", "Position"],
        unique=True,
    )


def downgrade() -> None:
    op.drop_index(op.f("IX_RevServiceProduct_M2MDeviceChangeId_Position"), table_name="RevServiceProduct")
    for column in (
        "ModifiedDate",
        "IntegrationAuthenticationId",
        "PackageId",
        "RevCustomerId",
        "Position",
        "M2MDeviceChangeId",
    ):
        op.drop_column("RevServiceProduct", column)
    for column in (
        "ModifiedDate",
        "IntegrationAuthenticationId",
        "RevPackageId",
        "RevUsagePlanGroupId",
        "RevProviderId",
        "Number2",
        "Status",
    ):
        op.drop_column("RevService", column)
    op.drop_index(
        op.f("IX_M2M_DeviceChange_AdditionalStepStatus_AdditionalStepNextAttemptAt"), table_name="M2M_DeviceChange"
    )
    for column in (
        "AdditionalStepLeaseExpiresAt",
        "AdditionalStepLeaseOwner",
        "AdditionalStepNextAttemptAt",
        "AdditionalStepAttemptCount",
    ):
        op.drop_column("M2M_DeviceChange", column)
    op.drop_column("Device", "CustomerRatePoolId")
    op.drop_column("Device", "CustomerRatePlanId")
    for table in ("WebhookDeliveryAttempt", "WebhookOutbox", "CustomerRatePlan", "IntegrationAuthentication"):
        op.drop_table(table)
