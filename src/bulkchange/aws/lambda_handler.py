"""The SQS-triggered Lambda: ``bulkchange.aws.lambda_handler.handler(event, context)``.

Takes the standard SQS event (``Records[]`` with ``messageId``, ``receiptHandle``, ``body``,
``attributes.ApproximateReceiveCount``, ``messageAttributes`` ``{stringValue, dataType}`` and
``eventSourceARN``) and processes **every** record, one after another. It answers a partial batch
response, so the event source mapping must have ``FunctionResponseTypes: [ReportBatchItemFailures]``::

    {"batchItemFailures": [{"itemIdentifier": "<messageId>"}, ...]}

* **A hard deadline.** Each invocation makes one ``Deadline`` (``domain.deadline``): the function's
  remaining time (``context.get_remaining_time_in_millis()``) less ``BULKCHANGE_LAMBDA_TIME_CUTOFF_S``
  (60 s). A record is started only while a whole engine slice (``BULKCHANGE_SLICE_MAX_SECONDS``) still
  fits before it; the side work after the records (billing, webhooks) is bounded by it call by call.
* **Records not started** go back to the queue at once, never after the visibility timeout, and never
  into the dead-letter queue (``aws.unstarted``: visibility 0, or a fresh copy on their last receive).
* A record whose processing raises is reported; Lambda leaves it on the queue (redelivered after the
  visibility timeout, dead-lettered after ``maxReceiveCount``). The others are deleted by Lambda.
* **Refused records are counted.** A record with unreadable attributes (``malformed``; ``Engine.handle``
  logs it and re-wakes its bulk change when the id is readable), one whose ``BulkChangeId`` names no bulk
  change (``unknown_bulk_change``) and anything that is not an SQS record (``not_sqs_record``) are
  acknowledged — redelivering them would fail the same way, so they would only reach the dead-letter
  queue after ``maxReceiveCount`` wasted invocations — and each is published as one ``RefusedMessages``
  count in embedded metric format (``aws.metrics``), which an alarm in deploy/template.yaml watches.
* Every log line of a record carries its ``message_id``, and every line of an invocation the
  ``aws_request_id`` (structlog context variables).
* When every record that was tried raised (say the database is down), the handler raises instead of
  answering, so Lambda counts an error and backs off its concurrency (with partial responses it would
  not); SQS redelivers the whole batch either way.
* After its records, within the deadline and ``slice_max_seconds``, an invocation drives what the worker
  loop (``engine/worker.py``) drives besides messages, so a deployment with only this function completes
  everything: stored callbacks not yet applied (``Engine.apply_pending_callbacks``) and the side work
  (billing / customer rate plan additional steps, then webhook deliveries), pass after pass while
  something is due now. A side-work failure is logged, never reported against the records (they are done).
* A *tick* — an event without ``Records`` that is ``{"bulkchange": "tick"}`` (the EventBridge schedule
  in deploy/template.yaml sends it) or EventBridge's own ``Scheduled Event`` — runs the same side work
  and wakes every bulk change whose wake-up is missing or overdue by more than
  ``Settings.stalled_after_s`` (twice the function timeout by default: a message lost, dead-lettered or
  in an invocation that died), so nothing waits for the hour the worker loop's own recovery allows. It
  answers ``{"tick": {...counts...}}``.

The runtime (database engine, SQS transport, processor) is built once per container, from the
environment (``BULKCHANGE_DATABASE_URL``, possibly an ``ssm:``/``secretsmanager:`` reference,
``DEVICE_BULK_CHANGE_QUEUE_URL`` for follow-up messages, …) and reused by warm invocations.

aws-lambda-powertools is not used (deploy/README.md says why): its batch processor would replace the
few lines that collect ``batchItemFailures``, but not the time check, the give-back of unstarted
records, the refusal counting or the entire-batch rule, which are most of this module.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog

from bulkchange.aws.metrics import count_refused
from bulkchange.aws.unstarted import QueueDirectory, Unstarted, give_back, source_arn
from bulkchange.domain.deadline import Deadline
from bulkchange.engine.bulk_status import refresh_forgotten
from bulkchange.engine.wakeups import recover_lost_wakeups
from bulkchange.heap import settle_startup_objects
from bulkchange.logging_setup import configure_logging
from bulkchange.queue.base import ReceivedMessage
from bulkchange.queue.message import MalformedMessage
from bulkchange.queue.sqs import string_attributes
from bulkchange.runtime import Runtime, build_runtime
from bulkchange.settings import Settings
from bulkchange.store.bulk_lookups import bulk_change_exists
from bulkchange.store.db import read_only_session

log = structlog.get_logger("bulkchange.aws.lambda")


class LambdaContext(Protocol):
    def get_remaining_time_in_millis(self) -> int: ...


class EntireBatchFailed(RuntimeError):
    """Every record tried raised; raised so that Lambda backs off (the batch is redelivered)."""


_runtime: Runtime | None = None
_runtime_lock = threading.Lock()
_queues = QueueDirectory()


def get_runtime() -> Runtime:
    """The container's runtime, built on first use from the environment."""
    global _runtime
    with _runtime_lock:
        if _runtime is None:
            settings = Settings()
            configure_logging(settings.log_level)
            # Migrations are a deployment step (``bulkchange db upgrade``), not something every cold
            # start of every concurrent instance should race to do.
            _runtime = build_runtime(settings, migrate=False)
            settle_startup_objects()  # once per container: its cold start's objects live as long as it does
        return _runtime


