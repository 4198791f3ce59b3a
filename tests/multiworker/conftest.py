"""Fixtures for the many-workers tests: a migrated database of each kind, with one bulk change of READY rows.

Rows are inserted directly (no carrier, no submit validation): these tests are about who claims what.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, insert

from bulkchange.store.db import make_engine, make_session_factory
from bulkchange.store.migrate import upgrade
from bulkchange.store.tables import DeviceBulkChange, M2MDeviceChange, ServiceProvider, utcnow


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def claim_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated database of each kind the claims run on (PostgreSQL: brand-new, dropped after)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'claims.sqlite3'}"
        upgrade(url)
        return url
    return str(request.getfixturevalue("pg_migrated_url"))


@pytest.fixture
def claim_engine(claim_db_url: str) -> Iterator[Engine]:
    engine = make_engine(claim_db_url, pool_size=10) if claim_db_url.startswith("postgresql") else make_engine(
        claim_db_url
    )
    yield engine
    engine.dispose()


MakeBulk = Callable[..., int]


@pytest.fixture
def make_bulk(claim_engine: Engine) -> MakeBulk:
    """Insert a bulk change with ``n`` READY changes; ``keys`` cycles batch keys over the rows."""
    return bulk_maker(claim_engine)


def bulk_maker(engine: Engine) -> MakeBulk:
    sessions = make_session_factory(engine)

    def build(n: int, *, keys: tuple[str, ...] = ("ADD:k1",)) -> int:
        now = utcnow()
        with sessions.begin() as session:
            provider = session.query(ServiceProvider).filter_by(name="claims").one_or_none()
            if provider is None:
                provider = ServiceProvider(name="claims")
                session.add(provider)
                session.flush()
            bulk = DeviceBulkChange(service_provider_id=provider.id, status="PROCESSING", created_date=now)
            session.add(bulk)
            session.flush()
            session.execute(
                insert(M2MDeviceChange),
                [
                    {
                        "bulk_change_id": bulk.id,
                        "service_provider_id": provider.id,
                        "iccid": f"8914800{bulk.id:04d}{i:08d}",
                        "status": "READY",
                        "change_request": "{}",
                        "target_status": "inventory",
                        "plan": "ADD",
                        "step_index": 0,
                        "attempt_count": 0,
                        "batch_key": keys[i % len(keys)],
                        "created_date": now,
                        "is_processed": False,
                        "has_errors": False,
                        "is_active": True,
                        "is_deleted": False,
                        "solo": False,
                    }
                    for i in range(n)
                ],
            )
            return bulk.id

    return build
