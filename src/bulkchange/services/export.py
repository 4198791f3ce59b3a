"""The results of one bulk change as CSV, one line per device change: what the REST API's
``/export.csv``, the dashboard's "export CSV" and ``bulkchange export`` all send (one source of the columns).

Cells a spreadsheet would run as a formula are quoted the way input refuses them; dates are UTC with
their offset (the database keeps naive UTC)."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from bulkchange.input import is_formula
from bulkchange.store.tables import M2MDeviceChange

C = M2MDeviceChange

EXPORT_COLUMNS = [
    "ChangeId",
    "ICCID",
    "IMEI",
    "TargetStatus",
    "Status",
    "MSISDN",
    "IpAddress",
    "StatusDetails",
    "LastErrorCode",
    "CarrierRequestId",
    "AdditionalStepStatus",
    "ProcessedDate",
]


def _cell(value: Any) -> str:
    """A CSV cell that a spreadsheet will not run as a formula (the same test that refuses them on input)."""
    text = "" if value is None else str(value)
    return "'" + text if is_formula(text) else text


def _utc(value: datetime | None) -> str | None:
    if value is None:
        return None
    return (value.replace(tzinfo=UTC) if value.tzinfo is None else value).isoformat()


def _line(c: M2MDeviceChange) -> list[str]:
    values = (
        c.id,
        c.iccid,
        c.imei,
        c.target_status,
        c.status,
        c.msisdn,
        c.ip_address,
        c.status_details,
        c.last_error_code,
        c.carrier_request_id,
        c.additional_step_status,
        _utc(c.processed_date),
    )
    return [_cell(v) for v in values]


def export_csv(session_factory: sessionmaker[Session], bulk_id: int, *, chunk: int = 1000) -> Iterator[str]:
    """The results of one bulk change as CSV, streamed in chunks (keyset paging, one short session each)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(EXPORT_COLUMNS)
    yield buffer.getvalue()
    last = 0
    while True:
        buffer.seek(0)
        buffer.truncate()
        with session_factory() as session:
            rows = list(
                session.execute(
                    select(C).where(C.bulk_change_id == bulk_id, C.id > last).order_by(C.id).limit(chunk)
                ).scalars()
            )
        if not rows:
            return
        writer.writerows(_line(c) for c in rows)
        last = rows[-1].id
        yield buffer.getvalue()
