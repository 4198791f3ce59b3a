"""The REST API's request and response bodies (they are the OpenAPI schema at ``/openapi.json``)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from bulkchange.domain.statuses import ChangeStatus
from bulkchange.store.tables import as_utc

MAX_ID = 2**31 - 1


UtcDatetime = Annotated[datetime, AfterValidator(as_utc)]
MAX_ROWS = 10_000


class RowProblemOut(BaseModel):
    row: int = Field(
        description="the spreadsheet's line number (header = line 1, first data row = line 2); for JSON, the "
        "object's position in the list, from 1; 0 = the whole request"
    )
    field: str
    message: str
    iccid: str | None = None


class Problem(BaseModel):
    """An error answer: RFC 9457 problem details, ``application/problem+json`` (``api/problems.py``)."""

    type: str = Field(default="about:blank", description="a URI naming the kind of problem")
    title: str = Field(description="the kind of problem in words")
    status: int = Field(description="the HTTP status")
    detail: str = Field(description="this occurrence in words")
    errors: list[RowProblemOut] = Field(
        default_factory=list,
        description="the individual problems: a refused file's rows, or the request's invalid parameters",
    )


class Refused(Problem):
    """The request was refused: nothing was created. ``errors`` lists the invalid rows' problems: the first
    1,000 in full, and ``errors_omitted`` counts the others (a large file of bad rows stays a small answer)."""

    rows: int | None = None
    errors_omitted: int = Field(default=0, description="problems found after the ones listed, counted only")


class CreateBulkChange(BaseModel):
    """A bulk change from JSON rows (the same columns as a CSV file, any case)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "service_provider_id": 1,
                    "status": "active",
                    "rows": [
                        {
                            "ICCID": "89148000000800784259",
                            "IMEI": "990013907835573",
                            "ServicePlan": "M2M_4G",
                            "MdnZipCode": "98801",
                        }
                    ],
                }
            ]
        }
    )

    service_provider_id: int = Field(ge=1, le=MAX_ID)
    status: str = Field(
        max_length=50,
        description="target status for every row (a row's Status column overrides): inventory, pending activation, "
        "active, deactive, suspend, restore",
    )
    ignore_current_status: bool = False
    rows: list[dict[str, Any]] = Field(
        min_length=1, description="at most BULKCHANGE_MAX_ROWS_PER_BULK_CHANGE rows (more are refused with 413)"
    )


class PreviewRowOut(BaseModel):
    row: int
    iccid: str | None
    target: str | None
    current_status: str | None = Field(description="the local device status, when the device is known")
    plan: list[str] = Field(description="carrier operations planned for this row, in order")
    ok: bool
    problems: list[str]
    warnings: list[str]


class PreviewOut(BaseModel):
    """A dry run: what would be created, and why not when refused. Nothing was written."""

    dry_run: bool = True
    ok: bool = Field(description="true when the bulk change would be accepted as it is")
    rows: int
    planned_operations: dict[str, int] = Field(description="carrier operations by kind over the valid rows")
    estimated_time: str | None = Field(
        default=None,
        description="Control Center: how long the valid rows take at the account's calls per second, e.g. "
        "'10,000 changes × 3 calls ≈ 8 h 20 min at 1 TPS'; null for ThingSpace",
    )
    warnings: int
    problems: list[RowProblemOut]
    devices: list[PreviewRowOut]


class BulkChangeOut(BaseModel):
    id: int
    service_provider_id: int
    status: str = Field(
        description="computed from the device changes and their additional steps: NEW, PROCESSING, SCHEDULED "
        "(every unfinished change waits for its date at the carrier), PAUSED, then PROCESSED (all done), PARTIAL "
        "(some failed), ERROR (none done, or a bulk-level failure: resumable while changes are unfinished) or "
        "CANCELLED (nothing failed, some cancelled)"
    )
    has_errors: bool = Field(description="true when any change or any additional step (billing) failed")
    details: str | None
    created_by: str | None
    created_date: UtcDatetime
    modified_date: UtcDatetime | None
    processed_date: UtcDatetime | None
    retry_of_bulk_change_id: int | None
    total: int = Field(description="device changes")
    finished: int = Field(description="device changes in a terminal status")
    progress: float = Field(ge=0, le=1)
    counts: dict[str, int] = Field(description="device changes by status")
    next_check_at: UtcDatetime | None = Field(
        default=None,
        description="when the deferred check next looks at the device changes awaiting the carrier's result "
        "(AWAITING_RESULT); null when none waits on it. A provider without a registered callback listener "
        "settles every change this way",
    )
    paused_at: UtcDatetime | None = Field(default=None, description="when it was paused (null: not paused)")
    paused_by: str | None = Field(default=None, description="who paused it")
    warnings: list[str] = Field(
        default_factory=list,
        description="on the answer to a creation: what the client should know although the bulk change was "
        "created (e.g. its wake-up message is still pending: the queue could not be reached; the running "
        "workers send it as soon as it can be)",
    )


