"""DeviceBulkChangeLog rows: one per carrier call, DB step and billing step (seed §10.2).

Every row goes through ``redact`` so no secret or token ever reaches a log row (decisions.md).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import cast

from sqlalchemy import Table
from sqlalchemy.orm import Session

from bulkchange.domain.outcomes import LogEntry
from bulkchange.security.redaction import redact as redact_text
from bulkchange.store.core import insert_many
from bulkchange.store.tables import DeviceBulkChangeLog, utcnow

_TABLE = cast(Table, DeviceBulkChangeLog.__table__)
MAX_TEXT = 16_000  # keep one log row bounded; the carrier's full answer for a 10,000-device batch is not useful


def redact(text: str | None) -> str | None:
    """Mask secrets (``bulkchange.security.redaction``: the one redaction layer), and bound the length."""
    if text is None:
        return None
    masked = redact_text(text)
    if len(masked) > MAX_TEXT:
        masked = masked[:MAX_TEXT] + f"… ({len(masked) - MAX_TEXT} more characters)"
    return masked


def write_logs(session: Session, entries: Iterable[LogEntry], *, process_by: str) -> None:
    """Insert the rows in one executemany (no per-device round trip).

    A batch's rows share texts (the carrier's one answer to a 2,000-device request): each distinct text is
    redacted once. Rows go through the table, not the ORM's bulk path, which costs per row and per column;
    the columns every row shares (who, when) are given once (``store.core.insert_many``).
    """
    redacted: dict[str | None, str | None] = {None: None}

    def clean(text: str | None) -> str | None:
        if text not in redacted:
            redacted[text] = redact(text)
        return redacted[text]

    rows = [  # keyed by the column names as literals: ten ColumnCollection lookups cost ~6 µs a row
        {
            "BulkChangeId": e.bulk_change_id,
            "M2MDeviceChangeId": e.change_id,
            "LogEntryDescription": e.description,
            "HasErrors": not e.ok,
            "ErrorText": clean(e.error_text),
            "RequestText": clean(e.request_text),
            "ResponseText": clean(e.response_text),
            "ResponseStatus": "PROCESSED" if e.ok else "ERROR",
        }
        for e in entries
    ]
    insert_many(session, _TABLE, rows, shared={"ProcessBy": process_by, "ProcessedDate": utcnow()})
