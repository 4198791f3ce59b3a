"""bulkchange.engine."""
