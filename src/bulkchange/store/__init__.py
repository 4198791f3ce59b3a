"""bulkchange.store."""
