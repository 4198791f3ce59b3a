"""A bulk change's results as CSV, one row per device change, for the REST API, the dashboard and the CLI.

Every row carries the bulk change's own status (``BulkChangeStatus``: PROCESSED, PARTIAL, ERROR …) so a file
read on its own says the same word as ``bulkchange status``, the API and the dashboard. Cells a spreadsheet
would run as a formula are prefixed with ``'`` (the same test that refuses them on input).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from bulkchange.input import is_formula
from bulkchange.store.db import read_only_session
from bulkchange.store.tables import DeviceBulkChange, M2MDeviceChange, as_utc

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
    "AdditionalStepDetails",
    "ProcessedDate",
    "BulkChangeStatus",
]


def _cell(value: Any) -> str:
    text = "" if value is None else str(value)
    return "'" + text if is_formula(text) else text


def _row(c: M2MDeviceChange, bulk_status: str) -> list[str]:
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
        c.additional_step_details,
        as_utc(c.processed_date).isoformat() if c.processed_date else None,
        bulk_status,
    )
    return [_cell(v) for v in values]


def export_csv(session_factory: sessionmaker[Session], bulk_id: int, *, chunk: int = 1000) -> Iterator[str]:
    """The results of one bulk change as CSV, streamed in chunks (keyset paging, one short session each).

    Raises ``KeyError`` before the first chunk when the bulk change does not exist.
    """
    with read_only_session(session_factory) as session:
        bulk_status = session.execute(select(DeviceBulkChange.status).where(DeviceBulkChange.id == bulk_id)).scalar()
    if bulk_status is None:
        raise KeyError(bulk_id)
    return _chunks(session_factory, bulk_id, str(bulk_status), chunk)


def _chunks(session_factory: sessionmaker[Session], bulk_id: int, bulk_status: str, chunk: int) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(EXPORT_COLUMNS)
    yield buffer.getvalue()
    last = 0
    while True:
        buffer.seek(0)
        buffer.truncate()
        with read_only_session(session_factory) as session:
            query = select(C).where(C.bulk_change_id == bulk_id, C.id > last).order_by(C.id).limit(chunk)
            rows = list(session.execute(query).scalars())
        if not rows:
            return
        for c in rows:
            writer.writerow(_row(c, bulk_status))
        last = rows[-1].id
        yield buffer.getvalue()

