"""Device identifier validation: ICCID and IMEI with their Luhn check digits.

A row that cannot succeed must be refused at submit time (decisions.md), so these checks are strict and
their messages name what is wrong.
"""

from __future__ import annotations

import random
import re

# A number as a spreadsheet shows it once it no longer fits its column: 8.91480000000000E+19, 8.9148e+19.
_EXCEL_NUMBER = re.compile(r"\d(?:[.,]\d+)?[eE]\+?\d+")
_EXCEL_REWROTE = "Excel rewrote this number ({value}); format the column as text and enter the {what}s again"


def _ascii_digits(value: str) -> bool:
    """Only 0-9: ``str.isdigit`` also accepts other scripts' digits and superscripts ('²', '٣')."""
    return bool(value) and value.isascii() and value.isdigit()


def luhn_valid(digits: str) -> bool:
    """True when ``digits`` (all ASCII decimal) passes the Luhn mod-10 check."""
    if not _ascii_digits(digits):
        return False
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char)
        if index % 2 == 1:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def luhn_check_digit(partial: str) -> str:
    """The digit that makes ``partial + digit`` Luhn-valid (for generating test identifiers)."""
    for candidate in "0123456789":
        if luhn_valid(partial + candidate):
            return candidate
    raise ValueError(f"not a decimal string: {partial!r}")  # pragma: no cover - unreachable for digits


def random_luhn_number(prefix: str, length: int, rng: random.Random) -> str:
    """A made-up identifier of ``length`` digits: ``prefix``, random digits, a Luhn check digit last (an ICCID
    or IMEI for a demo's devices)."""
    body = prefix + "".join(rng.choice("0123456789") for _ in range(length - len(prefix) - 1))
    return body + luhn_check_digit(body)


def iccid_problem(value: str) -> str | None:
    """Why ``value`` is not a valid ICCID, or None. ICCIDs are 19–20 digits, start with 89, Luhn-checked."""
    if not value:
        return "ICCID is required"
    if _EXCEL_NUMBER.fullmatch(value):
        return _EXCEL_REWROTE.format(value=value, what="ICCID")
    if not _ascii_digits(value):
        return "ICCID must contain digits only"
    if not 19 <= len(value) <= 20:
        return f"ICCID must be 19 or 20 digits (got {len(value)})"
    if not value.startswith("89"):
        return "ICCID must start with 89 (telecom industry identifier)"
    if not luhn_valid(value):
        return "ICCID check digit is wrong (Luhn)"
    return None


def imei_problem(value: str) -> str | None:
    """Why ``value`` is not a valid IMEI, or None. IMEIs are 15 digits with a Luhn check digit.

    A shorter number that is a valid IMEI once its leading zeros are put back is one a spreadsheet stored as
    a number: said so, rather than "must be 15 digits".
    """
    if not value:
        return "IMEI is required"
    if _EXCEL_NUMBER.fullmatch(value):
        return _EXCEL_REWROTE.format(value=value, what="IMEI")
    if not _ascii_digits(value):
        return "IMEI must contain digits only"
    if len(value) < 15 and luhn_valid(value.zfill(15)):
        return (
            f"this IMEI lost its leading zero(s) ({value} is {value.zfill(15)} with the zeros): Excel stored it as a "
            "number; format the column as text and enter the IMEIs again"
        )
    if len(value) != 15:
        return f"IMEI must be 15 digits (got {len(value)})"
    if not luhn_valid(value):
        return "IMEI check digit is wrong (Luhn)"
    return None
