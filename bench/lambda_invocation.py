"""Time per record of the SQS Lambda handler, to size BatchSize / slice time / function timeout.

    python bench/lambda_invocation.py --json [--bulk-changes 20] [--devices 500] [--latency-ms 250]
                                      [--batch-size 10] [--function-timeout 300] [--database-url URL]

A real SQS API (moto server on loopback, a queue with the template's 1,800 s visibility timeout and a
dead-letter queue after 5 receives), the ThingSpace simulator in its own process with the given latency
on every answer (1 s activation delay, real limits), and the handler in this process, invoked the way
the event source mapping does: receive up to ``--batch-size`` messages, call
``bulkchange.aws.lambda_handler.handler`` with a context counting down from ``--function-timeout``,
delete what it did not report. ``--bulk-changes`` bulk changes of ``--devices`` activations each (Add,
then Activate), submitted at once; no callback listener, so activations settle through the deferred
check (``--check-delay`` seconds). Runs until every change is terminal.

Each record's time is the processor's ``handle`` for it (one wake-up: a slice of at most
``BULKCHANGE_SLICE_MAX_SECONDS`` / ``BULKCHANGE_SLICE_MAX_CHANGES``, or one check round); each
invocation's is the handler's, side work after the records included. The last line printed is one JSON
object.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import boto3
from _common import free_port, fresh_database, new_iccid, new_imei, wait_http
from moto.server import ThreadedMotoServer

from bulkchange.aws import lambda_handler
from bulkchange.engine import changes as ch
from bulkchange.engine.submit import create_bulk_change
from bulkchange.logging_setup import configure_logging
from bulkchange.providers import add_provider
from bulkchange.queue.base import ReceivedMessage
from bulkchange.runtime import build_runtime
from bulkchange.security.crypto import generate_key
from bulkchange.settings import Settings

REGION = "us-east-1"


class Context:
    """The Lambda context's clock, counting down from the function timeout."""

    def __init__(self, timeout_s: float) -> None:
        self.aws_request_id = uuid.uuid4().hex
        self._end = time.monotonic() + timeout_s

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._end - time.monotonic()) * 1000))


def lambda_record(message: dict[str, Any], arn: str) -> dict[str, Any]:
    attributes = {
        name: {"stringValue": value.get("StringValue"), "dataType": value["DataType"]}
        for name, value in (message.get("MessageAttributes") or {}).items()
    }
    return {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message.get("Body", ""),
        "attributes": {"ApproximateReceiveCount": message["Attributes"]["ApproximateReceiveCount"]},
        "messageAttributes": attributes,
        "eventSource": "aws:sqs",
        "eventSourceARN": arn,
        "awsRegion": REGION,
    }


