"""The database tables, named as in the seed and the original system so existing data maps one to one.

Table and column names are the original's (``M2M_DeviceChange.BulkChangeId`` …); Python attributes are
snake_case. Columns the engine needs beyond the original's (leases, the stored plan, attempts, the
carrier request id) are added to the same rows, because the row is the source of truth.

Datetimes are naive UTC everywhere (SQL Server ``DATETIME2`` has no zone); use ``utcnow()``.

No ``from __future__ import annotations`` here: the declarative classes' ``Mapped[...]`` annotations are
then objects already, and SQLAlchemy need not compile and evaluate ~300 annotation strings each time a
process imports this module — every command that opens the database does (tests/cli/test_startup.py).
Every name an annotation uses must therefore exist when the class is defined.
"""

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    ColumnElement,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Numeric,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects import mssql
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from bulkchange.domain.statuses import IN_FLIGHT_CHANGE_STATUSES
from bulkchange.security.crypto import EncryptedSecret

NAMING_CONVENTION = {
    "ix": "IX_%(table_name)s_%(column_0_N_name)s",
    "uq": "UQ_%(table_name)s_%(column_0_N_name)s",
    "ck": "CK_%(table_name)s_%(constraint_name)s",
    "fk": "FK_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "PK_%(table_name)s",
}

# BIGINT ids that still autoincrement on SQLite (which only does so for INTEGER PRIMARY KEY).
BigId = BigInteger().with_variant(Integer(), "sqlite")

# SQL Server variants (the seed's database). Other databases keep the generic types.
# * DATETIME2, not the legacy DATETIME (rounded to 1/300 s, from year 1753): leases and backoff compare
#   microsecond times written by Python.
# * NVARCHAR: ThingSpace and operator text may be any Unicode, and pyodbc sends Python str parameters as
#   NVARCHAR — against VARCHAR columns that forces an implicit conversion of the column (index scans).
# * NVARCHAR(max) for long text, never the deprecated TEXT / NTEXT.
UtcDateTime = DateTime().with_variant(mssql.DATETIME2, "mssql")
LongText = Text().with_variant(mssql.NVARCHAR(), "mssql")


def Str(length: int) -> String:
    """``VARCHAR(length)``; ``NVARCHAR(length)`` on SQL Server."""
    return String(length).with_variant(mssql.NVARCHAR(length), "mssql")


def utcnow() -> datetime:
    """Naive UTC now, second precision is not assumed."""
    return datetime.now(UTC).replace(tzinfo=None)


def as_utc(value: datetime) -> datetime:
    """A stored timestamp with its zone: the columns keep naive UTC (some engines drop the offset)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def _only_where(clause: ColumnElement[bool]) -> dict[str, Any]:
    """An index's WHERE on each database: partial (SQLite, PostgreSQL), filtered (SQL Server)."""
    return {f"{dialect}_where": clause for dialect in ("sqlite", "postgresql", "mssql")}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class DeviceStatus(Base):
    """Lookup of local device statuses (ids in ``bulkchange.domain.statuses.DeviceStatusId``)."""

    __tablename__ = "DeviceStatus"

    id: Mapped[int] = mapped_column("id", Integer, primary_key=True, autoincrement=False)
    status: Mapped[str] = mapped_column("Status", Str(50), unique=True)
    display_name: Mapped[str] = mapped_column("DisplayName", Str(100))


class ServiceProvider(Base):
    """A carrier account owner: which credentials and behaviour a bulk change uses."""

    __tablename__ = "ServiceProvider"

    id: Mapped[int] = mapped_column("id", Integer, primary_key=True)
    name: Mapped[str] = mapped_column("Name", Str(200), unique=True)
    # Which carrier API: 1 ThingSpace, 2 Control Center (``bulkchange.domain.carriers``).
    integration_id: Mapped[int] = mapped_column("IntegrationId", Integer, default=1)
    tenant_id: Mapped[int] = mapped_column("TenantId", Integer, default=1)
    register_carrier_service_callback: Mapped[bool] = mapped_column(
        "RegisterCarrierServiceCallBack", Boolean, default=False
    )
    is_active: Mapped[bool] = mapped_column("IsActive", Boolean, default=True)
    is_deleted: Mapped[bool] = mapped_column("IsDeleted", Boolean, default=False)
    created_date: Mapped[datetime] = mapped_column("CreatedDate", UtcDateTime, default=utcnow)


class ThingSpaceAuthentication(Base):
    """ThingSpace credentials of one service provider (the original's per-provider row)."""

    __tablename__ = "ThingSpaceAuthentication"

    id: Mapped[int] = mapped_column("id", Integer, primary_key=True)
    service_provider_id: Mapped[int] = mapped_column("ServiceProviderId", ForeignKey("ServiceProvider.id"), index=True)
    base_url: Mapped[str] = mapped_column("BaseUrl", Str(500))
    auth_token_url: Mapped[str] = mapped_column("AuthTokenUrl", Str(500))
    auth_url: Mapped[str] = mapped_column("AuthUrl", Str(500))
    client_id: Mapped[str] = mapped_column("ClientId", Str(200))
    # Secrets: encrypted on write (``enc:v1:…``, bulkchange.security.crypto), or an ssm:/secretsmanager: reference.
    client_secret: Mapped[str] = mapped_column("ClientSecret", EncryptedSecret(500))
    username: Mapped[str] = mapped_column("Username", Str(200))
    password: Mapped[str] = mapped_column("Password", EncryptedSecret(500))
    account_number: Mapped[str] = mapped_column("AccountNumber", Str(50))
    write_is_enabled: Mapped[bool] = mapped_column("WriteIsEnabled", Boolean, default=True)
    # Lockout guard: ThingSpace locks a user after 5 consecutive failed logins, so after one failure no
    # worker logs in again until an operator clears this (``bulkchange providers unlock``).
    login_failed_at: Mapped[datetime | None] = mapped_column("LoginFailedAt", UtcDateTime, nullable=True)
    login_failure_message: Mapped[str | None] = mapped_column("LoginFailureMessage", LongText, nullable=True)
    callback_url: Mapped[str | None] = mapped_column("CallbackUrl", Str(500), nullable=True)
    # What ThingSpace echoes in every CarrierService callback of this provider (given when the listener is
    # registered): generated with the provider, the password encrypted like the other secrets. Both set or
    # both empty; a receiver refuses to start on a provider with only one (engine/callbacks/gate.py).
    callback_username: Mapped[str | None] = mapped_column("CallbackUsername", Str(200), nullable=True)
    callback_password: Mapped[str | None] = mapped_column("CallbackPassword", EncryptedSecret(500), nullable=True)
    is_active: Mapped[bool] = mapped_column("IsActive", Boolean, default=True)
    is_deleted: Mapped[bool] = mapped_column("IsDeleted", Boolean, default=False)


