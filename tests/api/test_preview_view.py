"""The preview's counts by kind: a message with its values left out, so one mistake repeated across a
file is one kind with a count, whatever the value each row has."""

from __future__ import annotations

import pytest

from bulkchange.api.preview_view import preview_view, problem_kind
from bulkchange.api.schemas import PreviewOut, RowProblemOut


@pytest.mark.parametrize(
    ("message", "kind"),
    [
        ("duplicate of row 12", "duplicate of row N"),
        (
            "Excel rewrote this number (8.91480000000000E+19); format the column as text",
            "Excel rewrote this number (N); format the column as text",
        ),
        ("must be 19 or 20 digits, got 1,234", "must be N or N digits, got N"),
        ("unknown status 'activate': did you mean \"active\"?", "unknown status …: did you mean …?"),
        ("ICCID check digit is wrong (Luhn)", "ICCID check digit is wrong (Luhn)"),
    ],
)
def test_a_kind_leaves_the_values_out(message: str, kind: str) -> None:
    assert problem_kind(message) == kind


def test_problems_are_counted_by_kind_and_column_most_first() -> None:
    problems = [
        RowProblemOut(row=2, field="ICCID", message="duplicate of row 9"),
        RowProblemOut(row=5, field="IMEI", message="must contain digits only"),
        RowProblemOut(row=7, field="ICCID", message="duplicate of row 3"),
        RowProblemOut(row=8, field="MdnZipCode", message="must contain digits only"),
        RowProblemOut(row=0, field="header", message="unknown column 'ServicePln'"),
    ]
    view = preview_view(PreviewOut(ok=False, rows=8, planned_operations={}, warnings=0, problems=problems, devices=[]))
    kinds = [(k.column, k.message, k.count, k.first_line) for k in view.message_kinds]
    assert kinds[0] == ("ICCID", "duplicate of row N", 2, 2)
    assert set(kinds[1:]) == {
        ("IMEI", "must contain digits only", 1, 5),
        ("MdnZipCode", "must contain digits only", 1, 8),
        ("header", "unknown column …", 1, 0),
    }
    assert view.kinds[0] == ("ICCID", 2)
