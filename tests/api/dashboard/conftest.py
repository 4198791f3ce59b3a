"""Dashboard browser fixtures: Debian's chromium driven by Playwright (launched as in
``tests/api/test_dashboard_browser.py``), pages logged in by the session cookie, an axe-core scan, and
bulk changes written straight into the database (one executemany for 10,000 device changes).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pytest
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Browser, Page, sync_playwright
from sqlalchemy import select

from bulkchange.api.security import SESSION_COOKIE
from bulkchange.domain.identifiers import luhn_check_digit
from bulkchange.store.core import insert_rows
from bulkchange.store.tables import DeviceBulkChange, M2MDeviceChange, utcnow

from ..conftest import Api
from ..test_dashboard_browser import CHROMIUM_ARGS, ensure_chromium

BLOCKING_IMPACTS = ("serious", "critical")
_axe = Axe()


@pytest.fixture(scope="session")
def chromium() -> str:
    return ensure_chromium()


@pytest.fixture(scope="module")
def browser(chromium: str) -> Iterator[Browser]:
    # Module scope: Playwright's sync API runs an event loop on this thread while it is open (see
    # test_dashboard_browser.py).
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


@contextlib.contextmanager
def logged_in(browser: Browser, api: Api, *, key: str | None = None) -> Iterator[Page]:
    """A page of a fresh browser context holding the dashboard's session cookie (as the login form sets it)."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.add_cookies(
        [
            {
                "name": SESSION_COOKIE,
                "value": key or api.key,
                "url": api.base_url,
                "httpOnly": True,
                "sameSite": "Strict",
            }
        ]
    )
    page = context.new_page()
    page.set_default_timeout(20_000)
    try:
        yield page
    finally:
        context.close()


def assert_accessible(page: Page, what: str) -> None:
    """axe-core finds no serious or critical violation on the page as it is now."""
    violations = _axe.run(page).response["violations"]
    blocking = [v for v in violations if v.get("impact") in BLOCKING_IMPACTS]
    described = [f"{v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes'][:3]]}" for v in blocking]
    assert not blocking, f"{what}: " + "; ".join(described)


def iccid_for(n: int, prefix: str = "891480") -> str:
    body = f"{prefix}{n:013d}"
    return body + luhn_check_digit(body)


@dataclass
class Inserted:
    bulk_id: int
    change_ids: list[int]
    iccids: list[str]


def insert_bulk_change(
    api: Api,
    changes: Sequence[dict[str, Any]],
    *,
    service_provider_id: int | None = None,
    status: str = "PROCESSING",
    file_name: str | None = None,
    created_by: str = "dashboard",
    created_date: datetime | None = None,
) -> Inserted:
    """A bulk change and its device changes, inserted directly (one executemany) — as if submitted."""
    now = utcnow()
    with api.rt.session_factory() as session:
        bulk = DeviceBulkChange(
            service_provider_id=service_provider_id or api.provider_id,
            status=status,
            file_name=file_name,
            created_by=created_by,
            created_date=created_date or now,
            status_details=f"{len(changes)} READY",
        )
        session.add(bulk)
        session.flush()
        rows = []
        for change in changes:
            row: dict[str, Any] = {
                "bulk_change_id": bulk.id,
                "service_provider_id": bulk.service_provider_id,
                "status": "READY",
                "change_request": "{}",
                "target_status": "active",
                "plan": "ADD,ACTIVATE",
                "step_index": 0,
                "attempt_count": 0,
                "msisdn": None,
                "status_details": None,
                "created_date": now,
            }
            row.update(change)
            rows.append(row)
        insert_rows(session, M2MDeviceChange, rows)
        session.commit()
        found = session.execute(
            select(M2MDeviceChange.id, M2MDeviceChange.iccid)
            .where(M2MDeviceChange.bulk_change_id == bulk.id)
            .order_by(M2MDeviceChange.id)
        ).all()
        return Inserted(bulk.id, [int(i) for i, _ in found], [str(c) for _, c in found])


def set_change(api: Api, change_id: int, **values: Any) -> None:
    """What the engine would write on a device change (status, details …), written directly."""
    with api.rt.session_factory.begin() as session:
        change = session.get(M2MDeviceChange, change_id)
        assert change is not None
        for name, value in values.items():
            setattr(change, name, value)
