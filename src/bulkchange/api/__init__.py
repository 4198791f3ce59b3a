"""bulkchange.api."""
