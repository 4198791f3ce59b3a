"""bulkchange.simulator."""
