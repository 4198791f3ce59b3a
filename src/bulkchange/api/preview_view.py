"""What the dashboard's preview shows of a dry run, however large the file: problems first, counted by column
and by kind (what is wrong, whatever the value: "duplicate of row 12" and "duplicate of row 40" are one
kind), the rows with problems (then with warnings) up to a bound, and the rows
without either only counted — a 10,000-row file never draws 10,000 "OK" rows. The full list of problems
is the downloadable problem report (``problem_report_csv``)."""

from __future__ import annotations

import csv
import io
import re
from collections import Counter
from dataclasses import dataclass

from bulkchange.api.schemas import PreviewOut, PreviewRowOut, RowProblemOut

SHOWN_PROBLEM_ROWS = 500
SHOWN_WARNING_ROWS = 200
LISTED_OK_ROWS = 100
"""Rows without problem or warning are listed only when there are at most this many (a small file)."""


@dataclass(frozen=True)
class PreviewView:
    problem_rows: list[PreviewRowOut]
    problem_rows_total: int
    warning_rows: list[PreviewRowOut]
    warning_rows_total: int
    ok_rows: int
    ok_listed: list[PreviewRowOut]
    kinds: list[tuple[str, int]]
    """Problems counted by column (or ``file`` / ``status`` for the whole file), most first."""
    message_kinds: list[ProblemKind]
    """Problems counted by kind of message, most first."""


@dataclass(frozen=True)
class ProblemKind:
    column: str
    message: str
    """The message with its values left out (``problem_kind``)."""
    count: int
    first_line: int
    """The first line with a problem of this kind (0: the whole file)."""


_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*(?:E[+-]?\d+)?")


def problem_kind(message: str) -> str:
    """A problem message with the values it quotes or counts replaced by ``…`` / ``N``: what it says is
    wrong, not about which value."""
    return _NUMBER.sub("N", _QUOTED.sub("…", message)).strip()


def _message_kinds(problems: list[RowProblemOut]) -> list[ProblemKind]:
    counted: Counter[tuple[str, str]] = Counter()
    first: dict[tuple[str, str], int] = {}
    for p in problems:
        key = (p.field, problem_kind(p.message))
        counted[key] += 1
        first.setdefault(key, p.row)
    return [ProblemKind(column, message, n, first[column, message]) for (column, message), n in counted.most_common()]


def preview_view(out: PreviewOut) -> PreviewView:
    bad = [d for d in out.devices if not d.ok]
    warned = [d for d in out.devices if d.ok and d.warnings]
    fine = [d for d in out.devices if d.ok and not d.warnings]
    kinds = Counter(p.field for p in out.problems)
    return PreviewView(
        problem_rows=bad[:SHOWN_PROBLEM_ROWS],
        problem_rows_total=len(bad),
        warning_rows=warned[:SHOWN_WARNING_ROWS],
        warning_rows_total=len(warned),
        ok_rows=len(fine),
        ok_listed=fine if len(fine) <= LISTED_OK_ROWS else [],
        kinds=kinds.most_common(),
        message_kinds=_message_kinds(out.problems),
    )


def problem_report_csv(problems: list[RowProblemOut]) -> str:
    """Every problem of the file, one line each, as the spreadsheet numbers its lines."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["Line", "Column", "ICCID", "Problem"])
    for p in problems:
        writer.writerow([p.row, p.field, _safe(p.iccid or ""), _safe(p.message)])
    return buffer.getvalue()


def _safe(text: str) -> str:
    """A cell a spreadsheet will not run as a formula."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text
