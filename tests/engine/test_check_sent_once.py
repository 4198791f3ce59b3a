"""The deferred check of a round is sent once: rounds 1, 2, 3 — never 1, 2, 2, 3, 3. A check message that
arrives for a round already past is only a wake-up, and must not look like the current round's lost
wake-up (which would send that round again)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from bulkchange.engine.flow import process
from bulkchange.queue.message import BulkChangeMessage
from bulkchange.simulator import SimulatorConfig
from bulkchange.store.tables import DeviceBulkChange

from .conftest import Harness, activation_row, make_harness, new_iccid, new_imei

ROUNDS = 3


def check_harness(tmp_path: Path, **settings: Any) -> Iterator[Harness]:
    """No callbacks and an activation the carrier never completes: only the deferred check settles it."""
    config = SimulatorConfig(activation_delay_s=3600)
    yield from make_harness(
        tmp_path,
        sim_config=config,
        callbacks=False,
        activation_check_delay_s=1,
        update_device_status_retry_number=ROUNDS,
        **settings,
    )


def record_checks(h: Harness) -> list[int]:
    """The RetryNumber of every check message the engine sends from now on."""
    sent: list[int] = []
    transport = h.rt.ctx.transport
    original = transport.send

    def send(message: BulkChangeMessage, **kwargs: Any) -> str:
        if message.is_retry_new_activate_thingspace_device:
            sent.append(message.retry_number)
        return original(message, **kwargs)

    transport.send = send  # type: ignore[method-assign]
    return sent


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    yield from check_harness(tmp_path)


async def test_each_check_round_is_sent_once_on_the_embedded_queue(h: Harness) -> None:
    sent = record_checks(h)
    bulk = h.submit([activation_row(new_iccid(), new_imei()) for _ in range(2)])
    await h.run()
    assert sent == list(range(1, ROUNDS + 1))
    assert h.counts(bulk) == {"ACTIVATION_UNVERIFIED": 2}


async def stale_check_while_the_round_is_due(h: Harness) -> list[int]:
    """Round 2 is scheduled and due; a duplicate of round 1's message (SQS delivers at least once) arrives
    first. It is a wake-up; round 2 is not sent again. Returns the check messages sent meanwhile."""
    bulk = h.submit([activation_row(new_iccid(), new_imei())])
    await h.run_once()  # the slice: the activation awaits its result, round 1 is scheduled
    with h.rt.session_factory.begin() as session:
        row = session.get(DeviceBulkChange, bulk)
        assert row is not None and row.check_round == 1
        row.check_round = 2  # round 1 ran and scheduled round 2, whose message is due now
        row.next_wake_at = h.rt.ctx.clock() - timedelta(seconds=1)
    sent = record_checks(h)
    stale = BulkChangeMessage(bulk_change_id=bulk, is_retry_new_activate_thingspace_device=True, retry_number=1)
    await process(h.rt.ctx, stale)
    with h.rt.session_factory() as session:
        row = session.get(DeviceBulkChange, bulk)
        assert row is not None and row.next_wake_at is not None, "round 2's wake-up is still pending"
    return sent


async def test_a_stale_check_message_does_not_send_the_due_round_again(h: Harness) -> None:
    assert await stale_check_while_the_round_is_due(h) == []
