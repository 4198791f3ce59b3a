"""Rules about single cells that every entry point shares: spreadsheet formulas and cell values as text."""

from __future__ import annotations

import re
from datetime import date, datetime, time
from typing import Any

# A cell a spreadsheet runs as a formula when the text is opened in one (CSV injection): refused on input,
# escaped on export, by this one test.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
# Integral floats below this are exact in a double, so an xlsx number cell of an identifier keeps its digits.
_EXACT_INTEGER = 2**53


def is_formula(text: str) -> bool:
    """True when a spreadsheet would run ``text`` as a formula: it starts (after spaces) with ``=``, ``+``,
    ``-``, ``@``, a tab or a carriage return, and is not a plain number (``-5`` and ``+1e3`` are numbers)."""
    stripped = text.lstrip(" ")
    return stripped.startswith(_FORMULA_START) and _NUMBER.fullmatch(stripped) is None


def formula_cells(cells: dict[str, Any]) -> list[tuple[str, str]]:
    """(column, message) for every text cell of a row that looks like a formula."""
    found = []
    for column, value in cells.items():
        if isinstance(value, str) and is_formula(value):
            first = value.lstrip(" ")[0]
            found.append((str(column), f"looks like a spreadsheet formula (starts with {first!r}); remove it"))
    return found


def unclean_text(value: Any) -> str | None:
    """Why ``value`` (or a string inside it) cannot be stored: a NUL character or a lone surrogate, which
    no database keeps. JSON can carry both (``\\u0000``, ``\\ud800``); CSV and xlsx text cannot."""
    if isinstance(value, str):
        if "\x00" in value:
            return "text must not contain NUL characters"
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return "text must be valid Unicode (a lone surrogate)"
        return None
    if isinstance(value, dict):
        return next((why for item in value.items() for part in item if (why := unclean_text(part))), None)
    if isinstance(value, list):
        return next((why for item in value if (why := unclean_text(item))), None)
    return None


def printable(name: str) -> str:
    """A column name safe to show and to send back in JSON (``repr`` when it holds NUL or a surrogate)."""
    return name if unclean_text(name) is None else ascii(name)


def cell_text(value: Any) -> str | None:
    """A spreadsheet cell's value as the text a CSV export of it would hold (None for an empty cell).

    Whole numbers keep their digits (``3.59876100000001E14`` stored as a number reads ``359876100000001``);
    numbers too long for a double are written the way Excel shows them (``8.9148E+19``), which the identifier
    checks recognise as a number Excel rewrote.
    """
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value.is_integer() and abs(value) < _EXACT_INTEGER:
            return str(int(value))
        return f"{value:.15G}"
    if isinstance(value, datetime):
        return value.date().isoformat() if value.time() == time(0) else value.isoformat()
    if isinstance(value, date | time):
        return value.isoformat()
    return str(value)
