"""Alembic migrations of the bulkchange schema (a package so the files ship with the wheel)."""
