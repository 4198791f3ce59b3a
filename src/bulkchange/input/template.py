"""A CSV template: a header of the columns a kind of row needs and one example row."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence

from bulkchange.input.columns import Columns


def template_csv(columns: Columns, names: Sequence[str]) -> str:
    """``names`` (columns of ``columns``, in the vocabulary's order) as a header, and a row of their example
    values (CRLF line ends, as Excel writes them)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    wanted = sorted((columns.get(name) for name in names), key=columns.columns.index)
    writer.writerow([c.name for c in wanted])
    writer.writerow([c.example for c in wanted])
    return buffer.getvalue()