class JasperCarrierRatePlan(Base):
    """Carrier rate plans known per provider (the original's table name, shared with Jasper).

    ``PlanMB`` (the plan's data allowance) and ``BaseRate`` are what Control Center's deactivation pre-step
    chooses by: the cheapest plan covering the cycle's usage. A plan without them is not a candidate.
    """

    __tablename__ = "JasperCarrierRatePlan"

    id: Mapped[int] = mapped_column("id", Integer, primary_key=True)
    service_provider_id: Mapped[int] = mapped_column("ServiceProviderId", ForeignKey("ServiceProvider.id"))
    rate_plan_code: Mapped[str] = mapped_column("RatePlanCode", Str(100))
    display_name: Mapped[str | None] = mapped_column("DisplayName", Str(200), nullable=True)
    is_deleted: Mapped[bool] = mapped_column("IsDeleted", Boolean, default=False)
    plan_mb: Mapped[Decimal | None] = mapped_column("PlanMB", Numeric(18, 4), nullable=True)
    base_rate: Mapped[Decimal | None] = mapped_column("BaseRate", Numeric(25, 4), nullable=True)

    __table_args__ = (UniqueConstraint("ServiceProviderId", "RatePlanCode"),)


class JasperAuthentication(Base):
    """Control Center (Jasper / AT&T POD 19) credentials and settings of one service provider.

    ``BaseUrl`` is the pod's REST root (the original's ProductionApiUrl, e.g. https://restapi19.att.com/rws/api);
    ``ApiKey`` is the user's API key, encrypted on write (or an ssm: / secretsmanager: reference). ``Tps`` is the
    account's calls per second by contract, ``TpsBurst`` how many of them it admits back to back; ``Pod19``
    makes every edit verified against the audit trail; ``RatePlanPreStep`` enables the deactivation rate plan
    pre-step.
    """

    __tablename__ = "JasperAuthentication"

    id: Mapped[int] = mapped_column("id", Integer, primary_key=True)
    service_provider_id: Mapped[int] = mapped_column("ServiceProviderId", ForeignKey("ServiceProvider.id"), index=True)
    base_url: Mapped[str] = mapped_column("BaseUrl", Str(500))
    username: Mapped[str] = mapped_column("Username", Str(200))
    api_key: Mapped[str] = mapped_column("ApiKey", EncryptedSecret(500))
    tps: Mapped[float] = mapped_column("Tps", Float, default=1.0)
    tps_burst: Mapped[int] = mapped_column("TpsBurst", Integer, default=1, server_default="1")
    pod19: Mapped[bool] = mapped_column("Pod19", Boolean, default=False)
    rate_plan_pre_step: Mapped[bool] = mapped_column("RatePlanPreStep", Boolean, default=False)
    write_is_enabled: Mapped[bool] = mapped_column("WriteIsEnabled", Boolean, default=True)
    is_active: Mapped[bool] = mapped_column("IsActive", Boolean, default=True)
    is_deleted: Mapped[bool] = mapped_column("IsDeleted", Boolean, default=False)
    created_date: Mapped[datetime] = mapped_column("CreatedDate", UtcDateTime, default=utcnow)


class Device(Base):
    """The local device record kept in step with the carrier (seed §5.1)."""

    __tablename__ = "Device"

    id: Mapped[int] = mapped_column("id", BigId, primary_key=True)
    service_provider_id: Mapped[int] = mapped_column("ServiceProviderId", ForeignKey("ServiceProvider.id"))
    tenant_id: Mapped[int | None] = mapped_column("TenantId", Integer, nullable=True)
    iccid: Mapped[str] = mapped_column("ICCID", Str(30))
    imei: Mapped[str | None] = mapped_column("IMEI", Str(30), nullable=True)
    msisdn: Mapped[str | None] = mapped_column("MSISDN", Str(30), nullable=True)
    ip_address: Mapped[str | None] = mapped_column("IpAddress", Str(50), nullable=True)
    device_status_id: Mapped[int | None] = mapped_column("DeviceStatusId", ForeignKey("DeviceStatus.id"), nullable=True)
    status: Mapped[str | None] = mapped_column("Status", Str(50), nullable=True)
    rate_plan: Mapped[str | None] = mapped_column("RatePlan", Str(100), nullable=True)
    carrier_rate_plan_id: Mapped[int | None] = mapped_column("CarrierRatePlanId", Integer, nullable=True)
    provider_date_added: Mapped[datetime | None] = mapped_column("ProviderDateAdded", UtcDateTime, nullable=True)
    is_active: Mapped[bool] = mapped_column("IsActive", Boolean, default=True)
    is_deleted: Mapped[bool] = mapped_column("IsDeleted", Boolean, default=False)
    created_by: Mapped[str | None] = mapped_column("CreatedBy", Str(100), nullable=True)
    created_date: Mapped[datetime] = mapped_column("CreatedDate", UtcDateTime, default=utcnow)
    modified_by: Mapped[str | None] = mapped_column("ModifiedBy", Str(100), nullable=True)
    modified_date: Mapped[datetime | None] = mapped_column("ModifiedDate", UtcDateTime, nullable=True)
    # Customer rate plan / pool the device is billed on (set after a change that names one).
    customer_rate_plan_id: Mapped[int | None] = mapped_column("CustomerRatePlanId", Integer, nullable=True)
    customer_rate_pool_id: Mapped[int | None] = mapped_column("CustomerRatePoolId", Integer, nullable=True)

    __table_args__ = (Index(None, "ServiceProviderId", "ICCID"),)


