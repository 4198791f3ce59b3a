"""What the engine needs from a queue, whichever carries the messages (embedded table or AWS SQS).

The contract is SQS's standard queue: at-least-once delivery, a per-message delay, a visibility timeout
after each receive, a receive count, and dead-lettering after too many receives. Workers are written
against this protocol so the same code runs on one laptop (``EmbeddedQueue``) and on Lambda + SQS.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from bulkchange.queue.message import BulkChangeMessage

MAX_DELAY_S = 900
"""SQS's per-message ``DelaySeconds`` maximum (15 minutes); longer waits belong in the database."""

MAX_VISIBILITY_TIMEOUT_S = 43_200
"""SQS's visibility timeout maximum (12 hours)."""


@dataclass(frozen=True)
class ReceivedMessage:
    """One delivery of a message.

    ``receipt_handle`` identifies this delivery, not the message: it is what ``delete`` and
    ``change_visibility`` take, and it stops working once the message has been delivered again.
    ``receive_count`` counts deliveries including this one (SQS ``ApproximateReceiveCount``).
    ``dead_letter_reason`` is only set on messages listed by ``EmbeddedQueue.dead_letters``.
    """

    message_id: str
    receipt_handle: str
    body: str
    attributes: dict[str, dict[str, str]]
    receive_count: int
    dead_letter_reason: str | None = None

    def message(self) -> BulkChangeMessage:
        """The bulk-change message these attributes carry (raises ``MalformedMessage`` if unreadable)."""
        return BulkChangeMessage.from_attributes(self.attributes)


@dataclass(frozen=True)
class QueueStats:
    """Counts as SQS reports them (``ApproximateNumberOfMessages*``), plus when work is next due.

    * ``visible`` — receivable now;
    * ``delayed`` — sent with a delay that has not yet elapsed, never received;
    * ``in_flight`` — received and still inside the visibility timeout;
    * ``dead_lettered`` — given up on after too many receives, waiting for an operator;
    * ``next_visible_in_s`` — ``0.0`` when something is visible, else seconds until the earliest delayed
      or in-flight message becomes visible, ``None`` when there is nothing left to deliver.
    """

    visible: int
    delayed: int
    in_flight: int
    dead_lettered: int
    next_visible_in_s: float | None


class Transport(Protocol):
    """A standard-queue transport with SQS semantics."""

    def send(self, message: BulkChangeMessage, *, delay_s: int = 0, body: str = "bulk change") -> str:
        """Enqueue ``message``, receivable after ``delay_s`` seconds; returns the message id.

        ``delay_s`` must be 0–900 (the SQS maximum), else ``ValueError``.
        """
        ...

    def receive(self, *, max_messages: int = 10, visibility_timeout_s: int | None = None) -> list[ReceivedMessage]:
        """Up to ``max_messages`` (1–10) visible messages, each hidden for the visibility timeout.

        A message not deleted before its timeout is delivered again (with a new receipt handle).
        """
        ...

    def delete(self, receipt_handle: str) -> bool:
        """Acknowledge a delivery. Returns ``False`` and does nothing if the handle is stale.

        A handle goes stale when its message has since been delivered to someone else (or dead-lettered):
        the later receiver owns it now, so an old handle must not delete it.
        """
        ...

    def change_visibility(self, receipt_handle: str, timeout_s: int) -> bool:
        """Hide the delivered message for ``timeout_s`` seconds from now (0 makes it visible at once).

        Returns ``False`` and does nothing if the handle is stale. ``timeout_s`` must be 0–43,200.
        """
        ...

    def stats(self) -> QueueStats:
        """Message counts by state and when the next message becomes visible."""
        ...
