"""Cisco Control Center (AT&T POD 19) as a second carrier: its credentials, its device table, its rate plans.

Revision ID: 0011_controlcenter
Revises: 0010_tenants
Create Date: 2026-12-05

* ``JasperAuthentication`` — a service provider's Control Center account: the pod's REST root (BaseUrl),
  user name, encrypted API key, the contract's calls per second (Tps), whether edits are verified against
  the audit trail (Pod19) and whether deactivations move the line to the cheapest covering rate plan first
  (RatePlanPreStep). ``ServiceProvider.IntegrationId`` 2 names Control Center (1 is ThingSpace).
* ``JasperDevice`` — the carrier's view of each device (status in Control Center's words, MSISDN, IMEI,
  rate plan, communication plan), one row per provider + ICCID.
* ``JasperCarrierRatePlan.PlanMB`` / ``BaseRate`` — what the pre-step chooses by (nullable: a plan without
  them is not a candidate).
* ``CarrierInFlight`` — the "call in flight" lease per carrier account (Control Center allows one call at a
  time per account, across every worker and process).
* ``DeviceStatus`` 20 ``retired`` — the local status of a retired SIM.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mssql

revision: str = "0011_controlcenter"
down_revision: str | Sequence[str] | None = "0010_tenants"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# SQL Server variants, as in ``tables.py`` (written out here: a revision does not import live code).
UtcDateTime = sa.DateTime().with_variant(mssql.DATETIME2, "mssql")
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
RETIRED = (20, "retired", "Retired")


def Str(length: int) -> sa.String:
    return sa.String(length).with_variant(mssql.NVARCHAR(length), "mssql")


def _device_status() -> sa.TableClause:
    columns = (sa.column("id", sa.Integer()), sa.column("Status", sa.String()), sa.column("DisplayName", sa.String()))
    return sa.table("DeviceStatus", *columns)


def upgrade() -> None:
    # A plain INSERT (not bulk_insert): DeviceStatus ids are fixed, see 0001.
    status_id, status, display = RETIRED
    op.execute(_device_status().insert().values(id=status_id, Status=status, DisplayName=display))

    op.add_column("JasperCarrierRatePlan", sa.Column("PlanMB", sa.Numeric(18, 4), nullable=True))
    op.add_column("JasperCarrierRatePlan", sa.Column("BaseRate", sa.Numeric(25, 4), nullable=True))

    op.create_table(
        "JasperAuthentication",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("ServiceProviderId", sa.Integer(), nullable=False),
        sa.Column("BaseUrl", Str(500), nullable=False),
        sa.Column("Username", Str(200), nullable=False),
        sa.Column("ApiKey", Str(500), nullable=False),
        sa.Column("Tps", sa.Float(), nullable=False),
        sa.Column("Pod19", sa.Boolean(), nullable=False),
        sa.Column("RatePlanPreStep", sa.Boolean(), nullable=False),
        sa.Column("WriteIsEnabled", sa.Boolean(), nullable=False),
        sa.Column("IsActive", sa.Boolean(), nullable=False),
        sa.Column("IsDeleted", sa.Boolean(), nullable=False),
        sa.Column("CreatedDate", UtcDateTime, nullable=False),
        sa.ForeignKeyConstraint(
            ["ServiceProviderId"],
            ["ServiceProvider.id"],
            name=op.f("FK_JasperAuthentication_ServiceProviderId_ServiceProvider"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("PK_JasperAuthentication")),
    )
    op.create_index(
        op.f("IX_JasperAuthentication_ServiceProviderId"), "JasperAuthentication", ["ServiceProviderId"], unique=False
    )

    op.create_table(
        "JasperDevice",
        sa.Column("id", BigId, nullable=False),
        sa.Column("ServiceProviderId", sa.Integer(), nullable=False),
        sa.Column("ICCID", Str(30), nullable=False),
        sa.Column("Status", Str(50), nullable=True),
        sa.Column("MSISDN", Str(30), nullable=True),
        sa.Column("IMEI", Str(30), nullable=True),
        sa.Column("RatePlan", Str(100), nullable=True),
        sa.Column("CommunicationPlan", Str(100), nullable=True),
        sa.Column("CreatedBy", Str(100), nullable=True),
        sa.Column("CreatedDate", UtcDateTime, nullable=False),
        sa.Column("ModifiedBy", Str(100), nullable=True),
        sa.Column("ModifiedDate", UtcDateTime, nullable=True),
        sa.Column("IsActive", sa.Boolean(), nullable=False),
        sa.Column("IsDeleted", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["ServiceProviderId"],
            ["ServiceProvider.id"],
            name=op.f("FK_JasperDevice_ServiceProviderId_ServiceProvider"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("PK_JasperDevice")),
        sa.UniqueConstraint("ServiceProviderId", "ICCID", name=op.f("UQ_JasperDevice_ServiceProviderId_ICCID")),
    )

    op.create_table(
        "CarrierInFlight",
        sa.Column("LimitKey", Str(200), nullable=False),
        sa.Column("Slot", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("Owner", Str(100), nullable=True),
        sa.Column("ExpiresAt", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("LimitKey", "Slot", name=op.f("PK_CarrierInFlight")),
    )


def downgrade() -> None:
    op.drop_table("CarrierInFlight")
    op.drop_table("JasperDevice")
    op.drop_index(op.f("IX_JasperAuthentication_ServiceProviderId"), table_name="JasperAuthentication")
    op.drop_table("JasperAuthentication")
    with op.batch_alter_table("JasperCarrierRatePlan") as batch:
        batch.drop_column("BaseRate")
        batch.drop_column("PlanMB")
    device_status = _device_status()
    op.execute(device_status.delete().where(device_status.c.id == RETIRED[0]))
