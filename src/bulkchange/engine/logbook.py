"""DeviceBulkChangeLog rows: one per carrier call, DB step and billing step (seed §10.2).

Every row goes through ``redact`` so no secret or token ever reaches a log row (decisions.md).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import insert
from sqlalchemy.orm import Session

from bulkchange.security.redaction import redact as redact_text
from bulkchange.store.tables import DeviceBulkChangeLog, utcnow

MAX_TEXT = 16_000  # keep one log row bounded; the carrier's full answer for a 10,000-device batch is not useful


def redact(text: str | None) -> str | None:
    """Mask secrets (``bulkchange.security.redaction``: the one redaction layer), and bound the length."""
    if text is None:
        return None
    masked = redact_text(text)
    if len(masked) > MAX_TEXT:
        masked = masked[:MAX_TEXT] + f"… ({len(masked) - MAX_TEXT} more characters)"
    return masked


@dataclass(frozen=True)
class LogEntry:
    """One log row before it is written."""

    bulk_change_id: int
    change_id: int | None
    description: str
    ok: bool
    request_text: str | None = None
    response_text: str | None = None
    error_text: str | None = None


def write_logs(session: Session, entries: Iterable[LogEntry], *, process_by: str) -> None:
    """Insert the rows in one executemany (no per-device round trip)."""
    now = utcnow()
    rows = [
        {
            "bulk_change_id": e.bulk_change_id,
            "m2m_device_change_id": e.change_id,
            "log_entry_description": e.description,
            "has_errors": not e.ok,
            "error_text": redact(e.error_text),
            "request_text": redact(e.request_text),
            "response_text": redact(e.response_text),
            "response_status": "PROCESSED" if e.ok else "ERROR",
            "process_by": process_by,
            "processed_date": now,
        }
        for e in entries
    ]
    if rows:
        session.execute(insert(DeviceBulkChangeLog), rows)
