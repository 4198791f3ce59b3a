"""How the REST routes turn refusals into problem answers (``application/problem+json``): refused rows
(422, every problem listed), unclean text (422), an unreadable or too large file (400 / 413) and conflicts
(409)."""

from __future__ import annotations

from typing import Any

from bulkchange.api import problems, queries
from bulkchange.api.problems import ApiProblem
from bulkchange.engine.submit import SubmissionRefused
from bulkchange.input import InputRefused, InputTooLarge


class Unclean(ValueError):
    """Text no database stores: a NUL character or a lone surrogate."""


def check_text(value: Any) -> None:
    """Refuse NUL characters and lone surrogates anywhere (no database stores them)."""
    if isinstance(value, str):
        if "\x00" in value:
            raise Unclean("text must not contain NUL characters")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise Unclean("text must be valid Unicode") from exc
    elif isinstance(value, dict):
        for k, v in value.items():
            check_text(k)
            check_text(v)
    elif isinstance(value, list):
        for v in value:
            check_text(v)


def refused(exc: SubmissionRefused) -> ApiProblem:
    """422: every row problem in ``errors`` (row and field each), nothing created."""
    report = exc.report
    errors = [e.model_dump(mode="json") for e in queries.problems_out(report.problems)]
    return ApiProblem(
        422, str(exc), type=problems.REFUSED, errors=errors, rows=report.rows, errors_omitted=report.omitted
    )


def not_clean(exc: Unclean) -> ApiProblem:
    return ApiProblem(422, str(exc), type=problems.REFUSED, errors=[{"row": 0, "field": "rows", "message": str(exc)}])


def unreadable(exc: InputRefused) -> ApiProblem:
    """A file that cannot be read as rows: 413 over a limit, else 400, the line named in the detail."""
    where = [{"row": exc.problem.line, "field": exc.problem.column, "message": exc.problem.message}]
    if isinstance(exc, InputTooLarge):
        return ApiProblem(413, str(exc), type=problems.TOO_LARGE, errors=where)
    return ApiProblem(400, str(exc), type=problems.UNREADABLE_FILE, errors=where)


def conflict(exc: Exception) -> ApiProblem:
    return ApiProblem(409, str(exc), type=problems.CONFLICT)
