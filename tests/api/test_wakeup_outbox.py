"""A committed bulk change is never answered with a 500, and its wake-up is never stranded.

With the queue unreachable, ``POST /api/v1/bulk-changes`` used to commit the bulk change, answer 500,
release the Idempotency-Key, and leave the change until a worker started again (the lost-wake-up sweep runs
at start). Now the wake-up is an outbox row written with the bulk change: the client gets its 201 with a
warning, the key stays bound, and the worker already running relays the wake-up as soon as the queue
answers. Played twice, over real HTTP with the real worker inside the application: with SQS (moto's server,
started on the queue's port only once the bulk change was created) and with the embedded queue (a
transport whose send fails until the test lets it work).
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer
from sqlalchemy import select

from bulkchange.engine.outbox import wakeup_pending
from bulkchange.queue.base import ReceivedMessage, Transport
from bulkchange.store.tables import OutboxMessage

from .conftest import Api, activation_row, make_api

QUICK_RETRIES = {"outage_retry_base_s": 0.05, "outage_retry_cap_s": 0.5}


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"{what}: not within {timeout_s}s")


def _pending(api: Api, bulk_id: int) -> bool:
    with api.rt.session_factory() as session:
        return wakeup_pending(session, bulk_id)


def _attempts(api: Api, bulk_id: int) -> int:
    with api.rt.session_factory() as session:
        return int(
            session.scalar(select(OutboxMessage.attempt_count).where(OutboxMessage.bulk_change_id == bulk_id)) or 0
        )


def _attempts_reach(api: Api, bulk_id: int, n: int) -> Callable[[], bool]:
    return lambda: _attempts(api, bulk_id) >= n


def _created_while_queue_down(api: Api) -> int:
    """Submit with an Idempotency-Key while the queue is down: 201 with the warning; the key stays bound."""
    rows = [activation_row() for _ in range(3)]
    first = api.create(rows, headers={"Idempotency-Key": "outbox-1"})
    assert first.status_code == 201, first.text
    body = first.json()
    assert first.headers["Wake-Up-Pending"] == "true"
    assert body["warnings"] and "wake-up" in body["warnings"][0]
    again = api.create(rows, headers={"Idempotency-Key": "outbox-1"})  # a client retrying after a timeout
    assert again.status_code == 201 and again.headers["Idempotent-Replayed"] == "true", again.text
    assert again.json()["id"] == body["id"]
    assert api.http.get(f"/api/v1/bulk-changes/{body['id']}").json()["status"] == "NEW"
    return int(body["id"])


@pytest.fixture
def sqs_down(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """An SQS endpoint on a free port where nothing listens yet (``start`` brings moto's server up there)."""
    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_CONFIG_FILE", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    return {"port": port, "endpoint": endpoint, "queue_url": f"{endpoint}/123456789012/bulk-outbox"}


def test_sqs_unreachable_201_with_warning_then_the_running_worker_relays_the_wake_up(
    tmp_path: Path, sqs_down: dict[str, Any]
) -> None:
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server: ThreadedMotoServer | None = None
    try:
        for api in make_api(
            tmp_path,
            queue_url=sqs_down["queue_url"],
            aws_endpoint_url=sqs_down["endpoint"],
            sqs_wait_time_s=1,
            **QUICK_RETRIES,
        ):
            bulk_id = _created_while_queue_down(api)
            assert _pending(api, bulk_id)
            # The queue comes back (same URL); the worker running in the application all along relays the
            # wake-up by itself — nobody restarts anything.
            server = ThreadedMotoServer(ip_address="127.0.0.1", port=sqs_down["port"], verbose=False)
            server.start()
            boto3.client("sqs", endpoint_url=sqs_down["endpoint"]).create_queue(QueueName="bulk-outbox")
            done = api.wait_processed(bulk_id, timeout_s=60)
            assert done["counts"] == {"PROCESSED": 3}
            assert not _pending(api, bulk_id)
            for iccid in (c["iccid"] for c in api.http.get(f"/api/v1/bulk-changes/{bulk_id}/changes").json()["items"]):
                assert dict(api.sim.counters.actions[iccid]) == {"add": 1, "activate": 1}
    finally:
        if server is not None:
            server.stop()


class SwitchableQueue:
    """The embedded queue, whose ``send`` fails (as an unreachable queue would) while ``down``."""

    def __init__(self, inner: Transport) -> None:
        self.inner = inner
        self.down = True

    def send(self, message: Any, *, delay_s: int = 0, body: str = "bulk change") -> str:
        if self.down:
            raise ConnectionError("queue unreachable")
        return self.inner.send(message, delay_s=delay_s, body=body)

    def receive(self, *, max_messages: int = 10, visibility_timeout_s: int | None = None) -> list[ReceivedMessage]:
        return self.inner.receive(max_messages=max_messages, visibility_timeout_s=visibility_timeout_s)

    def delete(self, receipt_handle: str) -> bool:
        return self.inner.delete(receipt_handle)

    def change_visibility(self, receipt_handle: str, timeout_s: int) -> bool:
        return self.inner.change_visibility(receipt_handle, timeout_s)

    def stats(self) -> Any:
        return self.inner.stats()


def test_embedded_queue_refusing_201_with_warning_then_the_running_worker_relays_the_wake_up(
    tmp_path: Path,
) -> None:
    for api in make_api(tmp_path, **QUICK_RETRIES):
        queue = SwitchableQueue(api.rt.transport)
        api.rt.transport = queue  # what the API sends with
        api.rt.engine.ctx.transport = queue  # what the worker's relay sends with
        bulk_id = _created_while_queue_down(api)
        # While the queue refuses, the running worker keeps trying (with backoff) and nothing is lost.
        _wait(_attempts_reach(api, bulk_id, 3), 30, "the worker retries the wake-up")
        assert _pending(api, bulk_id)
        assert api.http.get(f"/api/v1/bulk-changes/{bulk_id}").json()["status"] == "NEW"
        queue.down = False  # the queue is back: the wake-up goes out within the backoff, not at a restart
        done = api.wait_processed(bulk_id, timeout_s=30)
        assert done["counts"] == {"PROCESSED": 3}
        assert not _pending(api, bulk_id)
