"""The worker loop and the callback applier wait out a lost database instead of dying of it.

The outage is played by the transport or the processor raising what SQLAlchemy raises when the server is
gone (an ``OperationalError`` without a SQLSTATE: the client could not connect); the real thing — a
PostgreSQL cluster stopped under two worker processes — is in tests/multiworker/test_database_outage.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import structlog
from sqlalchemy import exc as sa_exc

from bulkchange.engine.callbacks import applier as applier_module
from bulkchange.engine.callbacks.applier import CallbackApplier
from bulkchange.engine.worker import run_worker
from bulkchange.queue.base import ReceivedMessage, Transport

from .conftest import Harness, activation_row, make_harness, new_iccid, new_imei, success_callback

OUTAGE_STARTED = "database unavailable; waiting for it to come back"
OUTAGE_ENDED = "database available again"


def connection_refused() -> sa_exc.OperationalError:
    return sa_exc.OperationalError(
        "SELECT 1", {}, psycopg.OperationalError('connection failed: connection to server at "127.0.0.1" refused')
    )


class FlakyQueue:
    """The harness's queue, with a database outage for the next ``down_receives`` receives."""

    def __init__(self, inner: Transport, down_receives: int) -> None:
        self.inner = inner
        self.down_receives = down_receives
        self.deleted: list[str] = []
        self.made_visible: list[str] = []

    def send(self, message: Any, *, delay_s: int = 0, body: str = "bulk change") -> str:
        return self.inner.send(message, delay_s=delay_s, body=body)

    def receive(self, *, max_messages: int = 10, visibility_timeout_s: int | None = None) -> list[ReceivedMessage]:
        if self.down_receives > 0:
            self.down_receives -= 1
            raise connection_refused()
        return self.inner.receive(max_messages=max_messages, visibility_timeout_s=visibility_timeout_s)

    def delete(self, receipt_handle: str) -> bool:
        self.deleted.append(receipt_handle)
        return self.inner.delete(receipt_handle)

    def change_visibility(self, receipt_handle: str, timeout_s: int) -> bool:
        if timeout_s == 0:
            self.made_visible.append(receipt_handle)
        return self.inner.change_visibility(receipt_handle, timeout_s)

    def stats(self) -> Any:
        return self.inner.stats()


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    """The engine harness, retrying a lost database every few milliseconds."""
    yield from make_harness(tmp_path, outage_retry_base_s=0.01, outage_retry_cap_s=0.05)


@pytest.fixture
def polling_harness(tmp_path: Path) -> Iterator[Harness]:
    yield from make_harness(tmp_path, callbacks=False, outage_retry_base_s=0.01, outage_retry_cap_s=0.05)


def _outage_lines(logs: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    return [e for e in logs if e["event"] == OUTAGE_STARTED], [e for e in logs if e["event"] == OUTAGE_ENDED]


# The outage below is the queue's view only: a callback receiver in the same process (the harness's) would
# still reach the database, end the process's outage on its next pass and so start a second one — when its
# pass falls inside the outage, which a loaded machine makes likely. These tests run without one (polling).


async def test_the_worker_waits_out_a_lost_database_logs_it_once_and_finishes(polling_harness: Harness) -> None:
    h = polling_harness
    iccid = new_iccid()
    bulk = h.submit([activation_row(iccid, new_imei())])
    flaky = FlakyQueue(h.rt.transport, down_receives=5)
    h.rt.engine.ctx.transport = flaky
    with structlog.testing.capture_logs() as logs:
        await asyncio.wait_for(run_worker(h.rt.engine, until_idle=True, poll_s=0.05), timeout=60)
    started, ended = _outage_lines(logs)
    assert len(started) == 1 and started[0]["log_level"] == "warning"
    assert len(ended) == 1 and ended[0]["log_level"] == "info" and ended[0]["failed_attempts"] == 5
    assert h.counts(bulk) == {"PROCESSED": 1}
    assert h.actions(iccid) == {"add": 1, "activate": 1}
    assert not h.rt.engine.ctx.db_outage.active


async def test_a_message_cut_off_by_the_outage_is_not_deleted_and_comes_back_at_once(
    polling_harness: Harness,
) -> None:
    h = polling_harness
    iccid = new_iccid()
    bulk = h.submit([activation_row(iccid, new_imei())])
    flaky = FlakyQueue(h.rt.transport, down_receives=0)
    h.rt.engine.ctx.transport = flaky
    processor = h.rt.engine
    real_handle = processor.handle
    cut: list[str] = []

    async def handle(received: ReceivedMessage) -> None:
        if not cut:  # the first message meets the outage: the database goes away while it is processed
            cut.append(received.receipt_handle)
            raise connection_refused()
        await real_handle(received)

    processor.handle = handle  # type: ignore[method-assign]
    with structlog.testing.capture_logs() as logs:
        await asyncio.wait_for(run_worker(processor, until_idle=True, poll_s=0.05), timeout=60)
    assert cut and cut[0] not in flaky.deleted  # never acknowledged: its work was not committed
    assert flaky.made_visible == cut  # given back as soon as the database answered, not after 600 s
    assert not any(e["event"] == "message processing failed; it will be redelivered" for e in logs)
    assert [len(lines) for lines in _outage_lines(logs)] == [1, 1]
    assert h.counts(bulk) == {"PROCESSED": 1}
    assert h.actions(iccid) == {"add": 1, "activate": 1}


async def test_the_callback_applier_waits_out_a_lost_database(
    polling_harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = polling_harness
    iccid = new_iccid()
    h.seed_device(iccid, "active")
    bulk = h.submit([{"ICCID": iccid}], status="suspend")
    await h.run_once()  # sent; no listener, so the change awaits its result
    [change] = h.changes(bulk)
    processor = h.rt.engine
    real_apply = applier_module.apply_pass
    failures = {"left": 4}

    def apply(ctx: Any, after_id: int, **kwargs: Any) -> Any:
        if failures["left"]:
            failures["left"] -= 1
            raise connection_refused()
        return real_apply(ctx, after_id, **kwargs)

    monkeypatch.setattr(applier_module, "apply_pass", apply)
    applier = CallbackApplier(processor.ctx, idle_poll_s=0.05, full_pass_s=0.1, gather_s=0.0)
    with structlog.testing.capture_logs() as logs:
        await applier.start()
        try:
            assert processor.ingest_callback(
                success_callback(change.carrier_request_id or "", iccid, action="suspend", state="suspend"),
                service_provider_id=h.provider_id,
            )
            applier.notify()
            for _ in range(400):  # a deadline, not a fixed sleep
                outage = getattr(processor.ctx, "db_outage", None)
                if h.changes(bulk)[0].status == "PROCESSED" and not (outage and outage.active):
                    break
                await asyncio.sleep(0.025)
        finally:
            await applier.stop()
    assert h.changes(bulk)[0].status == "PROCESSED"
    assert failures["left"] == 0
    assert [len(lines) for lines in _outage_lines(logs)] == [1, 1]
    assert not any(e["event"] == "applying stored callbacks failed; they will be tried again" for e in logs)
