"""ThingSpace callbacks through the API Gateway (HTTP API v2) handler.

The simulator POSTs its CarrierService callbacks over real HTTP to a small stand-in for API Gateway,
which turns each request into the payload-format-2.0 event and invokes
``bulkchange.aws.callback_handler.handler`` — as the HTTP API route in deploy/template.yaml does.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select, text, update
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bulkchange.api.callbacks import callback_app
from bulkchange.aws import callback_handler, lambda_handler
from bulkchange.engine.submit import create_bulk_change
from bulkchange.providers import add_provider
from bulkchange.simulator import SimulatorConfig
from bulkchange.simulator.server import serve_in_thread
from bulkchange.store.tables import M2MDeviceChange, ThingSpaceCallBackResponseLog
from engine.conftest import (
    Harness,
    _register,
    activation_row,
    make_harness,
    new_iccid,
    new_imei,
    provider_callback_credentials,
    success_callback,
)

from .conftest import EVENTS, LambdaContext, Queue, drain, invoke_like_esm, lambda_environment

ROUTE = "/callbacks/thingspace/{service_provider_id}"


def http_api_event(provider: str, body: str, *, source_ip: str = "3.87.163.45", method: str = "POST") -> dict[str, Any]:
    """The HTTP API's payload-format-2.0 event, from AWS's documented example (events/), for one request."""
    event: dict[str, Any] = json.loads((EVENTS / "http_api_callback_event.json").read_text())
    path = f"/callbacks/thingspace/{provider}"
    event["rawPath"] = event["requestContext"]["http"]["path"] = path
    event["requestContext"]["http"]["method"] = method
    event["requestContext"]["http"]["sourceIp"] = source_ip
    event["headers"]["content-length"] = str(len(body.encode()))
    event["pathParameters"] = {"service_provider_id": provider}
    event["body"] = body
    return event


async def _api_gateway(request: Request) -> Response:
    body = (await request.body()).decode()
    client = request.client.host if request.client else "127.0.0.1"
    event = http_api_event(request.path_params["service_provider_id"], body, source_ip=client, method=request.method)
    result = await run_in_threadpool(callback_handler.handler, event, None)
    return Response(result["body"], status_code=result["statusCode"], headers=result["headers"])


@pytest.fixture
def h(tmp_path: Path, queue: Queue, monkeypatch: pytest.MonkeyPatch) -> Iterator[Harness]:
    # The deferred check is pushed far out: only callbacks can finish these activations in time.
    for harness in make_harness(tmp_path, queue_url=queue.url, sqs_wait_time_s=1, activation_check_delay_s=600):
        for name, value in lambda_environment(harness.rt.settings).items():
            monkeypatch.setenv(name, value)
        yield harness


def test_callbacks_through_the_http_api_handler_finish_activations(h: Harness, queue: Queue) -> None:
    app = Starlette(routes=[Route(ROUTE, _api_gateway, methods=["POST", "GET"])])
    with serve_in_thread(app) as gateway:
        _register(h, f"{gateway.base_url}/callbacks/thingspace/{h.provider_id}")
        iccids = [new_iccid() for _ in range(3)]
        bulk = h.submit([activation_row(i, new_imei()) for i in iccids])

        drain(queue, lambda: h.counts(bulk) == {"PROCESSED": 3}, deadline_s=30)

    for iccid in iccids:
        assert h.actions(iccid) == {"add": 1, "activate": 1}
    assert h.count_rows(ThingSpaceCallBackResponseLog) >= 3


def test_bad_requests_are_refused_without_changing_anything(h: Harness) -> None:
    provider = str(h.provider_id)
    user, password = h.callback_credentials
    started = time.monotonic()
    not_json = callback_handler.handler(http_api_event(provider, "{nope"), None)
    not_callback = callback_handler.handler(
        http_api_event(provider, json.dumps({"username": user, "password": password, "requestId": 5})), None
    )
    bad_path = callback_handler.handler(http_api_event("x", "{}"), None)
    wrong_method = callback_handler.handler(http_api_event(provider, "", method="GET"), None)
    assert [r["statusCode"] for r in (not_json, not_callback, bad_path, wrong_method)] == [400, 400, 404, 405]
    assert h.count_rows(ThingSpaceCallBackResponseLog) == 0
    assert time.monotonic() - started < 10


@pytest.fixture
def slow_h(tmp_path: Path, queue: Queue, monkeypatch: pytest.MonkeyPatch) -> Iterator[Harness]:
    """Activations complete 0.5 s after the request, well after our commit of the requestId."""
    sim_config = SimulatorConfig(activation_delay_s=0.5, callback_retry_interval_s=0.2)
    for harness in make_harness(
        tmp_path, queue_url=queue.url, sqs_wait_time_s=1, activation_check_delay_s=600, sim_config=sim_config
    ):
        for name, value in lambda_environment(harness.rt.settings).items():
            monkeypatch.setenv(name, value)
        yield harness


def test_a_callback_is_stored_and_answered_200_even_when_applying_it_fails(slow_h: Harness, queue: Queue) -> None:
    """Store first (ingest_callback), then apply what is stored: when applying fails, ThingSpace still gets
    its 200 at once and the stored callback is applied later (here by the queue function's scheduled tick)."""
    h = slow_h
    statuses: list[int] = []

    async def gateway(request: Request) -> Response:
        try:
            response = await _api_gateway(request)
        except Exception:  # the handler raised: API Gateway answers 500 and ThingSpace re-sends
            statuses.append(500)
            raise
        statuses.append(response.status_code)
        return response

    with h.rt.db.begin() as conn:  # applying (an UPDATE of the stored row) fails; storing (INSERT) works
        conn.execute(
            text(
                'CREATE TRIGGER refuse_apply BEFORE UPDATE ON "ThingSpaceCallBackResponseLog" '
                "BEGIN SELECT RAISE(ABORT, 'applying refused'); END"
            )
        )
    app = Starlette(routes=[Route(ROUTE, gateway, methods=["POST"])])
    with serve_in_thread(app) as served:
        _register(h, f"{served.base_url}/callbacks/thingspace/{h.provider_id}")
        iccid = new_iccid()
        bulk = h.submit([activation_row(iccid, new_imei())])
        deadline = time.monotonic() + 30
        while not (h.counts(bulk) == {"AWAITING_RESULT": 1} and statuses):
            assert time.monotonic() < deadline, (h.counts(bulk), statuses)
            invoke_like_esm(queue, wait_s=0)
            time.sleep(0.05)
        time.sleep(0.5)  # room for a re-send, had ThingSpace not been answered 200

    assert statuses == [200]  # answered at once, so ThingSpace did not re-send
    assert h.count_rows(ThingSpaceCallBackResponseLog) == 1
    assert h.counts(bulk) == {"AWAITING_RESULT": 1}

    with h.rt.db.begin() as conn:
        conn.execute(text("DROP TRIGGER refuse_apply"))
    response = lambda_handler.handler({"bulkchange": "tick"}, LambdaContext())

    assert response["tick"]["callbacks_applied"] == 1
    assert h.counts(bulk) == {"PROCESSED": 1}
    assert h.actions(iccid) == {"add": 1, "activate": 1}


# ------------------------------------------------------------------ one gate: the same checks, the same answers


@pytest.fixture
def quiet(tmp_path: Path) -> Iterator[Harness]:
    """No listener registered, the deferred check far away, unmatched callbacks marked at once."""
    yield from make_harness(tmp_path, callbacks=False, activation_check_delay_s=600, callback_match_grace_s=0)


def _second_provider(h: Harness) -> tuple[int, tuple[str, str]]:
    with h.rt.session_factory() as session:
        other = add_provider(
            session,
            name="other",
            base_url=h.carrier.base_url,
            client_id="sim-client",
            client_secret="sim-secret",
            username="sim-user",
            password="sim-pass",
            account="0000123456-00001",
        )
    return other, provider_callback_credentials(h.rt, other)


def _lambda(h: Harness, provider: int | str, body: str | dict[str, Any], **kwargs: Any) -> tuple[int, Any]:
    text_body = body if isinstance(body, str) else json.dumps(body)
    result = callback_handler.process_callback_event(h.rt, http_api_event(str(provider), text_body, **kwargs))
    return result["statusCode"], json.loads(result["body"])


async def _awaiting(h: Harness, provider_id: int | None = None) -> M2MDeviceChange:
    iccid = new_iccid()
    with h.rt.session_factory() as session:
        bulk = create_bulk_change(
            session,
            h.rt.transport,
            [activation_row(iccid, new_imei())],
            status="active",
            service_provider_id=provider_id or h.provider_id,
        )
    # Add, then Activate accepted with a requestId; no listener, and the check is 10 minutes away.
    [change] = await _work_until(h, bulk, "AWAITING_RESULT")
    assert change.carrier_request_id
    return change


async def _work_until(h: Harness, bulk: int, status: str, timeout_s: float = 30.0) -> list[M2MDeviceChange]:
    """Process the visible messages until the bulk change's one change has ``status`` (a deadline, no sleep)."""
    deadline = time.monotonic() + timeout_s
    while (changes := h.changes(bulk))[0].status != status:
        assert time.monotonic() < deadline, changes[0].status
        if not await h.run_once():
            await asyncio.sleep(0.05)
    return changes


def test_the_lambda_answers_exactly_as_the_server(quiet: Harness) -> None:
    h = quiet
    _other, other_credentials = _second_provider(h)
    user, password = h.callback_credentials
    good = success_callback("req-1", new_iccid(), credentials=(user, password))
    cases: list[tuple[str, int, str | dict[str, Any], int]] = [
        ("no credentials", h.provider_id, success_callback("req-1", new_iccid()), 401),
        ("wrong password", h.provider_id, {**good, "password": password + "x"}, 401),
        (
            "another provider's credentials",
            h.provider_id,
            success_callback("r", new_iccid(), credentials=other_credentials),
            401,
        ),
        ("unknown provider", 999_999, good, 401),
        ("30,000 levels deep", h.provider_id, "[" * 30_000 + "]" * 30_000, 400),
        ("too large", h.provider_id, '{"requestId": "' + "x" * 70 * 1024 + '"}', 413),
        ("not JSON", h.provider_id, "{nope", 400),
        ("not an object", h.provider_id, "[1, 2]", 400),
        ("no requestId", h.provider_id, {**good, "requestId": ""}, 400),
    ]
    with serve_in_thread(callback_app(h.rt.engine)) as server:
        for what, provider, body, status in cases:
            content = body if isinstance(body, str) else json.dumps(body)
            served = httpx.post(
                f"{server.base_url}/callbacks/thingspace/{provider}",
                content=content,
                headers={"content-type": "application/json"},
                timeout=10,
            )
            assert (served.status_code, served.json()) == _lambda(h, provider, content), what
            assert served.status_code == status, (what, served.text)
    assert h.count_rows(ThingSpaceCallBackResponseLog) == 0


def test_the_lambda_checks_the_source_address(tmp_path: Path) -> None:
    for h in make_harness(tmp_path, callbacks=False, callback_allowed_sources="3.87.163.45"):
        body = success_callback("req-src", new_iccid(), credentials=h.callback_credentials)
        status, answer = _lambda(h, h.provider_id, body, source_ip="198.51.100.7")
        assert (status, answer["detail"]) == (403, "source address not allowed")
        assert h.count_rows(ThingSpaceCallBackResponseLog) == 0
        assert _lambda(h, h.provider_id, body, source_ip="3.87.163.45") == (200, {"result": "stored"})


async def test_the_lambda_settles_only_its_own_providers_changes(quiet: Harness) -> None:
    h = quiet
    other, other_credentials = _second_provider(h)
    change = await _awaiting(h, provider_id=other)  # provider B's change
    request_id = change.carrier_request_id or ""
    body = success_callback(request_id, change.iccid, credentials=h.callback_credentials)
    assert _lambda(h, h.provider_id, body) == (200, {"result": "stored"})  # A's URL, A's credentials
    with h.rt.session_factory() as session:
        stored = session.execute(select(ThingSpaceCallBackResponseLog)).scalar_one()
    assert stored.outcome is not None and stored.outcome.startswith("unmatched")
    assert h.changes(change.bulk_change_id)[0].status == "AWAITING_RESULT"
    # B's own credentials on A's URL are refused outright.
    assert _lambda(h, h.provider_id, success_callback("r-2", change.iccid, credentials=other_credentials))[0] == 401


async def test_the_lambda_never_takes_a_made_up_request_id_as_a_verdict(quiet: Harness) -> None:
    h = quiet
    change = await _awaiting(h)
    deadline = time.monotonic() + 30
    while (device := h.sim.device(change.iccid)) is None or device.state != "active":  # the carrier finished it
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    with h.rt.session_factory.begin() as session:  # what a reconcile that never learnt the requestId leaves
        session.execute(update(M2MDeviceChange).where(M2MDeviceChange.id == change.id).values(carrier_request_id=None))
    made_up = success_callback("made-up-7", change.iccid, credentials=h.callback_credentials)
    made_up["deviceResponse"]["activateResponse"]["deviceIds"].append({"id": "15550001111", "kind": "msisdn"})
    assert _lambda(h, h.provider_id, made_up) == (200, {"result": "stored"})  # not a verdict
    assert h.changes(change.bulk_change_id)[0].status == "SENDING"  # its device is to be read
    # The wake-up the callback caused: the reconcile reads the device, and the read decides.
    [settled] = await _work_until(h, change.bulk_change_id, "PROCESSED")
    carrier = h.sim.device(change.iccid)
    assert carrier is not None and carrier.state == "active"
    assert settled.status == "PROCESSED"
    device = h.device(change.iccid)
    assert device is not None and device.msisdn == carrier.msisdn != "15550001111"
