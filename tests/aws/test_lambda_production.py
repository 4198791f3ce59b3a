"""The Lambda in production conditions, on a real SQS API (moto server on loopback) and the simulator:
records cut off for time come back at once and never reach the dead-letter queue, refused records are
counted (embedded metric format) with their messageId, the tick wakes a stalled bulk change within
minutes, and side work cannot run an invocation past its deadline."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from sqlalchemy import select, text

from bulkchange.aws import lambda_handler
from bulkchange.queue.message import BulkChangeMessage
from bulkchange.simulator.server import serve_in_thread
from bulkchange.store.tables import DeviceBulkChange, WebhookDeliveryAttempt, WebhookOutbox, utcnow
from engine.conftest import Harness, new_iccid

from .conftest import LambdaContext, Queue, invoke_like_esm, lambda_record
from .test_lambda_handler import sqs_harness

REFUSED_MESSAGES = "RefusedMessages"  # the metric name the template's alarm watches
CUTOFF_S = 60  # BULKCHANGE_LAMBDA_TIME_CUTOFF_S's default


@pytest.fixture
def h(tmp_path: Path, queue: Queue, monkeypatch: pytest.MonkeyPatch) -> Iterator[Harness]:
    yield from sqs_harness(tmp_path, queue, monkeypatch)


def nearly_out_of_time(event: Any, _context: Any) -> dict[str, Any]:
    """The handler invoked with less time left than the cutoff: it starts no record."""
    return lambda_handler.handler(event, LambdaContext(timeout_s=CUTOFF_S - 1))


def json_lines(text_: str) -> list[dict[str, Any]]:
    lines = []
    for line in text_.splitlines():
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            lines.append(value)
    return lines


# ----------------------------------------------------------------------------------- time cutoff


@pytest.mark.parametrize("queue_kwargs", [{"visibility_timeout_s": 1800, "max_receive_count": 5}])
def test_a_record_cut_off_for_time_is_processed_by_the_next_invocation_within_seconds(
    h: Harness, queue: Queue
) -> None:
    bulk = h.submit([{"ICCID": new_iccid()}], status="inventory")

    cut_off = invoke_like_esm(queue, nearly_out_of_time)
    assert cut_off is not None and cut_off.response is not None
    assert [f["itemIdentifier"] for f in cut_off.response["batchItemFailures"]] == cut_off.message_ids
    assert h.counts(bulk) == {"READY": 1}  # not started

    # Receivable again at once, not after the queue's 1,800 s visibility timeout.
    next_one = invoke_like_esm(queue, wait_s=5)

    assert next_one is not None and next_one.message_ids == cut_off.message_ids
    assert next_one.response == {"batchItemFailures": []}
    assert h.counts(bulk) == {"PROCESSED": 1}


@pytest.mark.parametrize("queue_kwargs", [{"visibility_timeout_s": 1800, "max_receive_count": 2}])
def test_a_record_only_ever_cut_off_never_reaches_the_dead_letter_queue(h: Harness, queue: Queue) -> None:
    bulk = h.submit([{"ICCID": new_iccid()}], status="inventory")

    first = invoke_like_esm(queue, nearly_out_of_time)  # receive 1 of 2: back at once
    second = invoke_like_esm(queue, nearly_out_of_time, wait_s=5)  # receive 2 of 2: a third would dead-letter

    assert first is not None and second is not None and second.message_ids == first.message_ids
    assert second.response == {"batchItemFailures": []}  # acknowledged: a fresh copy was sent instead
    third = invoke_like_esm(queue, wait_s=5)
    assert third is not None and third.message_ids != first.message_ids
    assert h.counts(bulk) == {"PROCESSED": 1}
    assert queue.dead_letters() == []
    attrs = queue.receive_raw(wait_s=0)  # nothing left but what the processing itself sent
    assert all(m["MessageAttributes"]["BulkChangeId"]["StringValue"] == str(bulk) for m in attrs)


# ----------------------------------------------------------------------------------- refused records


def test_refused_records_are_counted_with_their_message_id(
    h: Harness, queue: Queue, capsys: pytest.CaptureFixture[str]
) -> None:
    unknown_id = 987654
    h.rt.transport.send(BulkChangeMessage(bulk_change_id=unknown_id))
    queue.client.send_message(
        QueueUrl=queue.url,
        MessageBody="bulk change",
        MessageAttributes={"BulkChangeId": {"DataType": "String", "StringValue": "not-a-number"}},
    )
    messages = queue.receive_raw(wait_s=1)
    assert len(messages) == 2
    event = {"Records": [lambda_record(m, queue.arn) for m in messages] + [{"no": "message id"}]}
    context = LambdaContext()
    capsys.readouterr()

    response = lambda_handler.handler(event, context)

    assert response == {"batchItemFailures": []}  # acknowledged: redelivery would fail the same way
    out, err = capsys.readouterr()
    metrics = [m for m in json_lines(out) if "_aws" in m]
    assert sorted((m["Reason"], m[REFUSED_MESSAGES]) for m in metrics) == [
        ("malformed", 1),
        ("not_sqs_record", 1),
        ("unknown_bulk_change", 1),
    ]
    ids = {m["MessageAttributes"]["BulkChangeId"]["StringValue"]: m["MessageId"] for m in messages}
    by_reason = {m["Reason"]: m for m in metrics}
    assert by_reason["unknown_bulk_change"]["message_id"] == ids[str(unknown_id)]
    assert by_reason["malformed"]["message_id"] == ids["not-a-number"]
    (definition,) = metrics[0]["_aws"]["CloudWatchMetrics"]
    assert definition["Dimensions"] == [["Service"], ["Service", "Reason"]]
    assert definition["Metrics"] == [{"Name": REFUSED_MESSAGES, "Unit": "Count"}]
    refusals = [line for line in json_lines(err) if line.get("event") == "message refused and acknowledged"]
    assert {line["message_id"] for line in refusals} == {ids[str(unknown_id)], ids["not-a-number"], None}
    assert all(line["aws_request_id"] == context.aws_request_id for line in refusals)


def test_every_log_line_of_a_record_carries_its_message_id(
    h: Harness, queue: Queue, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("BULKCHANGE_LOG_LEVEL", "INFO")  # the engine's own lines too
    bulk = h.submit([{"ICCID": new_iccid()}], status="inventory")
    [message] = queue.receive_raw(wait_s=1)
    capsys.readouterr()

    response = lambda_handler.handler({"Records": [lambda_record(message, queue.arn)]}, LambdaContext())

    assert response == {"batchItemFailures": []} and h.counts(bulk) == {"PROCESSED": 1}
    _out, err = capsys.readouterr()
    engine_lines = [line for line in json_lines(err) if line.get("bulk_change_id") == bulk]
    assert engine_lines  # e.g. "bulk change processed"
    assert {line.get("message_id") for line in engine_lines} == {message["MessageId"]}


# ----------------------------------------------------------------------------------- the tick


def overdue(h: Harness, bulk_id: int, minutes: int) -> None:
    """The bulk change's wake-up message is gone, and it was due ``minutes`` ago."""
    with h.rt.db.begin() as conn:
        conn.execute(
            text('UPDATE "DeviceBulkChange" SET "NextWakeAt" = :at WHERE id = :id'),
            {"at": utcnow() - timedelta(minutes=minutes), "id": bulk_id},
        )