class _ThingSpaceRowMixin:
    """Audit columns shared by the carriers' device tables (ThingSpaceDevice*, JasperDevice)."""

    created_by: Mapped[str | None] = mapped_column("CreatedBy", Str(100), nullable=True)
    created_date: Mapped[datetime] = mapped_column("CreatedDate", UtcDateTime, default=utcnow)
    modified_by: Mapped[str | None] = mapped_column("ModifiedBy", Str(100), nullable=True)
    modified_date: Mapped[datetime | None] = mapped_column("ModifiedDate", UtcDateTime, nullable=True)
    is_active: Mapped[bool] = mapped_column("IsActive", Boolean, default=True)
    is_deleted: Mapped[bool] = mapped_column("IsDeleted", Boolean, default=False)


class ThingSpaceDevice(_ThingSpaceRowMixin, Base):
    """ThingSpace-specific device data (one row per provider + ICCID, a unique key: never duplicated)."""

    __tablename__ = "ThingSpaceDevice"

    id: Mapped[int] = mapped_column("id", BigId, primary_key=True)
    service_provider_id: Mapped[int] = mapped_column("ServiceProviderId", ForeignKey("ServiceProvider.id"))
    iccid: Mapped[str] = mapped_column("ICCID", Str(30))
    imei: Mapped[str | None] = mapped_column("IMEI", Str(30), nullable=True)
    msisdn: Mapped[str | None] = mapped_column("MSISDN", Str(30), nullable=True)
    ip_address: Mapped[str | None] = mapped_column("IpAddress", Str(50), nullable=True)
    status: Mapped[str | None] = mapped_column("Status", Str(50), nullable=True)
    device_status_id: Mapped[int | None] = mapped_column("DeviceStatusId", Integer, nullable=True)
    rate_plan: Mapped[str | None] = mapped_column("RatePlan", Str(100), nullable=True)

    __table_args__ = (UniqueConstraint("ServiceProviderId", "ICCID"),)


class ThingSpaceDeviceDetail(_ThingSpaceRowMixin, Base):
    """Extended ThingSpace attributes (account, date added). ServiceProviderId is always set."""

    __tablename__ = "ThingSpaceDeviceDetail"

    id: Mapped[int] = mapped_column("id", BigId, primary_key=True)
    service_provider_id: Mapped[int] = mapped_column("ServiceProviderId", ForeignKey("ServiceProvider.id"))
    iccid: Mapped[str] = mapped_column("ICCID", Str(30))
    account_number: Mapped[str | None] = mapped_column("AccountNumber", Str(50), nullable=True)
    thing_space_date_added: Mapped[datetime | None] = mapped_column("ThingSpaceDateAdded", UtcDateTime, nullable=True)

    __table_args__ = (UniqueConstraint("ServiceProviderId", "ICCID"),)


class ThingSpaceDeviceUsage(_ThingSpaceRowMixin, Base):
    """Usage and billing information per device (created when a device is added)."""

    __tablename__ = "ThingSpaceDeviceUsage"

    id: Mapped[int] = mapped_column("id", BigId, primary_key=True)
    service_provider_id: Mapped[int] = mapped_column("ServiceProviderId", ForeignKey("ServiceProvider.id"))
    iccid: Mapped[str] = mapped_column("ICCID", Str(30))
    imei: Mapped[str | None] = mapped_column("IMEI", Str(30), nullable=True)
    status: Mapped[str | None] = mapped_column("Status", Str(50), nullable=True)
    device_status_id: Mapped[int | None] = mapped_column("DeviceStatusId", Integer, nullable=True)
    rate_plan: Mapped[str | None] = mapped_column("RatePlan", Str(100), nullable=True)

    __table_args__ = (UniqueConstraint("ServiceProviderId", "ICCID"),)


class JasperDevice(_ThingSpaceRowMixin, Base):
    """Control Center's view of a device (one row per provider + ICCID), as its last verified read showed it:
    the carrier's status (``ACTIVATED`` …), MSISDN, IMEI, rate plan and communication plan."""

    __tablename__ = "JasperDevice"

    id: Mapped[int] = mapped_column("id", BigId, primary_key=True)
    service_provider_id: Mapped[int] = mapped_column("ServiceProviderId", ForeignKey("ServiceProvider.id"))
    iccid: Mapped[str] = mapped_column("ICCID", Str(30))
    status: Mapped[str | None] = mapped_column("Status", Str(50), nullable=True)
    msisdn: Mapped[str | None] = mapped_column("MSISDN", Str(30), nullable=True)
    imei: Mapped[str | None] = mapped_column("IMEI", Str(30), nullable=True)
    rate_plan: Mapped[str | None] = mapped_column("RatePlan", Str(100), nullable=True)
    communication_plan: Mapped[str | None] = mapped_column("CommunicationPlan", Str(100), nullable=True)

    __table_args__ = (UniqueConstraint("ServiceProviderId", "ICCID"),)


