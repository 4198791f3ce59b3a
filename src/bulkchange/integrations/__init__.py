"""bulkchange.integrations."""
