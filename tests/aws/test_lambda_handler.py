"""The SQS-triggered Lambda handler against a real SQS API (moto server on loopback) and the simulator."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from bulkchange.aws import lambda_handler
from bulkchange.domain.statuses import DeviceStatusId
from bulkchange.queue.message import BulkChangeMessage
from bulkchange.queue.sqs import SqsQueue
from bulkchange.simulator import SimulatorConfig
from engine.conftest import Harness, activation_row, make_harness, new_iccid, new_imei

from .conftest import (
    EVENTS,
    Invocation,
    LambdaContext,
    Queue,
    drain,
    invoke_like_esm,
    lambda_environment,
    lambda_record,
)


def sqs_harness(tmp_path: Path, queue: Queue, monkeypatch: pytest.MonkeyPatch, **kwargs: Any) -> Iterator[Harness]:
    """The engine harness with its transport on ``queue``; the Lambda's environment points at the same
    database and queue, so the handler builds its own runtime from the environment as on AWS."""
    kwargs.setdefault("sqs_wait_time_s", 1)
    for h in make_harness(tmp_path, queue_url=queue.url, **kwargs):
        for name, value in lambda_environment(h.rt.settings).items():
            monkeypatch.setenv(name, value)
        yield h


@pytest.fixture
def harness_kwargs() -> dict[str, Any]:
    """Overridden per test with ``@pytest.mark.parametrize("harness_kwargs", [...])``."""
    return {}


@pytest.fixture
def h(
    tmp_path: Path, queue: Queue, monkeypatch: pytest.MonkeyPatch, harness_kwargs: dict[str, Any]
) -> Iterator[Harness]:
    yield from sqs_harness(tmp_path, queue, monkeypatch, **harness_kwargs)


def poison(h: Harness, bulk_id: int) -> None:
    """Make every processing of ``bulk_id`` fail inside the database (a real error, nothing patched)."""
    with h.rt.db.begin() as conn:
        conn.execute(
            text(
                f'CREATE TRIGGER poison_{bulk_id} BEFORE UPDATE ON "DeviceBulkChange" '
                f"WHEN OLD.id = {bulk_id} BEGIN SELECT RAISE(ABORT, 'poisoned bulk change {bulk_id}'); END"
            )
        )


def done(h: Harness, bulk_id: int, n: int) -> Callable[[], bool]:
    return lambda: h.counts(bulk_id) == {"PROCESSED": n}


def test_the_documented_event_shape_is_processed_record_by_record(h: Harness, queue: Queue) -> None:
    """tests/aws/events/sqs_event.json is AWS's documented SQS event with the seed's attributes: three
    records (a wake-up with all five attributes, a duplicate, a malformed one) — every one is handled."""
    iccids = [new_iccid() for _ in range(3)]
    bulk = h.submit([activation_row(i, new_imei()) for i in iccids])
    assert (bulk, h.provider_id) == (1, 1)  # the ids the fixture names
    event = json.loads((EVENTS / "sqs_event.json").read_text())

    response = lambda_handler.handler(event, LambdaContext())

    # The malformed record is refused and acknowledged, not reported: redelivery would fail the same way.
    assert response == {"batchItemFailures": []}
    assert all(h.actions(i).get("add") == 1 for i in iccids)  # the first record already did the work
    drain(queue, done(h, bulk, 3))  # follow-ups (continuation, callbacks) through the real queue
    for iccid in iccids:
        assert h.actions(iccid) == {"add": 1, "activate": 1}


@pytest.mark.parametrize("harness_kwargs", [{"batch_max_devices": 3, "slice_max_changes": 3}])
def test_send_handler_database_over_several_slices(h: Harness, queue: Queue) -> None:
    iccids = [new_iccid() for _ in range(8)]
    bulk = h.submit([activation_row(i, new_imei()) for i in iccids])

    invocations = drain(queue, done(h, bulk, 8))

    assert len(invocations) >= 3  # one slice of 3 per message: continuation messages went through SQS
    assert all(inv.response == {"batchItemFailures": []} for inv in invocations)
    for iccid in iccids:
        assert h.actions(iccid) == {"add": 1, "activate": 1}
        carrier = h.sim.device(iccid)
        device = h.device(iccid)
        assert device is not None and carrier is not None
        assert (device.device_status_id, device.msisdn) == (DeviceStatusId.ACTIVE, carrier.msisdn)
    assert SqsQueue(queue.url).stats().dead_lettered == 0


def test_a_partial_batch_failure_reports_only_the_failing_record(h: Harness, queue: Queue) -> None:
    good = [new_iccid() for _ in range(2)]
    bad = new_iccid()
    bulk_ok = h.submit([{"ICCID": i} for i in good], status="inventory")
    bulk_bad = h.submit([{"ICCID": bad}], status="inventory")
    poison(h, bulk_bad)
    h.rt.transport.send(BulkChangeMessage(bulk_change_id=bulk_ok))  # a duplicate: three records

    invocation = invoke_like_esm(queue)

    assert invocation is not None and invocation.error is None and len(invocation.message_ids) == 3
    assert invocation.response is not None
    failed = [item["itemIdentifier"] for item in invocation.response["batchItemFailures"]]
    bad_ids = [
        r["messageId"]
        for r in invocation.event["Records"]
        if r["messageAttributes"]["BulkChangeId"]["stringValue"] == str(bulk_bad)
    ]
    assert failed == bad_ids and len(bad_ids) == 1
    assert sorted(invocation.deleted) == sorted(set(invocation.message_ids) - set(bad_ids))
    assert h.counts(bulk_ok) == {"PROCESSED": 2}
    assert h.counts(bulk_bad) == {"READY": 1} and h.actions(bad) == {}


@pytest.mark.parametrize("queue_kwargs", [{"visibility_timeout_s": 1, "max_receive_count": 2}])
def test_a_poison_message_ends_in_the_dead_letter_queue(h: Harness, queue: Queue) -> None:
    bulk_bad = h.submit([{"ICCID": new_iccid()}], status="inventory")
    poison(h, bulk_bad)
    bulk_ok = h.submit([{"ICCID": new_iccid()}], status="inventory")
    dead: list[dict[str, Any]] = []

    def dead_lettered() -> bool:
        dead[:] = queue.dead_letters()
        return bool(dead) and h.counts(bulk_ok) == {"PROCESSED": 1}

    invocations = drain(queue, dead_lettered)

    [letter] = dead
    assert letter["MessageAttributes"]["BulkChangeId"]["StringValue"] == str(bulk_bad)
    tried = [inv for inv in invocations if mentions(inv, bulk_bad)]
    assert len(tried) == 2  # maxReceiveCount deliveries, then the redrive policy moved it
    assert all(inv.error is not None or inv.response["batchItemFailures"] for inv in tried)  # type: ignore[index]
    assert h.counts(bulk_ok) == {"PROCESSED": 1}
    assert h.counts(bulk_bad) == {"READY": 1}  # the row is intact: `bulkchange resume` after the fix
    assert h.rt.transport.stats().dead_lettered == 1


def mentions(invocation: Invocation, bulk_id: int) -> bool:
    return any(
        r["messageAttributes"]["BulkChangeId"]["stringValue"] == str(bulk_id) for r in invocation.event["Records"]
    )


@pytest.mark.parametrize(
    "harness_kwargs",
    [{"callbacks": False, "activation_check_delay_s": 2, "sim_config": SimulatorConfig(activation_delay_s=0.1)}],
)
def test_the_activation_check_message_is_really_delayed(h: Harness, queue: Queue) -> None:
    """No callback listener: activations are verified by the deferred check, sent with DelaySeconds."""
    iccid = new_iccid()
    bulk = h.submit([activation_row(iccid, new_imei())])
    started = time.monotonic()
    while h.counts(bulk) != {"AWAITING_RESULT": 1}:
        assert time.monotonic() - started < 30
        invoke_like_esm(queue)
    sent_by = time.monotonic()

    stats = SqsQueue(queue.url).stats()
    assert (stats.visible, stats.delayed) == (0, 1)
    assert queue.receive_raw(wait_s=0) == []  # not receivable before its delay

    deadline = time.monotonic() + 15
    messages: list[dict[str, Any]] = []
    while not messages:
        assert time.monotonic() < deadline, "the delayed check never became receivable"
        messages = queue.receive_raw(wait_s=1)
    received_at = time.monotonic()
    [check] = messages
    attrs = {k: v["StringValue"] for k, v in check["MessageAttributes"].items()}
    assert attrs["IsRetryNewActivateThingSpaceDevice"] == "True" and attrs["RetryNumber"] == "1"
    assert attrs["BulkChangeId"] == str(bulk)
    # Sent no later than `sent_by`, so its delay is at least this long; and SQS's own timestamps agree.
    assert received_at - started >= 2.0
    assert int(check["Attributes"]["ApproximateFirstReceiveTimestamp"]) - int(check["Attributes"]["SentTimestamp"]) >= (
        1900
    )
    assert received_at - sent_by < 10

    queue.client.change_message_visibility(
        QueueUrl=queue.url, ReceiptHandle=check["ReceiptHandle"], VisibilityTimeout=0
    )
    drain(queue, done(h, bulk, 1))
    assert h.actions(iccid) == {"add": 1, "activate": 1}


def test_no_new_record_is_started_when_time_runs_low(h: Harness, queue: Queue) -> None:
    bulk = h.submit([{"ICCID": new_iccid()}], status="inventory")
    h.rt.transport.send(BulkChangeMessage(bulk_change_id=bulk))
    messages = queue.receive_raw()
    assert len(messages) == 2
    event = {"Records": [lambda_record(m, queue.arn) for m in messages]}

    response = lambda_handler.handler(event, LambdaContext(timeout_s=59))  # under the 60 s cutoff

    assert response == {"batchItemFailures": [{"itemIdentifier": m["MessageId"]} for m in messages]}
    assert h.counts(bulk) == {"READY": 1}  # nothing was started


def test_the_runtime_is_built_once_per_container(h: Harness, queue: Queue) -> None:
    h.submit([{"ICCID": new_iccid()}], status="inventory")
    invoke_like_esm(queue)
    first = lambda_handler.get_runtime()
    invoke_like_esm(queue, wait_s=0)
    assert lambda_handler.get_runtime() is first
    assert isinstance(first.transport, SqsQueue) and first.transport.queue_url == queue.url