def test_the_tick_wakes_a_stalled_bulk_change_within_minutes_not_an_hour(h: Harness, queue: Queue) -> None:
    stalled = h.submit([{"ICCID": new_iccid()}], status="inventory")
    recent = h.submit([{"ICCID": new_iccid()}], status="inventory")
    for message in queue.receive_raw(wait_s=1):  # both wake-ups are lost (say, dead-lettered)
        queue.client.delete_message(QueueUrl=queue.url, ReceiptHandle=message["ReceiptHandle"])
    overdue(h, stalled, minutes=11)  # more than twice the 300 s function timeout
    overdue(h, recent, minutes=2)  # may still be in an invocation that has not started it yet

    response = lambda_handler.handler(dict(lambda_handler.TICK_EVENT), LambdaContext())

    assert response["tick"]["woken"] == 1
    [wake_up] = queue.receive_raw(wait_s=1)
    assert wake_up["MessageAttributes"]["BulkChangeId"]["StringValue"] == str(stalled)


# ----------------------------------------------------------------------------------- deadline of side work


@pytest.fixture
def hanging_hook() -> Iterator[str]:
    app = FastAPI()

    @app.post("/hook")
    async def hook() -> JSONResponse:
        await asyncio.sleep(120)
        return JSONResponse({"ok": True})

    with serve_in_thread(app) as server:
        yield f"{server.base_url}/hook"


