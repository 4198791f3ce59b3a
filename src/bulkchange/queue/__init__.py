"""bulkchange.queue: the wake-up message and the queues that carry it (embedded table, SQS)."""

from bulkchange.queue.base import QueueStats, ReceivedMessage, Transport
from bulkchange.queue.embedded import EmbeddedQueue
from bulkchange.queue.message import BulkChangeMessage, MalformedMessage

__all__ = [
    "BulkChangeMessage",
    "EmbeddedQueue",
    "MalformedMessage",
    "QueueStats",
    "ReceivedMessage",
    "Transport",
]
