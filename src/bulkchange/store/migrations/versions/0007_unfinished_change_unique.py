"""One unfinished change per device, one billing service per device service: unique indexes (issue 18).

Revision ID: 0007_unfinished_change_unique
Revises: 0006_change_iccid_index
Create Date: 2026-12-01

* ``M2M_DeviceChange.ServiceProviderId`` — the bulk change's provider on each change (filled here from
  ``DeviceBulkChange``; NOT NULL, a foreign key), so that one index can name the device.
* ``UX_M2M_DeviceChange_Unfinished`` — unique (ServiceProviderId, ICCID) over the rows whose Status is
  READY, SENDING or AWAITING_RESULT: partial on SQLite and PostgreSQL, filtered on SQL Server.
* ``UX_RevService_LiveNumber`` — unique (IntegrationAuthenticationId, Number) over the rows whose Status is
  CREATING or CREATED: the one row that creates a device's Rev.io service.

Existing data that already breaks a rule:

* Two unfinished changes of one device: the upgrade **fails** and lists them (device, change ids, bulk
  changes, statuses). Which one should go on is an operator's decision — either may already be at the
  carrier — and the state does not last: every unfinished change ends (processed, failed or needs review)
  within the reconcile give-up time. Let them finish (or cancel the unsent ones) with the version that
  made them, then upgrade again. The upgrade is one transaction: nothing is left half-applied.
  The SQL Server / PostgreSQL scripts (``bulkchange db sql``) carry the same check as a guard statement.
* Two live Rev.io services recorded for one number: both services exist in Rev.io and are billing, so the
  rows are history, not a decision to make. The oldest stays the live one; the later ones get Status
  DUPLICATE (their RevServiceId kept, so an operator can find and disconnect them in Rev.io).

On SQLite, NOT NULL and the foreign key need a table rebuild (Alembic's batch mode): online the table is
reflected (indexes a DBA added are kept); the offline script uses the table as 0006 left it, written out
below.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import context, op
from sqlalchemy.dialects import mssql

revision: str = "0007_unfinished_change_unique"
down_revision: str | Sequence[str] | None = "0006_change_iccid_index"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UNFINISHED = ("AWAITING_RESULT", "READY", "SENDING")  # ChangeStatus in flight, frozen as of this revision
LIVE_SERVICE = ("CREATED", "CREATING")
CHANGE_INDEX = "UX_M2M_DeviceChange_Unfinished"
SERVICE_INDEX = "UX_RevService_LiveNumber"
SP_FK = "FK_M2M_DeviceChange_ServiceProviderId_ServiceProvider"
#: Duplicates listed in the error message (all are counted).
LISTED = 50


def Str(length: int) -> sa.String:
    """NVARCHAR on SQL Server, as in ``tables.py``: the index filters' literals then render N'…'."""
    return sa.String(length).with_variant(mssql.NVARCHAR(length), "mssql")


_changes = sa.table(
    "M2M_DeviceChange",
    sa.column("id", sa.BigInteger()),
    sa.column("BulkChangeId", sa.BigInteger()),
    sa.column("ServiceProviderId", sa.Integer()),
    sa.column("ICCID", Str(30)),
    sa.column("Status", Str(30)),
)
_bulks = sa.table("DeviceBulkChange", sa.column("id", sa.BigInteger()), sa.column("ServiceProviderId", sa.Integer()))
_services = sa.table(
    "RevService",
    sa.column("id", sa.BigInteger()),
    sa.column("IntegrationAuthenticationId", sa.Integer()),
    sa.column("Number", Str(30)),
    sa.column("Status", Str(30)),
)


class UnfinishedDuplicates(RuntimeError):
    """Devices with more than one unfinished change: the unique index cannot be created until they finish."""


def upgrade() -> None:
    op.add_column("M2M_DeviceChange", sa.Column("ServiceProviderId", sa.Integer(), nullable=True))
    op.execute(
        _changes.update().values(
            ServiceProviderId=sa.select(_bulks.c.ServiceProviderId)
            .where(_bulks.c.id == _changes.c.BulkChangeId)
            .scalar_subquery()
        )
    )
    copy_from = _m2m_as_of_0006() if context.is_offline_mode() else None
    with op.batch_alter_table("M2M_DeviceChange", copy_from=copy_from) as batch:
        batch.alter_column("ServiceProviderId", existing_type=sa.Integer(), nullable=False)
        batch.create_foreign_key(SP_FK, "ServiceProvider", ["ServiceProviderId"], ["id"])
    _refuse_unfinished_duplicates()
    where = _changes.c.Status.in_(UNFINISHED)
    op.create_index(
        CHANGE_INDEX,
        "M2M_DeviceChange",
        ["ServiceProviderId", "ICCID"],
        unique=True,
        sqlite_where=where,
        postgresql_where=where,
        mssql_where=where,
    )

    _set_aside_duplicate_services()
    live = _services.c.Status.in_(LIVE_SERVICE)
    op.create_index(
        SERVICE_INDEX,
        "RevService",
        ["IntegrationAuthenticationId", "Number"],
        unique=True,
        sqlite_where=live,
        postgresql_where=live,
        mssql_where=live,
    )


