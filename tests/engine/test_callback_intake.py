"""The receiver's group commit: a burst of callbacks over real HTTP, each stored once and acknowledged only
once committed; a batch the database refuses is answered with an error, so the carrier sends it again; a
callback POST is answered ahead of the application's middleware."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from fastapi import Request, Response
from sqlalchemy import func, select, text

from bulkchange.api.callbacks import callback_app
from bulkchange.simulator.server import serve_in_thread
from bulkchange.store.tables import ThingSpaceCallBackResponseLog

from .conftest import Harness, new_iccid, success_callback


def _stored(h: Harness, request_id: str, iccid: str) -> int:
    with h.rt.session_factory() as s:
        return int(
            s.execute(
                select(func.count()).where(
                    ThingSpaceCallBackResponseLog.request_id == request_id, ThingSpaceCallBackResponseLog.iccid == iccid
                )
            ).scalar_one()
        )


async def test_a_burst_is_stored_once_each_and_each_answer_follows_its_commit(polling_harness: Harness) -> None:
    h = polling_harness
    # 150 devices of four requests, and a replay of every tenth one sent at the same time as the original
    # (ThingSpace re-sends what it believes unacknowledged): replays may share a batch with their original.
    creds = h.callback_credentials
    originals = [success_callback(f"req-{n % 4}", new_iccid(), credentials=creds) for n in range(150)]
    replays = [{**body, "callbackCount": 2} for body in originals[::10]]
    bodies = originals + replays
    with serve_in_thread(callback_app(h.rt.engine)) as receiver:
        url = f"{receiver.base_url}/callbacks/thingspace/{h.provider_id}"
        limits = httpx.Limits(max_connections=16)
        async with httpx.AsyncClient(limits=limits, timeout=30) as client:
            seen_committed: list[bool] = []

            async def post(body: dict[str, Any]) -> str:
                r = await client.post(url, json=body)
                assert r.status_code == 200, r.text
                # The answer comes only once the callback is in the database (any receiver would see it).
                seen_committed.append(_stored(h, body["requestId"], body["deviceIds"][0]["id"]) == 1)
                return str(r.json()["result"])

            results = await asyncio.gather(*(post(b) for b in bodies))
    assert all(seen_committed)
    assert results.count("stored") == 150 and results.count("duplicate") == 15
    assert h.count_rows(ThingSpaceCallBackResponseLog) == 150


def test_a_batch_the_database_refuses_is_an_error_and_the_resend_is_stored(polling_harness: Harness) -> None:
    h = polling_harness
    body = success_callback("req-x", new_iccid(), credentials=h.callback_credentials)
    table = ThingSpaceCallBackResponseLog.__tablename__
    with serve_in_thread(callback_app(h.rt.engine)) as receiver:
        url = f"{receiver.base_url}/callbacks/thingspace/{h.provider_id}"
        with h.rt.db.begin() as conn:  # the table is gone: every store fails
            conn.execute(text(f'ALTER TABLE "{table}" RENAME TO "{table}_away"'))
        try:
            refused = httpx.post(url, json=body, timeout=30)
        finally:
            with h.rt.db.begin() as conn:
                conn.execute(text(f'ALTER TABLE "{table}_away" RENAME TO "{table}"'))
        assert refused.status_code == 503, "never a 2xx for a callback that was not stored: send it again"
        assert refused.headers["content-type"] == "application/problem+json"
        resent = httpx.post(url, json={**body, "callbackCount": 2}, timeout=30)
    assert resent.status_code == 200 and resent.json() == {"result": "stored"}
    assert _stored(h, "req-x", body["deviceIds"][0]["id"]) == 1


def test_a_callback_post_is_answered_ahead_of_the_applications_middleware(polling_harness: Harness) -> None:
    """Plain-digit provider ids are answered by the lean endpoint (no middleware runs); other forms FastAPI
    reads as a number still reach the application's own route. Both store, both answer alike."""
    h = polling_harness
    app = callback_app(h.rt.engine)
    seen: list[str] = []

    @app.middleware("http")
    async def record(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        seen.append(request.url.path)
        return await call_next(request)

    body = success_callback("req-lean", new_iccid(), credentials=h.callback_credentials)
    other = {**body, "requestId": "req-routed"}
    with serve_in_thread(app) as receiver:
        lean = httpx.post(f"{receiver.base_url}/callbacks/thingspace/{h.provider_id}", json=body, timeout=30)
        routed = httpx.post(f"{receiver.base_url}/callbacks/thingspace/+{h.provider_id}", json=other, timeout=30)
    assert seen == [f"/callbacks/thingspace/+{h.provider_id}"]
    for answer in (lean, routed):
        assert answer.status_code == 200 and answer.json() == {"result": "stored"}
        assert answer.headers["content-type"] == "application/json"
    assert lean.headers["x-content-type-options"] == "nosniff"
    assert _stored(h, "req-lean", body["deviceIds"][0]["id"]) == 1
    assert _stored(h, "req-routed", body["deviceIds"][0]["id"]) == 1
