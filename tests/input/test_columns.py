"""Column names as a file writes them: matched without case or separators, remembered per spelling, and
never an unbounded memory of the names a hostile file can invent."""

from __future__ import annotations

from bulkchange.engine.row_rules import COLUMNS
from bulkchange.input.columns import Column, Columns


def test_every_spelling_of_a_column_finds_it_again_and_again() -> None:
    columns = Columns([Column("ServicePlan", aliases=("Plan",), example="M2M"), Column("ICCID", example="8914")])
    for _ in range(3):  # the second and later lookups come from what was remembered
        assert [columns.find(n) for n in ("Service Plan", "service_plan", "SERVICE-PLAN", "plan")] == [
            columns.get("ServicePlan")
        ] * 4
        assert columns.find("I.C.C.I.D") is columns.get("ICCID")
        assert columns.find("Rate Plan") is None


def test_names_nobody_uses_do_not_accumulate() -> None:
    for n in range(20_000):
        assert COLUMNS.find(f"made-up column {n}") is None
    assert COLUMNS.find("iccid") is COLUMNS.get("ICCID")
    assert len(COLUMNS._found) <= 1024