def downgrade() -> None:
    op.drop_index(SERVICE_INDEX, table_name="RevService")
    op.drop_index(CHANGE_INDEX, table_name="M2M_DeviceChange")
    copy_from = _m2m_as_of_0006(service_provider=True) if context.is_offline_mode() else None
    with op.batch_alter_table("M2M_DeviceChange", copy_from=copy_from) as batch:
        batch.drop_constraint(SP_FK, type_="foreignkey")
        batch.drop_column("ServiceProviderId")


def _refuse_unfinished_duplicates() -> None:
    """Fail the upgrade, naming them, when a device has two unfinished changes (see the module docstring)."""
    per_device = (
        sa.select(_changes.c.ServiceProviderId, _changes.c.ICCID)
        .where(_changes.c.Status.in_(UNFINISHED))
        .group_by(_changes.c.ServiceProviderId, _changes.c.ICCID)
        .having(sa.func.count() > 1)
    )
    if context.is_offline_mode():
        _guard_statement(per_device)
        return
    bind = op.get_bind()
    devices = bind.execute(per_device.order_by(_changes.c.ServiceProviderId, _changes.c.ICCID)).all()
    if not devices:
        return
    lines = []
    for provider_id, iccid in devices[:LISTED]:
        held = bind.execute(
            sa.select(_changes.c.id, _changes.c.BulkChangeId, _changes.c.Status)
            .where(
                _changes.c.ServiceProviderId == provider_id,
                _changes.c["ICCID"] == iccid,
                _changes.c.Status.in_(UNFINISHED),
            )
            .order_by(_changes.c.id)
        ).all()
        changes = ", ".join(f"change {cid} in bulk change {bid} ({status})" for cid, bid, status in held)
        lines.append(f"  service provider {provider_id}, ICCID {iccid}: {changes}")
    more = f"\n  … and {len(devices) - LISTED} more device(s)" if len(devices) > LISTED else ""
    raise UnfinishedDuplicates(
        f"{len(devices)} device(s) have more than one unfinished change, which this version forbids:\n"
        + "\n".join(lines)
        + more
        + "\nLet these changes finish (or cancel the ones not sent yet) with the version that created them, "
        "then upgrade again. Nothing was changed."
    )


def _guard_statement(duplicates: sa.Select[tuple[int, str]]) -> None:
    """The offline scripts' version of the check: stop the script before the index if duplicates exist."""
    dialect = context.get_context().dialect
    found = str(
        sa.select(sa.literal(1))
        .select_from(duplicates.subquery())
        .compile(dialect=dialect, compile_kwargs={"literal_binds": True})
    )
    message = (
        "devices with more than one unfinished change (M2M_DeviceChange): let them finish or cancel "
        "the unsent ones with the previous version, then run this script again"
    )
    if dialect.name == "mssql":
        op.execute(f"IF EXISTS ({found}) THROW 50007, N'{message}', 1")
    elif dialect.name == "postgresql":
        op.execute(f"DO $$ BEGIN IF EXISTS ({found}) THEN RAISE EXCEPTION '{message}'; END IF; END $$")
    # SQLite has no statement to raise with; its CREATE UNIQUE INDEX fails on a duplicate.


def _set_aside_duplicate_services() -> None:
    """Later live RevService rows of a number already live in the same Rev.io account become DUPLICATE."""
    older = _services.alias("older")
    op.execute(
        _services.update()
        .where(
            _services.c.Status.in_(LIVE_SERVICE),
            sa.exists().where(
                older.c.IntegrationAuthenticationId == _services.c.IntegrationAuthenticationId,
                older.c.Number == _services.c.Number,
                older.c.Status.in_(LIVE_SERVICE),
                older.c.id < _services.c.id,
            ),
        )
        .values(Status="DUPLICATE")
    )


