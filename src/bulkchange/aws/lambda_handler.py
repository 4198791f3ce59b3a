"""The SQS-triggered Lambda: ``bulkchange.aws.lambda_handler.handler(event, context)``.

Takes the standard SQS event (``Records[]`` with ``messageId``, ``receiptHandle``, ``body``,
``attributes.ApproximateReceiveCount`` and ``messageAttributes`` ``{stringValue, dataType}``) and
processes **every** record, one after another (the original dropped all but one, B15). It answers a
partial batch response, so the event source mapping must have ``FunctionResponseTypes:
[ReportBatchItemFailures]``::

    {"batchItemFailures": [{"itemIdentifier": "<messageId>"}, ...]}

* A record whose processing raises is reported; Lambda leaves it on the queue (redelivered after the
  visibility timeout, dead-lettered after ``maxReceiveCount``). The others are deleted by Lambda.
* A malformed record is *not* a failure: ``Processor.handle`` refuses it with a logged error (and
  re-wakes its bulk change when the id is readable); redelivering it would fail the same way.
* When ``context.get_remaining_time_in_millis()`` drops below ``BULKCHANGE_LAMBDA_TIME_CUTOFF_S`` (60 s,
  the original's cutoff), no further record is started: the rest are reported for redelivery. Each
  record's engine slice is also bounded to end that long before the function would time out.
* When every record that was tried raised (say the database is down), the handler raises instead of
  answering, so Lambda counts an error and backs off its concurrency (with partial responses it would
  not); SQS redelivers the whole batch either way.
* After its records, within the same remaining-time budget, an invocation drives what the worker loop
  (``engine/worker.py``) drives besides messages, so a deployment with only this function completes
  everything: stored callbacks not yet applied (``Processor.apply_pending_callbacks``) and the side work
  (``Processor.run_side_work``: billing / customer rate plan additional steps, then webhook deliveries),
  pass after pass while something is due now. A side-work failure is logged, never reported against
  the records (they are done).
* A *tick* — an event without ``Records`` that is ``{"bulkchange": "tick"}`` (the EventBridge schedule
  in deploy/template.yaml sends it) or EventBridge's own ``Scheduled Event`` — runs the same side work
  plus ``worker.recover_lost_wakeups`` (bulk changes whose wake-up message was lost or dead-lettered),
  so billing retries and webhook deliveries happen when no message arrives. It answers
  ``{"tick": {...counts...}}``.

The runtime (database engine, SQS transport, processor) is built once per container, from the
environment (``BULKCHANGE_DATABASE_URL``, possibly an ``ssm:``/``secretsmanager:`` reference,
``DEVICE_BULK_CHANGE_QUEUE_URL`` for follow-up messages, …) and reused by warm invocations.

aws-lambda-powertools' ``BatchProcessor`` is not used: it has no notion of stopping on the remaining
time, and our Processor is async and already owns the malformed-message decision; the loop below is the
part of it we need, without adding the dependency to the deployment package.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import structlog

from bulkchange.engine.worker import recover_lost_wakeups
from bulkchange.heap import settle_startup_objects
from bulkchange.logging_setup import configure_logging
from bulkchange.queue.base import ReceivedMessage
from bulkchange.queue.sqs import string_attributes
from bulkchange.runtime import Runtime, build_runtime
from bulkchange.settings import Settings

log = structlog.get_logger("bulkchange.aws.lambda")


class LambdaContext(Protocol):
    def get_remaining_time_in_millis(self) -> int: ...


class EntireBatchFailed(RuntimeError):
    """Every record tried raised; raised so that Lambda backs off (the batch is redelivered)."""


_runtime: Runtime | None = None
_runtime_lock = threading.Lock()


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
    global _runtime
    with _runtime_lock:
        if _runtime is not None:
            _runtime.close()
        _runtime = None


TICK_EVENT: dict[str, str] = {"bulkchange": "tick"}
"""The event the schedule in deploy/template.yaml invokes the function with."""


def handler(event: Mapping[str, Any], context: LambdaContext | None) -> dict[str, Any]:
    """The Lambda entry point (see the module docstring)."""
    return process_event(get_runtime(), event, context)


def process_event(rt: Runtime, event: Mapping[str, Any], context: LambdaContext | None) -> dict[str, Any]:
    """Process every record of an SQS event with ``rt`` (the partial batch response), or run a tick."""
    if is_tick(event):
        return {"tick": asyncio.run(_tick(rt, context))}
    records: Sequence[Any] = event.get("Records") or []
    return asyncio.run(_process_records(rt, records, context))


def is_tick(event: Any) -> bool:
    """The scheduled tick: ``{"bulkchange": "tick"}``, or EventBridge's default Scheduled Event document."""
    if not isinstance(event, Mapping) or "Records" in event:
        return False
    if event.get("bulkchange") == TICK_EVENT["bulkchange"]:
        return True
    return event.get("source") == "aws.events" and event.get("detail-type") == "Scheduled Event"


