"""bulkchange.queue."""
