"""bulkchange: device bulk status changes against carrier connectivity-management APIs."""

__version__ = "0.1.0"
