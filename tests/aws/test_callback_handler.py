"""ThingSpace callbacks through the API Gateway (HTTP API v2) handler.

The simulator POSTs its CarrierService callbacks over real HTTP to a small stand-in for API Gateway,
which turns each request into the payload-format-2.0 event and invokes
``bulkchange.aws.callback_handler.handler`` — as the HTTP API route in deploy/template.yaml does.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bulkchange.aws import callback_handler, lambda_handler
from bulkchange.simulator import SimulatorConfig
from bulkchange.simulator.server import serve_in_thread
from bulkchange.store.tables import ThingSpaceCallBackResponseLog
from engine.conftest import Harness, _register, activation_row, make_harness, new_iccid, new_imei

from .conftest import LambdaContext, Queue, drain, invoke_like_esm, lambda_environment

ROUTE = "/callbacks/thingspace/{service_provider_id}"


async def _api_gateway(request: Request) -> Response:
    body = (await request.body()).decode()
    event = {
        "version": "2.0",
        "routeKey": f"POST {ROUTE}",
        "rawPath": request.url.path,
        "rawQueryString": request.url.query,
        "headers": dict(request.headers),
        "requestContext": {
            "http": {"method": request.method, "path": request.url.path, "protocol": "HTTP/1.1"},
            "routeKey": f"POST {ROUTE}",
            "stage": "$default",
        },
        "pathParameters": dict(request.path_params),
        "body": body,
        "isBase64Encoded": False,
    }
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
    base = {"requestContext": {"http": {"method": "POST"}}, "pathParameters": {"service_provider_id": "1"}}
    started = time.monotonic()
    not_json = callback_handler.handler({**base, "body": "{nope"}, None)
    not_callback = callback_handler.handler({**base, "body": json.dumps({"requestId": 5})}, None)
    bad_path = callback_handler.handler({**base, "pathParameters": {"service_provider_id": "x"}, "body": "{}"}, None)
    wrong_method = callback_handler.handler({**base, "requestContext": {"http": {"method": "GET"}}}, None)
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

    with h.rt.engine.begin() as conn:  # applying (an UPDATE of the stored row) fails; storing (INSERT) works
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

    with h.rt.engine.begin() as conn:
        conn.execute(text("DROP TRIGGER refuse_apply"))
    response = lambda_handler.handler({"bulkchange": "tick"}, LambdaContext())

    assert response["tick"]["callbacks_applied"] == 1
    assert h.counts(bulk) == {"PROCESSED": 1}
    assert h.actions(iccid) == {"add": 1, "activate": 1}