class BulkChangePage(BaseModel):
    items: list[BulkChangeOut]
    total: int
    limit: int
    offset: int


class LogEntryOut(BaseModel):
    id: int
    description: str
    has_errors: bool
    response_status: str | None
    error_text: str | None
    request_text: str | None
    response_text: str | None
    processed_by: str | None
    processed_date: UtcDatetime


class ChangeOut(BaseModel):
    id: int
    iccid: str
    imei: str | None
    target_status: str
    status: str
    plan: list[str]
    step_index: int
    attempt_count: int
    msisdn: str | None
    ip_address: str | None
    details: str | None
    last_error_code: str | None
    carrier_request_id: str | None
    additional_step_status: str | None
    processed_date: UtcDatetime | None
    logs: list[LogEntryOut] | None = Field(default=None, description="present when include_logs=true")


class ChangePage(BaseModel):
    bulk_change_id: int
    items: list[ChangeOut]
    total: int
    limit: int
    offset: int


class CancelIn(BaseModel):
    change_ids: list[int] | None = Field(
        default=None, max_length=MAX_ROWS, description="only these changes (default: every change not yet sent)"
    )


class CancelOut(BaseModel):
    cancelled: list[int] = Field(description="the changes cancelled: every one the carrier had not accepted")
    at_carrier: int = Field(description="changes left alone because they are at the carrier (sending, awaiting)")
    finished: int = Field(description="changes left alone because they had already finished")
    not_cancellable: int = Field(description="at_carrier + finished")
    bulk_change: BulkChangeOut


class ControlOut(BaseModel):
    """The answer to pause and resume: what was done, and the bulk change as it is now."""

    detail: str
    bulk_change: BulkChangeOut


class RerunBillingIn(BaseModel):
    change_ids: list[int] | None = Field(default=None, max_length=MAX_ROWS, description="only these device changes")
    iccids: list[str] | None = Field(default=None, max_length=MAX_ROWS, description="only these devices")
    statuses: list[str] | None = Field(
        default=None,
        max_length=2,
        description="additional step statuses to re-run: ERROR and/or WAITING_CREDENTIALS (default: both)",
    )


class RerunBillingOut(BaseModel):
    rerun: list[int] = Field(description="device changes whose additional step is due again")
    bulk_change: BulkChangeOut


class RetryIn(BaseModel):
    statuses: list[ChangeStatus] | None = Field(
        default=None,
        description="which failed statuses to retry (default: ERROR, API_FAILED, ACTIVATION_UNVERIFIED, "
        "NEEDS_REVIEW); PROCESSED, CANCELLED and unfinished changes are never retried",
    )


class ServiceProviderOut(BaseModel):
    id: int
    name: str
    callbacks: bool


class CallbackRegistrationIn(BaseModel):
    url: str = Field(
        min_length=1,
        max_length=400,
        description="where the carrier reaches `bulkchange serve` (https://host[:port]), without the path",
    )


class CallbackRegistrationOut(BaseModel):
    service: str = Field(description="the carrier's callback service (ThingSpace: CarrierService)")
    url: str | None
    username: str | None = Field(description="the username the carrier echoes (the password is never shown)")


class CallbacksOut(BaseModel):
    service_provider_id: int
    registered_url: str | None = Field(description="the listener URL registered from here (null: none)")
    registrations: list[CallbackRegistrationOut] = Field(description="what the carrier has registered, asked now")


class Health(BaseModel):
    status: str
    detail: str | None = None
