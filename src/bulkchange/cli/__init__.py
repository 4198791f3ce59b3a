"""bulkchange.cli."""
