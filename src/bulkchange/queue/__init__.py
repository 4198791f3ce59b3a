"""bulkchange.queue: the wake-up message and what a queue that carries it must do (SQS semantics).

The embedded queue (a table) is durable work like any other: ``bulkchange.jobs.embedded_queue``."""

from bulkchange.queue.base import QueueStats, ReceivedMessage, Transport
from bulkchange.queue.message import BulkChangeMessage, MalformedMessage

__all__ = [
    "BulkChangeMessage",
    "MalformedMessage",
    "QueueStats",
    "ReceivedMessage",
    "Transport",
]
