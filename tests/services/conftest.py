"""Service fixtures: a migrated database of each kind (a SQLite file per test; on PostgreSQL the run's
shared database, so every test works on a service provider and rows of its own)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from bulkchange.domain.identifiers import luhn_check_digit
from bulkchange.store.core import insert_rows
from bulkchange.store.db import make_engine, make_session_factory
from bulkchange.store.migrate import upgrade
from bulkchange.store.tables import DeviceBulkChange, M2MDeviceChange, ServiceProvider, utcnow


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/services.sqlite3"
        upgrade(url)
    else:
        url = str(request.getfixturevalue("pg_url"))
    engine = make_engine(url)
    try:
        yield make_session_factory(engine)
    finally:
        engine.dispose()


def unique_iccid() -> str:
    """A valid ICCID no other test of the run uses (the PostgreSQL database is shared)."""
    body = f"8914800{uuid.uuid4().int % 10**12:012d}"
    return body + luhn_check_digit(body)


def add_provider(session: Session, tenant_id: int = 1) -> int:
    provider = ServiceProvider(name=f"svc-test-{uuid.uuid4().hex[:12]}", tenant_id=tenant_id)
    session.add(provider)
    session.commit()
    return provider.id


def add_bulk(
    session: Session,
    provider_id: int,
    changes: Sequence[dict[str, Any]],
    *,
    status: str = "PROCESSING",
    file_name: str | None = None,
    created_by: str | None = "dashboard",
    created_date: datetime | None = None,
) -> int:
    """A bulk change and its device changes, written directly (executemany)."""
    bulk = DeviceBulkChange(
        service_provider_id=provider_id,
        status=status,
        file_name=file_name,
        created_by=created_by,
        created_date=created_date or utcnow(),
    )
    session.add(bulk)
    session.flush()
    rows = []
    for change in changes:
        row: dict[str, Any] = {
            "bulk_change_id": bulk.id,
            "service_provider_id": bulk.service_provider_id,
            "iccid": unique_iccid(),
            "status": "READY",
            "change_request": "{}",
            "target_status": "active",
            "plan": "ADD,ACTIVATE",
            "step_index": 0,
            "attempt_count": 0,
            "msisdn": None,
            "additional_step_status": None,
        }
        row.update(change)
        rows.append(row)
    insert_rows(session, M2MDeviceChange, rows)
    session.commit()
    return bulk.id
