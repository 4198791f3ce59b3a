"""Records an invocation received but did not start (time cutoff) go straight back to the queue.

Reporting them in ``batchItemFailures`` alone leaves them invisible for the queue's whole visibility
timeout (1,800 s in deploy/template.yaml) and counts the receive toward ``maxReceiveCount``: a wake-up
cut off again and again would wait half an hour each time and end in the dead-letter queue without ever
having failed. So each one is given back now:

* ``ChangeMessageVisibility`` to 0 on its receipt handle, and reported as a failure (so Lambda does not
  delete it): it is receivable at once and the next invocation takes it within seconds;
* unless this return would dead-letter it — its ``ApproximateReceiveCount`` has reached the queue's
  ``maxReceiveCount``, so SQS would move it on its next receive: then a fresh copy (same body and
  attributes, receive count 0) is sent and the record is *acknowledged* (not reported, so Lambda deletes
  the original). A record that only ever ran out of time therefore never reaches the dead-letter queue.

When neither call works (no permission, SQS unreachable) the record is still reported: it comes back
after the visibility timeout, as before. The queue is the record's ``eventSourceARN`` (resolved to its
URL once per container) — the configured ``DEVICE_BULK_CHANGE_QUEUE_URL`` when it names the same queue.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from bulkchange.queue.base import ReceivedMessage, Transport
from bulkchange.queue.sqs import SqsQueue, sqs_client

log = structlog.get_logger("bulkchange.aws.lambda")


@dataclass(frozen=True)
class Unstarted:
    """A record not started: its delivery, and the ARN of the queue it came from (if the event said)."""

    received: ReceivedMessage
    source_arn: str | None


def queue_name_of(arn: str) -> tuple[str, str, str] | None:
    """``(region, account, name)`` of ``arn:aws:sqs:<region>:<account>:<name>``; ``None`` otherwise."""
    parts = arn.split(":")
    if len(parts) == 6 and parts[0] == "arn" and parts[2] == "sqs" and parts[5]:
        return parts[3], parts[4], parts[5]
    return None


class QueueDirectory:
    """Queue objects by event source ARN, built once per container (``GetQueueUrl`` on first use)."""

    def __init__(self) -> None:
        self._queues: dict[str, SqsQueue] = {}
        self._lock = threading.Lock()

    def queue_for(self, arn: str | None, configured: Transport) -> SqsQueue | None:
        default = configured if isinstance(configured, SqsQueue) else None
        named = queue_name_of(arn) if arn else None
        if named is None:
            return default
        region, account, name = named
        if default is not None and default.queue_url.rstrip("/").rsplit("/", 1)[-1] == name:
            return default
        with self._lock:
            known = self._queues.get(arn or "")
        if known is not None:
            return known
        client = default.client if default is not None else sqs_client(region=region)
        url = client.get_queue_url(QueueName=name, QueueOwnerAWSAccountId=account)["QueueUrl"]
        queue = SqsQueue(url, client=client)
        with self._lock:
            return self._queues.setdefault(arn or "", queue)


def give_back(records: Sequence[Unstarted], configured: Transport, directory: QueueDirectory) -> list[str]:
    """Return ``records`` to their queue as the module docstring says; the message ids to report."""
    if not records:
        return []
    report: list[str] = []
    requeued = copied = 0
    for record in records:
        received = record.received
        try:
            queue = directory.queue_for(record.source_arn, configured)
            if queue is None:
                report.append(received.message_id)
                continue
            limit = queue.max_receive_count()
            if limit is not None and received.receive_count >= limit:
                queue.send_copy(received)  # the original is acknowledged: its receives are used up
                copied += 1
                continue
            if queue.change_visibility(received.receipt_handle, 0):
                requeued += 1
        except Exception:
            log.warning(
                "could not give an unstarted record back at once; it returns after the visibility timeout",
                message_id=received.message_id,
                exc_info=True,
            )
        report.append(received.message_id)
    log.warning(
        "little time left: records not started were given back to the queue",
        records=len(records),
        visible_again=requeued,
        sent_again=copied,
    )
    return report


def source_arn(record: Any) -> str | None:
    value = record.get("eventSourceARN") if isinstance(record, Mapping) else None
    return value if isinstance(value, str) and value else None