class DeviceBulkChange(Base):
    """One operator request over many devices. Its Status is computed from its changes (never the reverse)."""

    __tablename__ = "DeviceBulkChange"

    id: Mapped[int] = mapped_column("id", BigId, primary_key=True)
    tenant_id: Mapped[int] = mapped_column("TenantId", Integer, default=1)
    service_provider_id: Mapped[int] = mapped_column("ServiceProviderId", ForeignKey("ServiceProvider.id"))
    change_request_type: Mapped[str] = mapped_column("ChangeRequestType", Str(50), default="StatusUpdate")
    status: Mapped[str] = mapped_column("Status", Str(30), default="NEW")
    has_errors: Mapped[bool] = mapped_column("HasErrors", Boolean, default=False)
    status_details: Mapped[str | None] = mapped_column("StatusDetails", LongText, nullable=True)
    # The one deferred activation check per bulk change: which round is scheduled (0 = none yet).
    check_round: Mapped[int] = mapped_column("CheckRound", Integer, default=0)
    # When the next wake-up message is due; stops duplicated messages from multiplying continuations.
    next_wake_at: Mapped[datetime | None] = mapped_column("NextWakeAt", UtcDateTime, nullable=True)
    created_by: Mapped[str | None] = mapped_column("CreatedBy", Str(100), nullable=True)
    created_date: Mapped[datetime] = mapped_column("CreatedDate", UtcDateTime, default=utcnow)
    modified_date: Mapped[datetime | None] = mapped_column("ModifiedDate", UtcDateTime, nullable=True)
    processed_date: Mapped[datetime | None] = mapped_column("ProcessedDate", UtcDateTime, nullable=True)
    # A bulk change created by "retry failed" names the bulk change whose failed changes it retries.
    retry_of_bulk_change_id: Mapped[int | None] = mapped_column(
        "RetryOfBulkChangeId", BigInteger, nullable=True, index=True
    )
    # The name of the file the bulk change was created from (NULL for JSON rows and retries): the
    # dashboard's list filters on it.
    file_name: Mapped[str | None] = mapped_column("FileName", Str(255), nullable=True)
    # Set while an operator has paused the bulk change: workers claim none of its READY changes
    # (``engine.changes.claim_statement``); changes already at the carrier finish. Cleared by resume.
    paused_at: Mapped[datetime | None] = mapped_column("PausedAt", UtcDateTime, nullable=True)
    paused_by: Mapped[str | None] = mapped_column("PausedBy", Str(100), nullable=True)


