"""The AWS SQS transport: the ``Transport`` protocol on a standard queue, through boto3.

The queue must be a **standard** queue: per-message ``DelaySeconds`` (the deferred activation check,
up to 900 s) does not exist on FIFO queues. Messages carry the seed's attributes
(``BulkChangeMessage.to_attributes``) and a short text body; the database row is the truth.

Where SQS differs from ``EmbeddedQueue`` (and what the rest of bulkchange assumes):

* ``delete`` with a stale receipt handle: SQS accepts the call and may or may not delete the message
  (its documentation: "the request succeeds, but the message might not be deleted"). We return
  ``False`` only when SQS says the handle is invalid. Deleting twice is harmless either way: the message
  only wakes a worker, and the database claims decide who sends.
* ``stats`` are SQS's *approximate* counts (eventually consistent, up to about a minute late on AWS).
  ``next_visible_in_s`` is not knowable from SQS: it is ``0.0`` when something is visible, ``None``
  when nothing is left at all, and otherwise a one-second hint (the next long poll does the waiting).
* ``dead_lettered`` counts the messages in the queue named by the source queue's ``RedrivePolicy``
  (0 when there is none).
* ``receive`` long-polls (``WaitTimeSeconds``, at most 20) instead of returning at once.
* ``send_copy`` re-sends a received message as a new one (same body and string attributes): its receive
  count starts again, which a handler uses for a message it never started (see bulkchange.aws).
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from bulkchange.queue.base import MAX_DELAY_S, MAX_VISIBILITY_TIMEOUT_S, QueueStats, ReceivedMessage
from bulkchange.queue.message import BulkChangeMessage

if TYPE_CHECKING:
    from mypy_boto3_sqs.client import SQSClient

MAX_MESSAGES_PER_RECEIVE = 10
MAX_WAIT_TIME_S = 20

_STALE_HANDLE_CODES = frozenset(
    {
        "ReceiptHandleIsInvalid",
        "InvalidParameterValue",  # an expired handle, on ChangeMessageVisibility
        "MessageNotInflight",
        "AWS.SimpleQueueService.MessageNotInflight",
        "InvalidReceiptHandle",
    }
)

_QUEUE_URL_REGION = re.compile(r"^https?://sqs[.-]([a-z0-9-]+)\.amazonaws\.com(\.cn)?/", re.IGNORECASE)


def region_from_queue_url(queue_url: str) -> str | None:
    """``us-east-1`` from ``https://sqs.us-east-1.amazonaws.com/123456789012/name``; ``None`` otherwise."""
    match = _QUEUE_URL_REGION.match(queue_url)
    return match.group(1).lower() if match else None


def sqs_client(*, region: str | None = None, endpoint_url: str | None = None) -> SQSClient:
    """A boto3 SQS client; region and endpoint fall back to boto3's configuration (env, profile, role)."""
    import boto3

    return boto3.client("sqs", region_name=region, endpoint_url=endpoint_url)


def _check_int(name: str, value: int, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if not low <= value <= high:
        raise ValueError(f"{name} must be between {low} and {high}, got {value}")


def _error_code(exc: Exception) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, Mapping):
        error = response.get("Error")
        if isinstance(error, Mapping):
            return str(error.get("Code", ""))
    return ""


def string_attributes(raw: Mapping[str, Mapping[str, Any]] | None) -> dict[str, dict[str, str]]:
    """SQS message attributes reduced to the string-valued ones, in the SQS API shape.

    Binary attributes carry no bulk-change field; they are dropped rather than failing the message.
    """
    result: dict[str, dict[str, str]] = {}
    for name, attribute in (raw or {}).items():
        value = attribute.get("StringValue")
        if isinstance(value, str):
            result[name] = {"DataType": str(attribute.get("DataType", "String")), "StringValue": value}
    return result


