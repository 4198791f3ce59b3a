"""What the reader says about a file: a problem at a line and column, or a refusal of the whole file."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class InputProblem:
    """One thing wrong with the input, where a person would look for it.

    ``line`` is the spreadsheet's line number (the header is line 1, so the first data row is line 2; for
    JSON, the object's position in the list, from 1); 0 means the file as a whole. ``column`` is the
    column as written in the file, or ``file`` / ``header`` / ``row``.
    """

    line: int
    column: str
    message: str


class InputRefused(ValueError):
    """The file cannot be read as rows: not text in an encoding we read, not CSV / JSON / xlsx, NUL bytes,
    or over a limit. Raised when the reader meets the problem, which may be after rows were yielded."""

    def __init__(self, message: str, *, line: int = 0, column: str = "file") -> None:
        super().__init__(message if line == 0 else f"line {line}: {message}")
        self.problem = InputProblem(line, column, message)


class InputTooLarge(InputRefused):
    """Over ``max_bytes`` or ``max_rows``: the file must be split."""