def reset_runtime() -> None:
    """Forget the cached runtime (tests; a container whose configuration changed)."""
    global _runtime, _queues
    with _runtime_lock:
        if _runtime is not None:
            _runtime.close()
        _runtime = None
        _queues = QueueDirectory()


TICK_EVENT: dict[str, str] = {"bulkchange": "tick"}
"""The event the schedule in deploy/template.yaml invokes the function with."""


def handler(event: Mapping[str, Any], context: LambdaContext | None) -> dict[str, Any]:
    """The Lambda entry point (see the module docstring)."""
    return process_event(get_runtime(), event, context)


def process_event(rt: Runtime, event: Mapping[str, Any], context: LambdaContext | None) -> dict[str, Any]:
    """Process every record of an SQS event with ``rt`` (the partial batch response), or run a tick."""
    deadline = invocation_deadline(rt.settings, context)
    with structlog.contextvars.bound_contextvars(aws_request_id=getattr(context, "aws_request_id", None)):
        if is_tick(event):
            return {"tick": asyncio.run(_tick(rt, deadline))}
        records: Sequence[Any] = event.get("Records") or []
        return asyncio.run(_process_records(rt, records, deadline))


def invocation_deadline(settings: Settings, context: LambdaContext | None) -> Deadline | None:
    """The function's remaining time less the cutoff (``None`` without a Lambda context: no limit)."""
    remaining_ms = _remaining_ms(context)
    if remaining_ms is None:
        return None
    return Deadline.after(remaining_ms / 1000 - settings.lambda_time_cutoff_s)


def is_tick(event: Any) -> bool:
    """The scheduled tick: ``{"bulkchange": "tick"}``, or EventBridge's default Scheduled Event document."""
    if not isinstance(event, Mapping) or "Records" in event:
        return False
    if event.get("bulkchange") == TICK_EVENT["bulkchange"]:
        return True
    return event.get("source") == "aws.events" and event.get("detail-type") == "Scheduled Event"


async def _tick(rt: Runtime, deadline: Deadline | None) -> dict[str, int]:
    woken: list[int] = []
    try:
        woken = wake_stalled(rt)
        refresh_forgotten(rt.ctx)
    except Exception:
        log.exception("waking stalled bulk changes failed; the next tick tries again")
    callbacks, side_done = await drive_side_work(rt, deadline)
    return {"woken": len(woken), "callbacks_applied": callbacks, "side_work_done": side_done}


def wake_stalled(rt: Runtime) -> list[int]:
    """Wake (a fresh message, at once) each bulk change whose wake-up is missing or older than
    ``stalled_after_s``: its message was lost, dead-lettered, or held by an invocation that died."""
    return recover_lost_wakeups(rt.ctx, stale_after_s=rt.settings.stalled_after_s)


async def drive_side_work(rt: Runtime, deadline: Deadline | None) -> tuple[int, int]:
    """What the worker loop drives besides messages, within the time left: stored callbacks, then the side
    work (billing steps, webhook deliveries) pass after pass while something is due now. Never raises.

    Bounded by ``deadline`` and by ``slice_max_seconds``; every billing and webhook call inside a pass is
    bounded by the same deadline. Returns (callbacks applied, side-work units done).
    """
    bound = Deadline.after(rt.settings.slice_max_seconds).earlier(deadline)
    callbacks = done = 0
    if bound.expired:
        return callbacks, done
    try:
        callbacks = rt.engine.apply_pending_callbacks()
    except Exception:
        log.exception("applying stored callbacks failed; they stay stored and are applied later")
    while not bound.expired:
        try:
            units = await _side_work_pass(rt, bound)
        except Exception:
            log.exception("side work failed; it will be tried again")
            break
        done += units
        if units == 0:
            break  # nothing (more) could be done now: the next invocation or tick goes on
    return callbacks, done


