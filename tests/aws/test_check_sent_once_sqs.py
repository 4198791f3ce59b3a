"""The deferred check of a round is sent once on SQS too (moto server on loopback): RetryNumber 1, 2, 3."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bulkchange.queue.sqs import SqsQueue
from engine.conftest import Harness, activation_row, new_iccid, new_imei
from engine.test_check_sent_once import ROUNDS, check_harness, record_checks, stale_check_while_the_round_is_due

from .conftest import Queue


@pytest.fixture
def h(tmp_path: Path, queue: Queue) -> Iterator[Harness]:
    yield from check_harness(tmp_path, queue_url=queue.url, sqs_wait_time_s=1)


async def test_each_check_round_is_sent_once_on_sqs(h: Harness) -> None:
    assert isinstance(h.rt.transport, SqsQueue)
    sent = record_checks(h)
    bulk = h.submit([activation_row(new_iccid(), new_imei()) for _ in range(2)])
    await h.run()
    assert sent == list(range(1, ROUNDS + 1))
    assert h.counts(bulk) == {"ACTIVATION_UNVERIFIED": 2}


async def test_a_stale_check_message_does_not_send_the_due_round_again_on_sqs(h: Harness) -> None:
    assert isinstance(h.rt.transport, SqsQueue)
    assert await stale_check_while_the_round_is_due(h) == []
