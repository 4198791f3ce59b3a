"""bulkchange.carrier."""