def _m2m_as_of_0006(*, service_provider: bool = False) -> sa.Table:
    """M2M_DeviceChange as 0001–0006 built it plus the new column: for the offline SQLite rebuild only.

    ``service_provider``: the column is NOT NULL with its foreign key (the downgrade's starting point).
    """
    meta = sa.MetaData()
    dt = sa.DateTime
    extra: list[sa.ForeignKeyConstraint] = []
    if service_provider:
        sa.Table("ServiceProvider", meta, sa.Column("id", sa.Integer(), primary_key=True))
        extra.append(sa.ForeignKeyConstraint(["ServiceProviderId"], ["ServiceProvider.id"], name=SP_FK))
    sa.Table("DeviceBulkChange", meta, sa.Column("id", sa.Integer(), primary_key=True))
    return sa.Table(
        "M2M_DeviceChange",
        meta,
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("BulkChangeId", sa.Integer(), nullable=False),
        sa.Column("DeviceId", sa.BigInteger(), nullable=True),
        sa.Column("ICCID", sa.String(30), nullable=False),
        sa.Column("IMEI", sa.String(30), nullable=True),
        sa.Column("MSISDN", sa.String(30), nullable=True),
        sa.Column("IpAddress", sa.String(50), nullable=True),
        sa.Column("DeviceIdentifier", sa.String(30), nullable=True),
        sa.Column("Status", sa.String(30), nullable=False),
        sa.Column("StatusDetails", sa.Text(), nullable=True),
        sa.Column("IsProcessed", sa.Boolean(), nullable=False),
        sa.Column("HasErrors", sa.Boolean(), nullable=False),
        sa.Column("ChangeRequest", sa.Text(), nullable=False),
        sa.Column("AdditionalStepStatus", sa.String(30), nullable=True),
        sa.Column("AdditionalStepDetails", sa.Text(), nullable=True),
        sa.Column("ProcessedBy", sa.String(100), nullable=True),
        sa.Column("ProcessedDate", dt(), nullable=True),
        sa.Column("CreatedBy", sa.String(100), nullable=True),
        sa.Column("CreatedDate", dt(), nullable=False),
        sa.Column("IsActive", sa.Boolean(), nullable=False),
        sa.Column("IsDeleted", sa.Boolean(), nullable=False),
        sa.Column("TargetStatus", sa.String(30), nullable=False),
        sa.Column("Plan", sa.String(200), nullable=False),
        sa.Column("StepIndex", sa.Integer(), nullable=False),
        sa.Column("AttemptCount", sa.Integer(), nullable=False),
        sa.Column("NextAttemptAt", dt(), nullable=True),
        sa.Column("LeaseOwner", sa.String(100), nullable=True),
        sa.Column("LeaseExpiresAt", dt(), nullable=True),
        sa.Column("CorrelationId", sa.String(64), nullable=True),
        sa.Column("CarrierRequestId", sa.String(64), nullable=True),
        sa.Column("SentAt", dt(), nullable=True),
        sa.Column("LastErrorCode", sa.String(200), nullable=True),
        sa.Column("BatchKey", sa.String(64), nullable=True),
        sa.Column("Solo", sa.Boolean(), nullable=False),
        sa.Column("AdditionalStepAttemptCount", sa.Integer(), server_default="0", nullable=False),
        sa.Column("AdditionalStepNextAttemptAt", dt(), nullable=True),
        sa.Column("AdditionalStepLeaseOwner", sa.String(100), nullable=True),
        sa.Column("AdditionalStepLeaseExpiresAt", dt(), nullable=True),
        sa.Column("ServiceProviderId", sa.Integer(), nullable=not service_provider),
        sa.PrimaryKeyConstraint("id", name="PK_M2M_DeviceChange"),
        sa.ForeignKeyConstraint(
            ["BulkChangeId"], ["DeviceBulkChange.id"], name="FK_M2M_DeviceChange_BulkChangeId_DeviceBulkChange"
        ),
        sa.UniqueConstraint("BulkChangeId", "ICCID", name="UQ_M2M_DeviceChange_BulkChangeId_ICCID"),
        sa.Index("IX_M2M_DeviceChange_BulkChangeId_Status_NextAttemptAt", "BulkChangeId", "Status", "NextAttemptAt"),
        sa.Index("IX_M2M_DeviceChange_CarrierRequestId_ICCID", "CarrierRequestId", "ICCID"),
        sa.Index(
            "IX_M2M_DeviceChange_AdditionalStepStatus_AdditionalStepNextAttemptAt",
            "AdditionalStepStatus",
            "AdditionalStepNextAttemptAt",
        ),
        sa.Index("IX_M2M_DeviceChange_ICCID_Status", "ICCID", "Status"),
        *extra,
    )
