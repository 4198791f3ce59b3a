"""AWS fixtures: a real SQS (and SSM, Secrets Manager) HTTP API on loopback, from moto[server].

One ``ThreadedMotoServer`` per test session on a free loopback port; boto3 reaches it through
``AWS_ENDPOINT_URL`` with dummy credentials in us-east-1, exactly as it would reach AWS. Every test gets
its own queue and dead-letter queue (unique names), so tests do not see each other's messages.

``invoke_like_esm`` plays the Lambda event source mapping: ReceiveMessage on the queue, build the event
in the documented SQS shape, call the handler, then delete what the handler did not report (or nothing
when it raised), leaving failures to come back after their visibility timeout.
"""

from __future__ import annotations

import json
import logging
import socket
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

from bulkchange.aws import lambda_handler
from bulkchange.settings import Settings

REGION = "us-east-1"
EVENTS = Path(__file__).parent / "events"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


AWS_ENV_VARS = ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_CONFIG_FILE")


def aws_environment(endpoint: str) -> dict[str, str]:
    """What boto3 needs to talk to the loopback server (dummy credentials, never a real account)."""
    return {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_EC2_METADATA_DISABLED": "true",
    }


@pytest.fixture(autouse=True)
def aws_env(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    for name in AWS_ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    for name, value in aws_environment(moto_endpoint).items():
        monkeypatch.setenv(name, value)
    lambda_handler.reset_runtime()
    yield moto_endpoint
    lambda_handler.reset_runtime()


@dataclass
class Queue:
    url: str
    arn: str
    dlq_url: str
    client: Any

    def receive_raw(
        self, *, wait_s: int = 1, max_messages: int = 10, url: str | None = None, visibility_s: int | None = None
    ) -> list[dict[str, Any]]:
        request: dict[str, Any] = {
            "QueueUrl": url or self.url,
            "MaxNumberOfMessages": max_messages,
            "WaitTimeSeconds": wait_s,
            "MessageAttributeNames": ["All"],
            "MessageSystemAttributeNames": ["All"],
        }
        if visibility_s is not None:
            request["VisibilityTimeout"] = visibility_s
        return list(self.client.receive_message(**request).get("Messages", []))

    def dead_letters(self) -> list[dict[str, Any]]:
        """A peek at the dead-letter queue (received with visibility 0, so they stay visible)."""
        return self.receive_raw(wait_s=0, url=self.dlq_url, visibility_s=0)


@pytest.fixture
def make_queue(aws_env: str) -> Callable[..., Queue]:
    client = boto3.client("sqs", region_name=REGION)

    def build(*, visibility_timeout_s: int = 30, max_receive_count: int = 2) -> Queue:
        name = f"bulkchange-{uuid.uuid4().hex[:12]}"
        dlq_url = client.create_queue(QueueName=f"{name}-dlq")["QueueUrl"]
        dlq_arn = client.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        url = client.create_queue(
            QueueName=name,
            Attributes={
                "VisibilityTimeout": str(visibility_timeout_s),
                "RedrivePolicy": json.dumps(
                    {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(max_receive_count)}
                ),
            },
        )["QueueUrl"]
        arn = client.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        return Queue(url=url, arn=arn, dlq_url=dlq_url, client=client)

    return build


@pytest.fixture
def queue_kwargs() -> dict[str, Any]:
    """Overridden per test with ``@pytest.mark.parametrize("queue_kwargs", [...])``."""
    return {}


@pytest.fixture
def queue(make_queue: Callable[..., Queue], queue_kwargs: dict[str, Any]) -> Queue:
    return make_queue(**queue_kwargs)


class LambdaContext:
    """The parts of the Lambda context object the handler reads, counting down like the real one."""

    def __init__(self, timeout_s: float = 900.0) -> None:
        self.function_name = "bulkchange-device-bulk-change"
        self.memory_limit_in_mb = 512
        self.aws_request_id = str(uuid.uuid4())
        self.invoked_function_arn = f"arn:aws:lambda:{REGION}:123456789012:function:{self.function_name}"
        self._deadline = time.monotonic() + timeout_s

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def lambda_record(message: Mapping[str, Any], queue_arn: str) -> dict[str, Any]:
    """An SQS message from ReceiveMessage as the Lambda SQS event record AWS documents."""
    attributes = {
        name: {
            "stringValue": value.get("StringValue"),
            "stringListValues": [],
            "binaryListValues": [],
            "dataType": value["DataType"],
        }
        for name, value in (message.get("MessageAttributes") or {}).items()
    }
    system = message.get("Attributes") or {}
    return {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message.get("Body", ""),
        "attributes": {
            key: system[key]
            for key in ("ApproximateReceiveCount", "SentTimestamp", "SenderId", "ApproximateFirstReceiveTimestamp")
            if key in system
        },
        "messageAttributes": attributes,
        "md5OfBody": message.get("MD5OfBody", ""),
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": REGION,
    }


@dataclass
class Invocation:
    event: dict[str, Any]
    response: dict[str, Any] | None
    error: BaseException | None
    deleted: list[str]

    @property
    def message_ids(self) -> list[str]:
        return [r["messageId"] for r in self.event["Records"]]


Handler = Callable[[Mapping[str, Any], Any], dict[str, Any]]


def invoke_like_esm(
    queue: Queue, handler: Handler = lambda_handler.handler, *, wait_s: int = 1, timeout_s: float = 900.0
) -> Invocation | None:
    """One poll of the event source mapping: receive, invoke, delete the successes. ``None`` if empty."""
    messages = queue.receive_raw(wait_s=wait_s)
    if not messages:
        return None
    event = {"Records": [lambda_record(m, queue.arn) for m in messages]}
    try:
        response: dict[str, Any] | None = handler(event, LambdaContext(timeout_s))
        error = None
    except Exception as exc:  # Lambda: an error fails the whole batch
        response, error = None, exc
    failed = (
        {item["itemIdentifier"] for item in response["batchItemFailures"]}
        if response is not None
        else {m["MessageId"] for m in messages}
    )
    deleted = []
    for message in messages:
        if message["MessageId"] not in failed:
            queue.client.delete_message(QueueUrl=queue.url, ReceiptHandle=message["ReceiptHandle"])
            deleted.append(message["MessageId"])
    return Invocation(event, response, error, deleted)


def drain(queue: Queue, done: Callable[[], bool], *, deadline_s: float = 60.0, **kwargs: Any) -> list[Invocation]:
    """Invoke like the ESM until ``done()`` (checked between polls) or the deadline."""
    invocations: list[Invocation] = []
    deadline = time.monotonic() + deadline_s
    while not done():
        assert time.monotonic() < deadline, f"not done after {deadline_s}s; invocations: {len(invocations)}"
        invocation = invoke_like_esm(queue, **kwargs)
        if invocation is not None:
            invocations.append(invocation)
    return invocations


def lambda_environment(settings: Settings) -> dict[str, str]:
    """The function's environment variables for ``settings`` (the seed's names where it has them)."""
    env = {
        "BULKCHANGE_DATABASE_URL": settings.database_url,
        "THINGSPACE_ACTIVATION_CHECK_DELAY_SECONDS": str(settings.activation_check_delay_s),
        "THINGSPACE_UPDATE_DEVICE_STATUS_RETRY_NUMBER": str(settings.update_device_status_retry_number),
        "BULKCHANGE_CONTINUATION_DELAY_S": str(settings.continuation_delay_s),
        "BULKCHANGE_RETRY_BASE_S": str(settings.retry_base_s),
        "BULKCHANGE_RETRY_CAP_S": str(settings.retry_cap_s),
        "BULKCHANGE_RECONCILE_WINDOW_S": str(settings.reconcile_window_s),
        "BULKCHANGE_RECONCILE_RETRY_S": str(settings.reconcile_retry_s),
        "BULKCHANGE_CARRIER_TIMEOUT_S": str(settings.carrier_timeout_s),
        "BULKCHANGE_CARRIER_CALL_ATTEMPTS": str(settings.carrier_call_attempts),
        "BULKCHANGE_MAX_ATTEMPTS": str(settings.max_attempts),
        "BULKCHANGE_BATCH_MAX_DEVICES": str(settings.batch_max_devices),
        "BULKCHANGE_SLICE_MAX_CHANGES": str(settings.slice_max_changes),
        "BULKCHANGE_SLICE_MAX_SECONDS": str(settings.slice_max_seconds),
        "BULKCHANGE_QUEUE_VISIBILITY_TIMEOUT_S": str(settings.queue_visibility_timeout_s),
        "BULKCHANGE_SQS_WAIT_TIME_S": str(settings.sqs_wait_time_s),
        "BULKCHANGE_LOG_LEVEL": "WARNING",
    }
    if settings.queue_url:
        env["DEVICE_BULK_CHANGE_QUEUE_URL"] = settings.queue_url
    return env