def test_a_hanging_webhook_receiver_cannot_run_the_invocation_past_its_deadline(
    tmp_path: Path, queue: Queue, monkeypatch: pytest.MonkeyPatch, hanging_hook: str
) -> None:
    monkeypatch.setenv("BULKCHANGE_WEBHOOK_URL", hanging_hook)  # the default 30 s POST timeout
    for h in sqs_harness(tmp_path, queue, monkeypatch):
        bulk = h.submit([{"ICCID": new_iccid()}], status="inventory")
        while h.counts(bulk) != {"PROCESSED": 1}:  # processed through its messages only: no side work yet
            asyncio.run(h.run_once())
        context = LambdaContext(timeout_s=CUTOFF_S + 8)  # room for the side work to start on a busy machine

        response = lambda_handler.handler(dict(lambda_handler.TICK_EVENT), context)

        assert response["tick"]["side_work_done"] >= 1
        # Returned at its deadline (8 s in), give or take the work after it on a busy machine — not after
        # the 30 s the hanging POST alone would have taken.
        assert context.get_remaining_time_in_millis() > (CUTOFF_S - 10) * 1000
        with h.rt.session_factory() as session:
            (attempt,) = session.execute(select(WebhookDeliveryAttempt)).scalars()
            (event,) = session.execute(select(WebhookOutbox)).scalars()
        assert attempt.error and attempt.response_status is None and event.status == "PENDING"


# ----------------------------------------------------------------------------------- deadline of carrier calls


@pytest.fixture
def hanging_carrier() -> Iterator[str]:
    """A carrier that accepts connections and never answers (every path, every method)."""
    app = FastAPI()

    @app.api_route("/{path:path}", methods=["GET", "POST", "PUT"])
    async def hang(path: str) -> JSONResponse:
        await asyncio.sleep(600)
        return JSONResponse({"path": path})

    with serve_in_thread(app) as server:
        yield server.base_url


def point_provider_at(h: Harness, base_url: str) -> None:
    """Move the provider's ThingSpace URLs (API, token, session login) from the simulator to ``base_url``."""
    old = h.carrier.base_url
    with h.rt.db.begin() as conn:
        for column in ("BaseUrl", "AuthTokenUrl", "AuthUrl"):
            conn.execute(
                text(f'UPDATE "ThingSpaceAuthentication" SET "{column}" = REPLACE("{column}", :old, :new)'),
                {"old": old, "new": base_url},
            )


SLICE_S = 4


def test_a_hanging_carrier_cannot_run_the_invocation_past_its_deadline(
    tmp_path: Path, queue: Queue, monkeypatch: pytest.MonkeyPatch, hanging_carrier: str
) -> None:
    # The client's own budget for a login that never answers: 3 attempts × 30 s. The invocation has a
    # fraction of that before its cutoff: its deadline, not the client's timeouts, must end the wait.
    harness = sqs_harness(
        tmp_path, queue, monkeypatch, carrier_timeout_s=30, carrier_call_attempts=3, slice_max_seconds=SLICE_S
    )
    contexts: list[LambdaContext] = []

    def with_little_time(event: Any, _context: Any) -> dict[str, Any]:
        contexts.append(LambdaContext(timeout_s=CUTOFF_S + SLICE_S + 6))  # one slice may start, no more
        return lambda_handler.handler(event, contexts[0])

    for h in harness:
        point_provider_at(h, hanging_carrier)
        bulks = [h.submit([{"ICCID": new_iccid()}], status="inventory") for _ in range(3)]
        invocation = invoke_like_esm(queue, with_little_time, wait_s=2)

        assert invocation is not None and invocation.error is None and invocation.response is not None
        # Returned near its deadline (10 s in), give or take the work after it on a busy machine: long
        # before the function's timeout, so Lambda never kills it and the batch is not redelivered whole.
        assert contexts[0].get_remaining_time_in_millis() > (CUTOFF_S - 20) * 1000
        # The record that met the hang ended as a transient failure of the login (its bulk change gets a delayed
        # retry wake-up, so its message is done); the records never started are reported, so they come back.
        failed = [item["itemIdentifier"] for item in invocation.response["batchItemFailures"]]
        assert len(invocation.message_ids) == 3
        assert failed == invocation.message_ids[1:] and invocation.deleted == invocation.message_ids[:1]
        with h.rt.session_factory() as session:
            statuses = session.execute(select(DeviceBulkChange.status).where(DeviceBulkChange.id.in_(bulks)))
            assert "ERROR" not in set(statuses.scalars())
        for bulk in bulks:
            assert h.counts(bulk) == {"READY": 1}