class M2MDeviceChange(Base):
    """One device's change: the unit of work, claimed, sent, verified and finished on its own."""

    __tablename__ = "M2M_DeviceChange"

    id: Mapped[int] = mapped_column("id", BigId, primary_key=True)
    bulk_change_id: Mapped[int] = mapped_column("BulkChangeId", ForeignKey("DeviceBulkChange.id"))
    # The bulk change's provider, copied onto each change so one index can hold "one unfinished change per
    # device" (below): a unique index cannot reach into DeviceBulkChange.
    service_provider_id: Mapped[int] = mapped_column("ServiceProviderId", ForeignKey("ServiceProvider.id"))
    device_id: Mapped[int | None] = mapped_column("DeviceId", BigInteger, nullable=True)
    iccid: Mapped[str] = mapped_column("ICCID", Str(30))
    imei: Mapped[str | None] = mapped_column("IMEI", Str(30), nullable=True)
    msisdn: Mapped[str | None] = mapped_column("MSISDN", Str(30), nullable=True)
    ip_address: Mapped[str | None] = mapped_column("IpAddress", Str(50), nullable=True)
    device_identifier: Mapped[str | None] = mapped_column("DeviceIdentifier", Str(30), nullable=True)
    status: Mapped[str] = mapped_column("Status", Str(30), default="READY")
    status_details: Mapped[str | None] = mapped_column("StatusDetails", LongText, nullable=True)
    is_processed: Mapped[bool] = mapped_column("IsProcessed", Boolean, default=False)
    has_errors: Mapped[bool] = mapped_column("HasErrors", Boolean, default=False)
    change_request: Mapped[str] = mapped_column("ChangeRequest", LongText)
    additional_step_status: Mapped[str | None] = mapped_column("AdditionalStepStatus", Str(30), nullable=True)
    additional_step_details: Mapped[str | None] = mapped_column("AdditionalStepDetails", LongText, nullable=True)
    processed_by: Mapped[str | None] = mapped_column("ProcessedBy", Str(100), nullable=True)
    processed_date: Mapped[datetime | None] = mapped_column("ProcessedDate", UtcDateTime, nullable=True)
    created_by: Mapped[str | None] = mapped_column("CreatedBy", Str(100), nullable=True)
    created_date: Mapped[datetime] = mapped_column("CreatedDate", UtcDateTime, default=utcnow)
    is_active: Mapped[bool] = mapped_column("IsActive", Boolean, default=True)
    is_deleted: Mapped[bool] = mapped_column("IsDeleted", Boolean, default=False)

    # Engine columns (change-lifecycle.md).
    target_status: Mapped[str] = mapped_column("TargetStatus", Str(30))
    plan: Mapped[str] = mapped_column("Plan", Str(200))  # comma-separated step names of the provider's carrier
    step_index: Mapped[int] = mapped_column("StepIndex", Integer, default=0)
    attempt_count: Mapped[int] = mapped_column("AttemptCount", Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column("NextAttemptAt", UtcDateTime, nullable=True)
    lease_owner: Mapped[str | None] = mapped_column("LeaseOwner", Str(100), nullable=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column("LeaseExpiresAt", UtcDateTime, nullable=True)
    correlation_id: Mapped[str | None] = mapped_column("CorrelationId", Str(64), nullable=True)
    carrier_request_id: Mapped[str | None] = mapped_column("CarrierRequestId", Str(64), nullable=True)
    sent_at: Mapped[datetime | None] = mapped_column("SentAt", UtcDateTime, nullable=True)
    last_error_code: Mapped[str | None] = mapped_column("LastErrorCode", Str(200), nullable=True)
    batch_key: Mapped[str | None] = mapped_column("BatchKey", Str(64), nullable=True)
    solo: Mapped[bool] = mapped_column("Solo", Boolean, default=False)

    # Additional steps (billing, customer rate plan) after a PROCESSED change: their own claim and backoff
    # (AdditionalStepStatus / AdditionalStepDetails above say where they stand). Issue 4.
    additional_step_attempt_count: Mapped[int] = mapped_column(
        "AdditionalStepAttemptCount", Integer, default=0, server_default="0"
    )
    additional_step_next_attempt_at: Mapped[datetime | None] = mapped_column(
        "AdditionalStepNextAttemptAt", UtcDateTime, nullable=True
    )
    additional_step_lease_owner: Mapped[str | None] = mapped_column("AdditionalStepLeaseOwner", Str(100), nullable=True)
    additional_step_lease_expires_at: Mapped[datetime | None] = mapped_column(
        "AdditionalStepLeaseExpiresAt", UtcDateTime, nullable=True
    )

    __table_args__ = (
        Index(None, "AdditionalStepStatus", "AdditionalStepNextAttemptAt"),
        Index(None, "BulkChangeId", "Status", "NextAttemptAt"),
        # The bulk status counts additional steps on every refresh: without it each count read every row.
        Index(None, "BulkChangeId", "AdditionalStepStatus"),
        Index(None, "CarrierRequestId", "ICCID"),
        Index(None, "ICCID", "Status"),  # changes by device, across bulk changes (callbacks)
        UniqueConstraint("BulkChangeId", "ICCID"),
    )


# At most one unfinished change per device (service provider + ICCID), whatever path writes the rows: a
# unique index over the unfinished rows only (partial on SQLite and PostgreSQL, filtered on SQL Server).
# The database derives membership from Status, so every path that makes a change terminal frees the device
# and no code keeps a flag in step. A submission racing another for the same device loses on its INSERT
# (engine.submit turns that into the per-row refusal).
UNFINISHED_CHANGE_INDEX = Index(
    "UX_M2M_DeviceChange_Unfinished",
    M2MDeviceChange.__table__.c.ServiceProviderId,
    M2MDeviceChange.__table__.c.ICCID,
    unique=True,
    **_only_where(M2MDeviceChange.__table__.c.Status.in_(sorted(s.value for s in IN_FLIGHT_CHANGE_STATUSES))),
)


class DeviceBulkChangeLog(Base):
    """One row per carrier call, DB step and billing step of a change (seed §10.2)."""

    __tablename__ = "DeviceBulkChangeLog"

    id: Mapped[int] = mapped_column("id", BigId, primary_key=True)
    bulk_change_id: Mapped[int] = mapped_column("BulkChangeId", BigInteger, index=True)
    m2m_device_change_id: Mapped[int | None] = mapped_column("M2MDeviceChangeId", BigInteger, nullable=True, index=True)
    log_entry_description: Mapped[str] = mapped_column("LogEntryDescription", Str(200))
    has_errors: Mapped[bool] = mapped_column("HasErrors", Boolean, default=False)
    error_text: Mapped[str | None] = mapped_column("ErrorText", LongText, nullable=True)
    request_text: Mapped[str | None] = mapped_column("RequestText", LongText, nullable=True)
    response_text: Mapped[str | None] = mapped_column("ResponseText", LongText, nullable=True)
    response_status: Mapped[str | None] = mapped_column("ResponseStatus", Str(30), nullable=True)
    process_by: Mapped[str | None] = mapped_column("ProcessBy", Str(100), nullable=True)
    processed_date: Mapped[datetime] = mapped_column("ProcessedDate", UtcDateTime, default=utcnow)


class ThingSpaceCallBackResponseLog(Base):
    """Every CarrierService callback received, deduplicated by request id + device."""

    __tablename__ = "ThingSpaceCallBackResponseLog"

    id: Mapped[int] = mapped_column("id", BigId, primary_key=True)
    request_id: Mapped[str] = mapped_column("RequestId", Str(64))
    iccid: Mapped[str] = mapped_column("ICCID", Str(30))
    api_status: Mapped[str | None] = mapped_column("APIStatus", Str(30), nullable=True)
    api_response: Mapped[str] = mapped_column("APIResponse", LongText)
    tenant_id: Mapped[int | None] = mapped_column("TenantId", Integer, nullable=True)
    service_provider_id: Mapped[int | None] = mapped_column("ServiceProviderId", Integer, nullable=True)
    m2m_device_change_id: Mapped[int | None] = mapped_column("M2MDeviceChangeId", BigInteger, nullable=True)
    outcome: Mapped[str | None] = mapped_column("Outcome", Str(200), nullable=True)
    received_date: Mapped[datetime] = mapped_column("ReceivedDate", UtcDateTime, default=utcnow)

    __table_args__ = (
        UniqueConstraint("RequestId", "ICCID"),
        Index(None, "Outcome", "id"),  # the applier's scan of stored, not yet applied callbacks
    )


class QueueMessage(Base):
    """The embedded queue: SQS semantics (delay, visibility timeout, receive count, dead letter) in a table."""

    __tablename__ = "BulkChangeQueueMessage"

    id: Mapped[int] = mapped_column("id", BigId, primary_key=True)
    queue_name: Mapped[str] = mapped_column("QueueName", Str(100), default="device-bulk-change")
    message_id: Mapped[str] = mapped_column("MessageId", Str(64), unique=True)
    body: Mapped[str] = mapped_column("Body", LongText)
    attributes: Mapped[str] = mapped_column("MessageAttributes", LongText)  # JSON, SQS shape
    visible_at: Mapped[datetime] = mapped_column("VisibleAt", UtcDateTime)
    receive_count: Mapped[int] = mapped_column("ReceiveCount", Integer, default=0)
    receipt_handle: Mapped[str | None] = mapped_column("ReceiptHandle", Str(64), nullable=True)
    sent_at: Mapped[datetime] = mapped_column("SentAt", UtcDateTime, default=utcnow)
    first_received_at: Mapped[datetime | None] = mapped_column("FirstReceivedAt", UtcDateTime, nullable=True)
    dead_lettered_at: Mapped[datetime | None] = mapped_column("DeadLetteredAt", UtcDateTime, nullable=True)
    dead_letter_reason: Mapped[str | None] = mapped_column("DeadLetterReason", LongText, nullable=True)

    __table_args__ = (Index(None, "QueueName", "DeadLetteredAt", "VisibleAt"),)


class RevService(Base):
    """A Rev.io service created for a device change (billing; filled by the integrations)."""

    __tablename__ = "RevService"

    id: Mapped[int] = mapped_column("id", BigId, primary_key=True)
    m2m_device_change_id: Mapped[int] = mapped_column("M2MDeviceChangeId", BigInteger, unique=True)
    rev_customer_id: Mapped[str | None] = mapped_column("RevCustomerId", Str(50), nullable=True)
    number: Mapped[str | None] = mapped_column("Number", Str(30), nullable=True)
    rev_service_id: Mapped[int | None] = mapped_column("RevServiceId", BigInteger, nullable=True)
    rev_service_type_id: Mapped[int | None] = mapped_column("RevServiceTypeId", Integer, nullable=True)
    rev_activated_date: Mapped[datetime | None] = mapped_column("RevActivatedDate", UtcDateTime, nullable=True)
    device_id: Mapped[int | None] = mapped_column("DeviceId", BigInteger, nullable=True)
    created_date: Mapped[datetime] = mapped_column("CreatedDate", UtcDateTime, default=utcnow)
    # Issue 4: the intent is recorded before the Rev.io call (Status CREATING, RevServiceId NULL) and
    # completed after it (CREATED); a CREATING row found on retry means "look the service up first".
    status: Mapped[str | None] = mapped_column("Status", Str(30), nullable=True)
    number2: Mapped[str | None] = mapped_column("Number2", Str(30), nullable=True)
    rev_provider_id: Mapped[int | None] = mapped_column("RevProviderId", Integer, nullable=True)
    rev_usage_plan_group_id: Mapped[int | None] = mapped_column("RevUsagePlanGroupId", Integer, nullable=True)
    rev_package_id: Mapped[int | None] = mapped_column("RevPackageId", Integer, nullable=True)
    integration_authentication_id: Mapped[int | None] = mapped_column(
        "IntegrationAuthenticationId", Integer, nullable=True
    )
    modified_date: Mapped[datetime | None] = mapped_column("ModifiedDate", UtcDateTime, nullable=True)


# RevService.Status. The first two make a row the *creator* of the Rev.io service for its number; the others
# record a service without being its creator, or no service at all.
REV_SERVICE_CREATING = "CREATING"  # intent recorded, the Rev.io call made or about to be (outcome unknown)
REV_SERVICE_CREATED = "CREATED"  # created by this change (RevServiceId set)
REV_SERVICE_ADOPTED = "ADOPTED"  # another change's service for the same device service, recorded on this one
REV_SERVICE_REFUSED = "REFUSED"  # Rev.io refused the creation: nothing exists for this row
REV_SERVICE_DUPLICATE = "DUPLICATE"  # a second live service found by migration 0007 (kept for the record)
REV_SERVICE_LIVE = (REV_SERVICE_CREATED, REV_SERVICE_CREATING)

# One billing service per device service: at most one creator row per Rev.io account (the integration
# authentication) and service number (the MSISDN, or the ICCID of a device without one). Two workers billing
# changes of the same device cannot both record the intent to create, so cannot both call Rev.io; the loser
# waits, then adopts the winner's service or refuses (integrations.billing).
LIVE_REV_SERVICE_INDEX = Index(
    "UX_RevService_LiveNumber",
    RevService.__table__.c.IntegrationAuthenticationId,
    RevService.__table__.c.Number,
    unique=True,
    **_only_where(RevService.__table__.c.Status.in_(REV_SERVICE_LIVE)),
)


class RevServiceProduct(Base):
    """A Rev.io service product attached to a RevService."""

    __tablename__ = "RevServiceProduct"

    id: Mapped[int] = mapped_column("id", BigId, primary_key=True)
    rev_service_id: Mapped[int] = mapped_column("RevServiceId", BigInteger)
    rev_service_product_id: Mapped[int | None] = mapped_column("RevServiceProductId", BigInteger, nullable=True)
    rev_product_id: Mapped[int] = mapped_column("RevProductId", Integer)
    rate: Mapped[Decimal | None] = mapped_column("Rate", Numeric(25, 4), nullable=True)
    description: Mapped[str | None] = mapped_column("Description", Str(200), nullable=True)
    status: Mapped[str] = mapped_column("Status", Str(30), default="ACTIVE")
    created_date: Mapped[datetime] = mapped_column("CreatedDate", UtcDateTime, default=utcnow)
    # Issue 4: which change and which position of its product list this row is (the intent's key).
    m2m_device_change_id: Mapped[int | None] = mapped_column("M2MDeviceChangeId", BigInteger, nullable=True)
    position: Mapped[int | None] = mapped_column("Position", Integer, nullable=True)
    rev_customer_id: Mapped[str | None] = mapped_column("RevCustomerId", Str(50), nullable=True)
    package_id: Mapped[int | None] = mapped_column("PackageId", Integer, nullable=True)
    integration_authentication_id: Mapped[int | None] = mapped_column(
        "IntegrationAuthenticationId", Integer, nullable=True
    )
    modified_date: Mapped[datetime | None] = mapped_column("ModifiedDate", UtcDateTime, nullable=True)

    __table_args__ = (Index(None, "M2MDeviceChangeId", "Position", unique=True),)


# ------------------ billing, customer rate plans, the status-update webhook, idempotency keys


class IntegrationAuthentication(Base):
    """Credentials of a billing integration (Rev.io), named by a change's ``IntegrationAuthenticationId``.

    They belong to one tenant (``TenantId``, the ``ServiceProvider.TenantId`` of the bulk changes that may
    name them): a change of another tenant can neither name nor default to them.
    """

    __tablename__ = "IntegrationAuthentication"

    id: Mapped[int] = mapped_column("id", Integer, primary_key=True)
    integration: Mapped[str] = mapped_column("Integration", Str(50), default="Rev.io")
    name: Mapped[str | None] = mapped_column("Name", Str(200), nullable=True)
    tenant_id: Mapped[int] = mapped_column("TenantId", Integer, index=True)
    base_url: Mapped[str] = mapped_column("BaseUrl", Str(500))  # e.g. https://api.revioapi.com/v1
    username: Mapped[str] = mapped_column("Username", Str(200))
    client_code: Mapped[str] = mapped_column("ClientCode", Str(100))
    password: Mapped[str] = mapped_column("Password", EncryptedSecret(500))  # encrypted on write
    subscription_key: Mapped[str] = mapped_column("SubscriptionKey", EncryptedSecret(500))  # encrypted on write
    is_active: Mapped[bool] = mapped_column("IsActive", Boolean, default=True)
    is_deleted: Mapped[bool] = mapped_column("IsDeleted", Boolean, default=False)
    created_date: Mapped[datetime] = mapped_column("CreatedDate", UtcDateTime, default=utcnow)


class CustomerRatePlan(Base):
    """A customer rate plan (or pool, ``IsPool``) a change may name; the device is associated after success.

    A tenant's own: its ``Name`` is unique within the tenant (two tenants may both have an ``IOT-BASIC``),
    and a change names a plan of its bulk change's tenant only.
    """

    __tablename__ = "CustomerRatePlan"

    id: Mapped[int] = mapped_column("id", Integer, primary_key=True)
    tenant_id: Mapped[int] = mapped_column("TenantId", Integer)
    name: Mapped[str] = mapped_column("Name", Str(100))
    display_name: Mapped[str | None] = mapped_column("DisplayName", Str(200), nullable=True)
    is_pool: Mapped[bool] = mapped_column("IsPool", Boolean, default=False)
    is_deleted: Mapped[bool] = mapped_column("IsDeleted", Boolean, default=False)
    created_date: Mapped[datetime] = mapped_column("CreatedDate", UtcDateTime, default=utcnow)

    __table_args__ = (UniqueConstraint("TenantId", "Name"),)


class WebhookDestination(Base):
    """Where a tenant's (or one service provider's) status-update webhooks go, and the secret they are signed with.

    A row with ``ServiceProviderId`` NULL is the tenant's destination; a row naming a provider (of that
    tenant) overrides it for that provider's bulk changes. Without a row, ``BULKCHANGE_WEBHOOK_URL`` /
    ``BULKCHANGE_WEBHOOK_SECRET`` are the default. At most one row per tenant and one per provider: two
    filtered unique indexes (a plain UNIQUE would let PostgreSQL and SQLite keep several NULLs, and let
    SQL Server keep only one tenant-wide row in the whole table).
    """

    __tablename__ = "WebhookDestination"

    id: Mapped[int] = mapped_column("id", Integer, primary_key=True)
    tenant_id: Mapped[int] = mapped_column("TenantId", Integer)
    service_provider_id: Mapped[int | None] = mapped_column(
        "ServiceProviderId", ForeignKey("ServiceProvider.id"), nullable=True
    )
    url: Mapped[str] = mapped_column("Url", Str(1000))
    secret: Mapped[str] = mapped_column("Secret", EncryptedSecret(500))  # encrypted on write
    created_date: Mapped[datetime] = mapped_column("CreatedDate", UtcDateTime, default=utcnow)
    modified_date: Mapped[datetime | None] = mapped_column("ModifiedDate", UtcDateTime, nullable=True)

    __table_args__ = (
        Index(
            "UX_WebhookDestination_TenantId",
            "TenantId",
            unique=True,
            sqlite_where=text('"ServiceProviderId" IS NULL'),
            postgresql_where=text('"ServiceProviderId" IS NULL'),
            mssql_where=text("[ServiceProviderId] IS NULL"),
        ),
        Index(
            "UX_WebhookDestination_ServiceProviderId",
            "ServiceProviderId",
            unique=True,
            sqlite_where=text('"ServiceProviderId" IS NOT NULL'),
            postgresql_where=text('"ServiceProviderId" IS NOT NULL'),
            mssql_where=text("[ServiceProviderId] IS NOT NULL"),
        ),
    )


class WebhookOutbox(Base):
    """One status-update webhook event (written in the transaction that makes a bulk change terminal).

    Delivered page by page (``PagesDelivered`` of ``PageCount``), at least once, with backoff; the
    receiver drops duplicates by ``EventId`` + page number.
    """

    __tablename__ = "WebhookOutbox"

    id: Mapped[int] = mapped_column("id", BigId, primary_key=True)
    event_id: Mapped[str] = mapped_column("EventId", Str(64), unique=True)
    event_type: Mapped[str] = mapped_column("EventType", Str(50))
    bulk_change_id: Mapped[int] = mapped_column("BulkChangeId", BigInteger)
    status: Mapped[str] = mapped_column("Status", Str(30), default="PENDING")
    page_count: Mapped[int | None] = mapped_column("PageCount", Integer, nullable=True)
    pages_delivered: Mapped[int] = mapped_column("PagesDelivered", Integer, default=0)
    attempt_count: Mapped[int] = mapped_column("AttemptCount", Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column("NextAttemptAt", UtcDateTime, nullable=True)
    lease_owner: Mapped[str | None] = mapped_column("LeaseOwner", Str(100), nullable=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column("LeaseExpiresAt", UtcDateTime, nullable=True)
    last_error: Mapped[str | None] = mapped_column("LastError", LongText, nullable=True)
    created_date: Mapped[datetime] = mapped_column("CreatedDate", UtcDateTime, default=utcnow)
    delivered_date: Mapped[datetime | None] = mapped_column("DeliveredDate", UtcDateTime, nullable=True)

    __table_args__ = (
        UniqueConstraint("BulkChangeId", "EventType"),
        Index(None, "Status", "NextAttemptAt"),
    )


class WebhookDeliveryAttempt(Base):
    """One POST of one webhook page: what the operator sees (``bulkchange webhooks list``)."""

    __tablename__ = "WebhookDeliveryAttempt"

    id: Mapped[int] = mapped_column("id", BigId, primary_key=True)
    outbox_id: Mapped[int] = mapped_column("WebhookOutboxId", BigInteger, index=True)
    event_id: Mapped[str] = mapped_column("EventId", Str(64))
    page_number: Mapped[int] = mapped_column("PageNumber", Integer)
    attempt_number: Mapped[int] = mapped_column("AttemptNumber", Integer)
    url: Mapped[str] = mapped_column("Url", Str(1000))
    response_status: Mapped[int | None] = mapped_column("ResponseStatus", Integer, nullable=True)
    error: Mapped[str | None] = mapped_column("Error", LongText, nullable=True)
    duration_ms: Mapped[int] = mapped_column("DurationMs", Integer, default=0)
    attempted_date: Mapped[datetime] = mapped_column("AttemptedDate", UtcDateTime, default=utcnow)


class ApiIdempotencyKey(Base):
    """An ``Idempotency-Key`` of the REST API: the request it was first used with and what that created.

    Claimed (inserted) before the bulk change is created, so two concurrent requests with one key cannot
    both create; ``BulkChangeId`` is filled once the creation committed.
    """

    __tablename__ = "ApiIdempotencyKey"

    key: Mapped[str] = mapped_column("IdempotencyKey", Str(255), primary_key=True)
    request_hash: Mapped[str] = mapped_column("RequestHash", Str(64))
    bulk_change_id: Mapped[int | None] = mapped_column("BulkChangeId", BigInteger, nullable=True)
    created_date: Mapped[datetime] = mapped_column("CreatedDate", UtcDateTime, default=utcnow)


# ------------------------------------------------ API keys and the shared carrier rate limits


class ApiKey(Base):
    """An API key of the REST API and dashboard: only its SHA-256 is stored (the key is shown once).

    Scoped to a tenant (``ServiceProvider.TenantId``) and, when ``ServiceProviderIds`` is set, to those of
    its service providers (comma-separated ids). ``KeyPrefix`` (not secret) finds the row; the hash is then
    compared in constant time. A revoked key (``RevokedDate``) is refused.
    """

    __tablename__ = "ApiKey"

    id: Mapped[int] = mapped_column("id", Integer, primary_key=True)
    name: Mapped[str | None] = mapped_column("Name", Str(200), nullable=True)
    tenant_id: Mapped[int] = mapped_column("TenantId", Integer)
    service_provider_ids: Mapped[str | None] = mapped_column("ServiceProviderIds", Str(1000), nullable=True)
    key_prefix: Mapped[str] = mapped_column("KeyPrefix", Str(16), index=True)
    key_hash: Mapped[str] = mapped_column("KeyHash", Str(64), unique=True)
    created_date: Mapped[datetime] = mapped_column("CreatedDate", UtcDateTime, default=utcnow)
    revoked_date: Mapped[datetime | None] = mapped_column("RevokedDate", UtcDateTime, nullable=True)


class CarrierRateLimit(Base):
    """One shared rate limit (carrier account + endpoint): every worker in every process counts here.

    ``BlockedUntil`` holds the carrier's own ``Retry-After`` after a 429, so all workers wait it out.
    ``BucketFullAt`` (the account's every-call row only) is the moment the account's token bucket would be
    full again given the calls counted so far (NULL: full). Times are epoch seconds (float): compared with
    arithmetic, the same on every database.
    """

    __tablename__ = "CarrierRateLimit"

    limit_key: Mapped[str] = mapped_column("LimitKey", Str(200), primary_key=True)
    blocked_until: Mapped[float | None] = mapped_column("BlockedUntil", Float, nullable=True)
    bucket_full_at: Mapped[float | None] = mapped_column("BucketFullAt", Float, nullable=True)


class CarrierInFlight(Base):
    """A call a worker has open at a carrier account (Control Center allows one at a time per account).

    One row per allowed concurrent call (``Slot`` 0 … max - 1) of a limit scope; a worker takes a free row
    (no ``Owner``, or a lease past ``ExpiresAt``: a crashed holder blocks nobody for longer) with one
    conditional UPDATE, and gives it back after the carrier answered. Times are epoch seconds.
    """

    __tablename__ = "CarrierInFlight"

    limit_key: Mapped[str] = mapped_column("LimitKey", Str(200), primary_key=True)
    slot: Mapped[int] = mapped_column("Slot", Integer, primary_key=True, autoincrement=False)
    owner: Mapped[str | None] = mapped_column("Owner", Str(100), nullable=True)
    expires_at: Mapped[float | None] = mapped_column("ExpiresAt", Float, nullable=True)


class CarrierRateSlot(Base):
    """One request counted against a ``CarrierRateLimit`` (a sliding window: slots older than it are deleted)."""

    __tablename__ = "CarrierRateSlot"

    id: Mapped[int] = mapped_column("id", BigId, primary_key=True)
    limit_key: Mapped[str] = mapped_column("LimitKey", Str(200))
    called_at: Mapped[float] = mapped_column("CalledAt", Float)

    __table_args__ = (Index(None, "LimitKey", "CalledAt"),)



# ------------------------------------------------------------------------- the wake-up outbox


class OutboxMessage(Base):
    """A queue message written in the transaction whose commit needs it (the transactional outbox).

    A submission writes its bulk change's wake-up here, in the same transaction as the bulk change, so a
    committed bulk change always has a wake-up on record even when the queue is unreachable at that
    moment. The row is then relayed to the transport (``bulkchange.engine.outbox``): by the submitting
    process right after the commit, else by any running worker. Durable work as a leased row, like every
    other kind here: ``Status`` PENDING (due at ``NextAttemptAt``) → SENDING (leased to ``LeaseOwner``
    until ``LeaseExpiresAt``) → SENT; a failed send goes back to PENDING with a backoff and is never given up.
    """

    __tablename__ = "OutboxMessage"

    id: Mapped[int] = mapped_column("id", BigId, primary_key=True)
    kind: Mapped[str] = mapped_column("Kind", Str(50))
    bulk_change_id: Mapped[int] = mapped_column("BulkChangeId", BigInteger, index=True)
    attributes: Mapped[str] = mapped_column("MessageAttributes", LongText)  # JSON, SQS shape
    body: Mapped[str] = mapped_column("Body", Str(200))
    delay_seconds: Mapped[int] = mapped_column("DelaySeconds", Integer, default=0)
    status: Mapped[str] = mapped_column("Status", Str(30), default="PENDING")
    attempt_count: Mapped[int] = mapped_column("AttemptCount", Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column("NextAttemptAt", UtcDateTime, nullable=True)
    lease_owner: Mapped[str | None] = mapped_column("LeaseOwner", Str(100), nullable=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column("LeaseExpiresAt", UtcDateTime, nullable=True)
    last_error: Mapped[str | None] = mapped_column("LastError", LongText, nullable=True)
    transport_message_id: Mapped[str | None] = mapped_column("TransportMessageId", Str(100), nullable=True)
    created_date: Mapped[datetime] = mapped_column("CreatedDate", UtcDateTime, default=utcnow)
    sent_date: Mapped[datetime | None] = mapped_column("SentDate", UtcDateTime, nullable=True)

    __table_args__ = (Index(None, "Status", "NextAttemptAt"),)
