"""bulkchange.domain."""