async def _side_work_pass(rt: Runtime, deadline: Deadline) -> int:
    """One pass of the work besides messages: the wake-up relay, then the integrations bounded by ``deadline``."""
    done = await rt.engine.wakeups.run_due()
    return done + await rt.integrations.run_due(deadline=deadline)


@dataclass
class _Batch:
    """What one invocation's records came to."""

    failures: list[str] = field(default_factory=list)
    tried: int = 0
    raised: int = 0


async def _process_records(rt: Runtime, records: Sequence[Any], deadline: Deadline | None) -> dict[str, Any]:
    settings = rt.settings
    batch = _Batch()
    for index, record in enumerate(records):
        if deadline is not None and not deadline.allows(settings.slice_max_seconds):
            batch.failures.extend(_give_back_unstarted(rt, records[index:]))
            break
        received = received_from_record(record)
        if received is None:
            # Not an SQS record at all: nothing to process and nothing SQS could redeliver usefully.
            _refuse(rt, "not_sqs_record", None, record=str(record)[:500])
            continue
        with structlog.contextvars.bound_contextvars(message_id=received.message_id):
            await _process_one(rt, received, batch, deadline)
    if batch.tried and batch.raised == batch.tried:
        raise EntireBatchFailed(f"all {batch.tried} records failed; the batch will be redelivered")
    await drive_side_work(rt, deadline)
    return {"batchItemFailures": [{"itemIdentifier": mid} for mid in batch.failures]}


async def _process_one(rt: Runtime, received: ReceivedMessage, batch: _Batch, deadline: Deadline | None = None) -> None:
    """One record: refused (counted) or handed to the processor; a raise is reported for redelivery."""
    batch.tried += 1
    try:
        if _refused(rt, received):
            return
        await rt.engine.handle(received, deadline=deadline)
    except Exception:
        batch.raised += 1
        log.exception("record processing failed; reported for redelivery")
        batch.failures.append(received.message_id)


def _refused(rt: Runtime, received: ReceivedMessage) -> bool:
    """Count a malformed record (still handed on: the processor re-wakes its bulk change) and refuse, with
    a count, one whose bulk change does not exist. True when the record must not be processed."""
    try:
        message = received.message()
    except MalformedMessage as exc:
        _refuse(rt, "malformed", received, detail=exc.reason, bulk_change_id=exc.bulk_change_id)
        return False
    with read_only_session(rt.session_factory) as session:
        known = bulk_change_exists(session, message.bulk_change_id)
    if not known:
        _refuse(rt, "unknown_bulk_change", received, bulk_change_id=message.bulk_change_id)
    return not known


def _refuse(rt: Runtime, reason: str, received: ReceivedMessage | None, **details: Any) -> None:
    message_id = received.message_id if received is not None else None
    attributes = {k: v.get("StringValue") for k, v in received.attributes.items()} if received else None
    log.error(
        "message refused and acknowledged", reason=reason, message_id=message_id, attributes=attributes, **details
    )
    count_refused(rt.settings.metrics_namespace, reason, message_id=message_id)


def _give_back_unstarted(rt: Runtime, records: Sequence[Any]) -> list[str]:
    """Records not started: back to the queue at once (``aws.unstarted``); the ids to report."""
    unstarted = []
    for record in records:
        received = received_from_record(record)
        if received is not None:
            unstarted.append(Unstarted(received, source_arn(record)))
    return give_back(unstarted, rt.transport, _queues)


def received_from_record(record: Any) -> ReceivedMessage | None:
    """A Lambda SQS record as the ``ReceivedMessage`` the engine takes (``None`` if it is not one)."""
    if not isinstance(record, Mapping) or not isinstance(record.get("messageId"), str):
        return None
    raw_attributes = record.get("messageAttributes")
    attributes: dict[str, dict[str, str]] = {}
    if isinstance(raw_attributes, Mapping):
        # Lambda's shape is {stringValue, dataType}; keep it as SQS's {StringValue, DataType}.
        attributes = string_attributes(
            {
                str(name): {"StringValue": value.get("stringValue"), "DataType": value.get("dataType", "String")}
                for name, value in raw_attributes.items()
                if isinstance(value, Mapping)
            }
        )
    system = record.get("attributes")
    try:
        receive_count = int(system.get("ApproximateReceiveCount", "1")) if isinstance(system, Mapping) else 1
    except (TypeError, ValueError):
        receive_count = 1
    return ReceivedMessage(
        message_id=record["messageId"],
        receipt_handle=str(record.get("receiptHandle", "")),
        body=str(record.get("body", "")),
        attributes=attributes,
        receive_count=receive_count,
    )


def _remaining_ms(context: LambdaContext | None) -> int | None:
    if context is None or not hasattr(context, "get_remaining_time_in_millis"):
        return None
    return int(context.get_remaining_time_in_millis())
