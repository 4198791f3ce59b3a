"""Errors that end an attempt at a whole bulk change rather than one device's change."""

from __future__ import annotations


class BulkFailure(Exception):
    """A bulk-level failure — no carrier account, credentials refused or unreadable, writes disabled: the bulk
    change goes ERROR with this one-line reason and its unfinished changes stay resumable."""
