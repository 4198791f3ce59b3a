"""A carrier's column vocabulary and what a kind of row needs, as data the caller passes to the reader.

The reader knows no carrier: the columns it accepts (with their aliases) and the columns a target status
needs come from the caller (the ThingSpace ones live with the ThingSpace row rules in the engine), so a
carrier with other fields brings its own ``Columns`` and ``Needs``.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from bulkchange.input.problems import InputProblem

# A header cell that is data, not a column name: an identifier's digits or a number Excel rewrote.
_DATA_LIKE = re.compile(r"\d{6,}|\d(?:[.,]\d+)?[eE][+-]?\d+")
_SUGGEST_CUTOFF = 0.75


def _and(names: Sequence[str]) -> str:
    """ "A", "A and B", "A, B and C"."""
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


_FOUND_MAX = 1024  # distinct column names remembered by ``Columns.find``


def norm(name: str) -> str:
    """A column name compared without case, spaces, underscores, hyphens or dots (``Service Plan`` =
    ``service_plan`` = ``ServicePlan``)."""
    return "".join(ch for ch in name if ch.isalnum()).lower()


@dataclass(frozen=True)
class Column:
    """One column: its name as a template writes it, other spellings accepted, an example value."""

    name: str
    aliases: tuple[str, ...] = ()
    example: str = ""


@dataclass(frozen=True)
class Needs:
    """What one kind of row needs: every column of ``all_of``, and at least one column of each group in
    ``one_of``. ``what`` names the kind for people ("activations")."""

    what: str
    all_of: tuple[str, ...] = ()
    one_of: tuple[tuple[str, ...], ...] = ()

    def describe(self) -> str:
        """ "activations need ServicePlan and MdnZipCode, and IMEI or SkuNumber"."""
        parts = [_and(self.all_of)] if self.all_of else []
        parts += [" or ".join(group) for group in self.one_of]
        return f"{self.what} need {', and '.join(parts)}" if parts else f"{self.what} need no other column"

    def template_columns(self) -> list[str]:
        """The columns a template for this kind holds: all of ``all_of`` and the first of each group."""
        return [*self.all_of, *(group[0] for group in self.one_of if group)]


class Columns:
    """The columns a carrier's rows may have. Names match case-insensitively, ignoring separators."""

    def __init__(self, columns: Iterable[Column]) -> None:
        self.columns = tuple(columns)
        self._by_norm: dict[str, Column] = {}
        for column in self.columns:
            for spelling in (column.name, *column.aliases):
                self._by_norm[norm(spelling)] = column
        # By the name as written: a file's every row asks again for the same few header names.
        self._found: dict[str, Column | None] = {}

    def find(self, name: str) -> Column | None:
        """The column ``name`` means, or None when it is none of ours."""
        try:
            return self._found[name]
        except KeyError:
            if len(self._found) >= _FOUND_MAX:  # names from hostile input must not grow it without bound
                self._found.clear()
            found = self._found[name] = self._by_norm.get(norm(name))
            return found

    def get(self, name: str) -> Column:
        column = self.find(name)
        if column is None:
            raise KeyError(name)
        return column

    def suggest(self, name: str) -> str | None:
        """The column a mistyped ``name`` probably means (``ServicePln`` → ``ServicePlan``), or None."""
        close = difflib.get_close_matches(norm(name), list(self._by_norm), n=1, cutoff=_SUGGEST_CUTOFF)
        return self._by_norm[close[0]].name if close else None

    def unknown(self, name: str, line: int) -> InputProblem:
        """The problem of a column that is none of ours, with the one it probably means."""
        guess = self.suggest(name)
        if guess:
            return InputProblem(line, name, f"unknown column {name!r}; did you mean {guess!r}?")
        names = ", ".join(c.name for c in self.columns)
        return InputProblem(line, name, f"unknown column {name!r}: remove it (the columns read are: {names})")

    def header_problems(self, header: Sequence[str], *, line: int = 1) -> list[InputProblem]:
        """No header at all, columns that are none of ours, and a column named twice."""
        named = [h for h in header if h.strip()]
        if not named:
            return [InputProblem(line, "header", f"no header row: line {line} is empty; {self._header_hint()}")]
        if not any(self.find(h) for h in named) and any(_DATA_LIKE.fullmatch(h.strip()) for h in named):
            first = next(h for h in named if _DATA_LIKE.fullmatch(h.strip()))
            why = f"no header row: line {line} holds data ({first}); {self._header_hint()}"
            return [InputProblem(line, "header", why)]
        problems: list[InputProblem] = []
        seen: dict[str, str] = {}
        for name in named:
            column = self.find(name)
            if column is None:
                problems.append(self.unknown(name, line))
            elif column.name in seen:
                why = f"column {column.name} appears twice ({seen[column.name]!r} and {name!r})"
                problems.append(InputProblem(line, name, why))
            else:
                seen[column.name] = name
        return problems

    def missing(self, header: Iterable[str], needs: Needs, *, line: int = 1) -> list[InputProblem]:
        """One problem per needed column (or group of alternatives) the header lacks."""
        present = {column.name for column in map(self.find, header) if column is not None}
        wanted = [(name,) for name in needs.all_of] + list(needs.one_of)
        return [
            InputProblem(line, " or ".join(group), f"no {' or '.join(group)} column: {needs.describe()}")
            for group in wanted
            if not present.intersection(group)
        ]

    def _header_hint(self) -> str:
        example = ",".join(c.name for c in self.columns[:4])
        return f"the first line must name the columns, e.g. {example}"