async def _tick(rt: Runtime, context: LambdaContext | None) -> dict[str, int]:
    woken: list[int] = []
    try:
        woken = recover_lost_wakeups(rt.processor)
    except Exception:
        log.exception("recovering lost wake-ups failed; the next tick tries again")
    callbacks, side_done = await drive_side_work(rt, context)
    return {"woken": len(woken), "callbacks_applied": callbacks, "side_work_done": side_done}


async def drive_side_work(rt: Runtime, context: LambdaContext | None) -> tuple[int, int]:
    """What the worker loop drives besides messages, within the time left: stored callbacks, then the side
    work (billing steps, webhook deliveries) pass after pass while something is due now. Never raises.

    Bounded by the remaining time less the cutoff and by ``slice_max_seconds``; a started pass is not cut
    short (its claims are leased and idempotent, but an interrupted pass would wait for its leases to
    expire). Returns (callbacks applied, side-work units done).
    """
    settings = rt.settings
    cutoff_ms = settings.lambda_time_cutoff_s * 1000
    deadline = time.monotonic() + settings.slice_max_seconds

    def time_left() -> bool:
        remaining_ms = _remaining_ms(context)
        return time.monotonic() < deadline and (remaining_ms is None or remaining_ms >= cutoff_ms)

    callbacks = done = 0
    if not time_left():
        return callbacks, done
    try:
        callbacks = rt.processor.apply_pending_callbacks()
    except Exception:
        log.exception("applying stored callbacks failed; they stay stored and are applied later")
    while time_left():
        try:
            units, _due_in_s = await rt.processor.run_side_work()
        except Exception:
            log.exception("side work failed; it will be tried again")
            break
        done += units
        if units == 0:
            break  # nothing (more) could be done now: the next invocation or tick goes on
    return callbacks, done


async def _process_records(rt: Runtime, records: Sequence[Any], context: LambdaContext | None) -> dict[str, Any]:
    settings = rt.settings
    cutoff_ms = settings.lambda_time_cutoff_s * 1000
    failures: list[str] = []
    tried = raised = 0
    for index, record in enumerate(records):
        remaining_ms = _remaining_ms(context)
        if remaining_ms is not None and remaining_ms < cutoff_ms:
            left = [_message_id(r) for r in records[index:]]
            log.warning(
                "little time left; returning the remaining records for redelivery",
                remaining_ms=remaining_ms,
                records_left=len(left),
            )
            failures.extend(mid for mid in left if mid)
            break
        message_id = _message_id(record)
        received = received_from_record(record)
        if received is None:
            # Not an SQS record at all: nothing to process and nothing SQS could redeliver usefully.
            log.error("not an SQS record; acknowledged", record=str(record)[:500])
            continue
        tried += 1
        _bound_slice(rt, remaining_ms, cutoff_ms)
        try:
            await rt.processor.handle(received)
        except Exception:
            raised += 1
            log.exception("record processing failed; reported for redelivery", message_id=message_id)
            if message_id:
                failures.append(message_id)
        finally:
            rt.processor.ctx.settings = settings
    if tried and raised == tried:
        raise EntireBatchFailed(f"all {tried} records failed; the batch will be redelivered")
    await drive_side_work(rt, context)
    return {"batchItemFailures": [{"itemIdentifier": mid} for mid in failures]}


def received_from_record(record: Any) -> ReceivedMessage | None:
    """A Lambda SQS record as the ``ReceivedMessage`` the Processor takes (``None`` if it is not one)."""
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


def _message_id(record: Any) -> str | None:
    if isinstance(record, Mapping) and isinstance(record.get("messageId"), str):
        return str(record["messageId"])
    return None


def _remaining_ms(context: LambdaContext | None) -> int | None:
    if context is None or not hasattr(context, "get_remaining_time_in_millis"):
        return None
    return int(context.get_remaining_time_in_millis())


def _bound_slice(rt: Runtime, remaining_ms: int | None, cutoff_ms: float) -> None:
    """End this record's engine slice ``cutoff`` before the function's deadline (never later than configured)."""
    if remaining_ms is None:
        return
    available_s = max(1.0, (remaining_ms - cutoff_ms) / 1000)
    settings = rt.settings
    if available_s < settings.slice_max_seconds:
        rt.processor.ctx.settings = settings.model_copy(update={"slice_max_seconds": available_s})