def start_simulator(latency_ms: float, stack: ExitStack) -> str:
    port = free_port()
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "bulkchange.cli.main", "simulator", "--host", "127.0.0.1", "--port", str(port)),
            *("--latency-ms", str(latency_ms), "--activation-delay", "1"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    stack.callback(lambda: (proc.terminate(), proc.wait(10)))
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/_sim/counters")
    return url


def make_queue(sqs: Any) -> tuple[str, str]:
    name = f"bench-{uuid.uuid4().hex[:8]}"
    dlq = sqs.create_queue(QueueName=f"{name}-dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    policy = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "5"})
    attributes = {"VisibilityTimeout": "1800", "RedrivePolicy": policy}
    url = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    return url, arn


def timed_handle(samples: list[dict[str, Any]]) -> Callable[[Any], Any]:
    """Wrap the container's ``Engine.handle`` to record each record's time and kind."""
    rt = lambda_handler.get_runtime()
    original = rt.engine.handle

    async def handle(received: ReceivedMessage, *, deadline: Any = None) -> None:
        check = received.attributes.get("IsRetryNewActivateThingSpaceDevice", {}).get("StringValue") == "True"
        started = time.perf_counter()
        try:
            await original(received, deadline=deadline)
        finally:
            samples.append({"kind": "check round" if check else "slice", "s": time.perf_counter() - started})

    rt.engine.handle = handle  # type: ignore[method-assign]
    return original


def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {
        "n": len(ordered),
        "median_s": round(statistics.median(ordered), 3),
        "p95_s": round(p95, 3),
        "max_s": round(ordered[-1], 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bulk-changes", type=int, default=20)
    parser.add_argument("--devices", type=int, default=500, help="activations per bulk change")
    parser.add_argument("--latency-ms", type=float, default=250.0, help="added to every simulator answer")
    parser.add_argument("--batch-size", type=int, default=10)
    parser.add_argument("--function-timeout", type=float, default=300.0)
    parser.add_argument("--check-delay", type=int, default=30)
    parser.add_argument("--database-url", default=None, help="a PostgreSQL server URL: a fresh database on it")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    configure_logging("WARNING")
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    rng = random.Random(3)
    with ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
        moto_port = free_port()
        moto = ThreadedMotoServer(ip_address="127.0.0.1", port=moto_port, verbose=False)
        moto.start()
        stack.callback(moto.stop)
        os.environ.update(
            AWS_ACCESS_KEY_ID="bench",
            AWS_SECRET_ACCESS_KEY="bench",
            AWS_DEFAULT_REGION=REGION,
            AWS_ENDPOINT_URL=f"http://127.0.0.1:{moto_port}",
            AWS_EC2_METADATA_DISABLED="true",
        )
        sqs = boto3.client("sqs", region_name=REGION)
        queue_url, queue_arn = make_queue(sqs)
        sim_url = start_simulator(args.latency_ms, stack)
        db_url = fresh_database(args.database_url, Path(tmp), stack)
        os.environ.update(
            BULKCHANGE_DATABASE_URL=db_url,
            DEVICE_BULK_CHANGE_QUEUE_URL=queue_url,
            THINGSPACE_ACTIVATION_CHECK_DELAY_SECONDS=str(args.check_delay),
            BULKCHANGE_LOG_LEVEL="WARNING",
            BULKCHANGE_SECRET_KEYS=generate_key(),  # what every function shares (by SSM reference on AWS)
        )
        rt = build_runtime(Settings())  # migrates; the producer's side (submit)
        stack.callback(rt.close)
        with rt.session_factory() as session:
            provider = add_provider(
                session,
                name="bench",
                base_url=sim_url,
                client_id="sim-client",
                client_secret="sim-secret",
                username="sim-user",
                password="sim-pass",
                account="0000123456-00001",
            )
        bulk_ids = []
        for _ in range(args.bulk_changes):
            rows = [
                {"ICCID": new_iccid(rng), "IMEI": new_imei(rng), "ServicePlan": "M2M_4G", "MdnZipCode": "98801"}
                for _ in range(args.devices)
            ]
            with rt.session_factory() as session:
                bulk_ids.append(
                    create_bulk_change(session, rt.transport, rows, status="active", service_provider_id=provider)
                )
        records: list[dict[str, Any]] = []
        stack.callback(lambda_handler.reset_runtime)
        timed_handle(records)
        invocations = run(sqs, queue_url, queue_arn, args, rt, bulk_ids)
        with rt.session_factory() as session:
            states: dict[str, int] = {}
            for bulk_id in bulk_ids:
                for status, n in ch.counts_by_status(session, bulk_id).items():
                    states[status.value] = states.get(status.value, 0) + n
        report(args, records, invocations, states)


def run(sqs: Any, url: str, arn: str, args: argparse.Namespace, rt: Any, bulk_ids: list[int]) -> list[dict[str, Any]]:
    """Play the event source mapping until every change of every bulk change is terminal."""
    invocations: list[dict[str, Any]] = []
    give_up = time.monotonic() + 3600
    while not all_terminal(rt, bulk_ids):
        assert time.monotonic() < give_up, "not done after an hour"
        messages = sqs.receive_message(
            QueueUrl=url,
            MaxNumberOfMessages=args.batch_size,
            WaitTimeSeconds=1,
            MessageAttributeNames=["All"],
            MessageSystemAttributeNames=["ApproximateReceiveCount"],
        ).get("Messages", [])
        if not messages:
            continue
        started = time.perf_counter()
        response = lambda_handler.handler(
            {"Records": [lambda_record(m, arn) for m in messages]}, Context(args.function_timeout)
        )
        invocations.append({"records": len(messages), "s": time.perf_counter() - started, "failed": 0})
        failed = {f["itemIdentifier"] for f in response["batchItemFailures"]}
        invocations[-1]["failed"] = len(failed)
        for message in messages:
            if message["MessageId"] not in failed:
                sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    return invocations


def all_terminal(rt: Any, bulk_ids: list[int]) -> bool:
    with rt.session_factory() as session:
        return all(
            not any(n for status, n in ch.counts_by_status(session, b).items() if not status.is_terminal)
            for b in bulk_ids
        )


def report(
    args: argparse.Namespace, records: list[dict[str, Any]], invocations: list[dict[str, Any]], states: dict[str, int]
) -> None:
    slices = [r["s"] for r in records if r["kind"] == "slice"]
    checks = [r["s"] for r in records if r["kind"] == "check round"]
    full = [i for i in invocations if i["records"] == args.batch_size]
    result = {
        "bulk_changes": args.bulk_changes,
        "devices": args.bulk_changes * args.devices,
        "latency_ms": args.latency_ms,
        "batch_size": args.batch_size,
        "records": summary([r["s"] for r in records]),
        "slice_records": summary(slices) if slices else None,
        "check_records": summary(checks) if checks else None,
        "invocations": summary([i["s"] for i in invocations]),
        "full_batch_invocations": summary([i["s"] for i in full]) if full else None,
        "records_reported": sum(i["failed"] for i in invocations),
        "changes": states,
    }
    print(f"changes by status: {states}", file=sys.stderr)
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