class SqsQueue:
    """A ``Transport`` on one SQS standard queue (see the module docstring).

    ``visibility_timeout_s`` is used by ``receive`` when the caller gives none (``None``: the queue's
    own ``VisibilityTimeout``). ``wait_time_s`` is the long-poll wait of each ``receive``.
    """

    def __init__(
        self,
        queue_url: str,
        *,
        client: SQSClient | None = None,
        region: str | None = None,
        endpoint_url: str | None = None,
        visibility_timeout_s: int | None = None,
        wait_time_s: int = MAX_WAIT_TIME_S,
    ) -> None:
        if not queue_url:
            raise ValueError("queue_url is required")
        if visibility_timeout_s is not None:
            _check_int("visibility_timeout_s", visibility_timeout_s, 0, MAX_VISIBILITY_TIMEOUT_S)
        _check_int("wait_time_s", wait_time_s, 0, MAX_WAIT_TIME_S)
        self._queue_url = queue_url
        self._client = client or sqs_client(
            region=region or region_from_queue_url(queue_url), endpoint_url=endpoint_url
        )
        self._visibility_timeout_s = visibility_timeout_s
        self._wait_time_s = wait_time_s
        self._dlq_url: str | None = None
        self._dlq_known = False
        self._max_receives: int | None = None
        self._max_receives_known = False
        self._lock = threading.Lock()

    @property
    def queue_url(self) -> str:
        return self._queue_url

    @property
    def client(self) -> SQSClient:
        return self._client

    # -- Transport -------------------------------------------------------------------------------

    def send(self, message: BulkChangeMessage, *, delay_s: int = 0, body: str = "bulk change") -> str:
        """``SendMessage`` with ``DelaySeconds`` (0–900) and the seed's attributes; returns the ``MessageId``."""
        _check_int("delay_s", delay_s, 0, MAX_DELAY_S)
        response = self._client.send_message(
            QueueUrl=self._queue_url,
            MessageBody=body or "bulk change",
            DelaySeconds=delay_s,
            MessageAttributes=message.to_attributes(),  # type: ignore[arg-type]
        )
        return response["MessageId"]

    def receive(
        self,
        *,
        max_messages: int = 10,
        visibility_timeout_s: int | None = None,
        wait_time_s: int | None = None,
    ) -> list[ReceivedMessage]:
        """``ReceiveMessage`` (long poll of ``wait_time_s``, default the queue object's) of up to 10 messages."""
        _check_int("max_messages", max_messages, 1, MAX_MESSAGES_PER_RECEIVE)
        timeout = self._visibility_timeout_s if visibility_timeout_s is None else visibility_timeout_s
        wait = self._wait_time_s if wait_time_s is None else wait_time_s
        _check_int("wait_time_s", wait, 0, MAX_WAIT_TIME_S)
        request: dict[str, Any] = {
            "QueueUrl": self._queue_url,
            "MaxNumberOfMessages": max_messages,
            "WaitTimeSeconds": wait,
            "MessageAttributeNames": ["All"],
            "MessageSystemAttributeNames": ["ApproximateReceiveCount"],
        }
        if timeout is not None:
            _check_int("visibility_timeout_s", timeout, 0, MAX_VISIBILITY_TIMEOUT_S)
            request["VisibilityTimeout"] = timeout
        response = self._client.receive_message(**request)
        return [self._received(raw) for raw in response.get("Messages", [])]

    def delete(self, receipt_handle: str) -> bool:
        """``DeleteMessage``; ``False`` when SQS calls the handle invalid (see the module docstring)."""
        from botocore.exceptions import ClientError

        try:
            self._client.delete_message(QueueUrl=self._queue_url, ReceiptHandle=receipt_handle)
        except ClientError as exc:
            if _error_code(exc) in _STALE_HANDLE_CODES:
                return False
            raise
        return True

    def change_visibility(self, receipt_handle: str, timeout_s: int) -> bool:
        """``ChangeMessageVisibility`` to ``timeout_s`` (0–43,200) from now; ``False`` if the handle is stale."""
        from botocore.exceptions import ClientError

        _check_int("timeout_s", timeout_s, 0, MAX_VISIBILITY_TIMEOUT_S)
        try:
            self._client.change_message_visibility(
                QueueUrl=self._queue_url, ReceiptHandle=receipt_handle, VisibilityTimeout=timeout_s
            )
        except ClientError as exc:
            if _error_code(exc) in _STALE_HANDLE_CODES:
                return False
            raise
        return True

    def send_copy(self, received: ReceivedMessage) -> str:
        """``SendMessage`` of a new message with ``received``'s body and string attributes; its ``MessageId``."""
        response = self._client.send_message(
            QueueUrl=self._queue_url,
            MessageBody=received.body or "bulk change",
            MessageAttributes=received.attributes,  # type: ignore[arg-type]
        )
        return response["MessageId"]

    def max_receive_count(self) -> int | None:
        """The ``maxReceiveCount`` of the queue's ``RedrivePolicy`` (read once), ``None`` without one."""
        with self._lock:
            if self._max_receives_known:
                return self._max_receives
        attrs = self._client.get_queue_attributes(QueueUrl=self._queue_url, AttributeNames=["RedrivePolicy"]).get(
            "Attributes", {}
        )
        policy = attrs.get("RedrivePolicy")
        count = int(json.loads(policy)["maxReceiveCount"]) if policy else None
        with self._lock:
            self._max_receives, self._max_receives_known = count, True
        return count

    def stats(self) -> QueueStats:
        """SQS's approximate counts, and the dead-letter queue's size when a redrive policy names one."""
        attrs = self._client.get_queue_attributes(
            QueueUrl=self._queue_url,
            AttributeNames=[
                "ApproximateNumberOfMessages",
                "ApproximateNumberOfMessagesDelayed",
                "ApproximateNumberOfMessagesNotVisible",
                "RedrivePolicy",
            ],
        ).get("Attributes", {})
        visible = int(attrs.get("ApproximateNumberOfMessages", "0"))
        delayed = int(attrs.get("ApproximateNumberOfMessagesDelayed", "0"))
        in_flight = int(attrs.get("ApproximateNumberOfMessagesNotVisible", "0"))
        dead = self._dead_letter_count(attrs.get("RedrivePolicy"))
        if visible:
            next_in: float | None = 0.0
        elif delayed or in_flight:
            next_in = 1.0
        else:
            next_in = None
        return QueueStats(
            visible=visible, delayed=delayed, in_flight=in_flight, dead_lettered=dead, next_visible_in_s=next_in
        )

    # -- Dead letters ------------------------------------------------------------------------------

    def dead_letter_queue_url(self) -> str | None:
        """The URL of the queue this queue's ``RedrivePolicy`` dead-letters to, or ``None``."""
        attrs = self._client.get_queue_attributes(QueueUrl=self._queue_url, AttributeNames=["RedrivePolicy"]).get(
            "Attributes", {}
        )
        return self._resolve_dlq(attrs.get("RedrivePolicy"))

    def _dead_letter_count(self, redrive_policy: str | None) -> int:
        url = self._resolve_dlq(redrive_policy)
        if url is None:
            return 0
        attrs = self._client.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"]).get(
            "Attributes", {}
        )
        return int(attrs.get("ApproximateNumberOfMessages", "0"))

    def _resolve_dlq(self, redrive_policy: str | None) -> str | None:
        with self._lock:
            if self._dlq_known:
                return self._dlq_url
        url: str | None = None
        if redrive_policy:
            arn = str(json.loads(redrive_policy).get("deadLetterTargetArn", ""))
            # arn:aws:sqs:<region>:<account>:<name>
            parts = arn.split(":")
            if len(parts) == 6 and parts[2] == "sqs":
                url = self._client.get_queue_url(QueueName=parts[5], QueueOwnerAWSAccountId=parts[4])["QueueUrl"]
        with self._lock:
            self._dlq_url, self._dlq_known = url, True
        return url

    # -- Conversion ------------------------------------------------------------------------------

    @staticmethod
    def _received(raw: Mapping[str, Any]) -> ReceivedMessage:
        system = raw.get("Attributes") or {}
        return ReceivedMessage(
            message_id=str(raw["MessageId"]),
            receipt_handle=str(raw["ReceiptHandle"]),
            body=str(raw.get("Body", "")),
            attributes=string_attributes(raw.get("MessageAttributes")),
            receive_count=int(system.get("ApproximateReceiveCount", "1")),
        )


__all__: Sequence[str] = ("SqsQueue", "region_from_queue_url", "sqs_client", "string_attributes")
