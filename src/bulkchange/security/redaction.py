"""The one redaction layer: every log line (structlog processor), every log row (``engine.logbook``), the
webhook documents built from them and the dashboard / API that show them pass through ``redact``.

Two nets, both always applied:

* **by shape** — JSON / dict / form / header fields whose name says secret (``password``,
  ``client_secret``, ``access_token``, ``sessionToken``, ``Authorization``, ``VZ-M2M-Token``,
  ``Ocp-Apim-Subscription-Key``, ``X-API-Key`` …), ``Bearer`` / ``Basic`` credentials and bulkchange
  API keys (``bck_…``);
* **by value** — every secret this process has handled (each credential decrypted by
  ``security.crypto.reveal``, the configured callback password and webhook secret, carrier tokens passed
  to ``register_secret``) is replaced wherever it appears, whatever surrounds it.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping, MutableMapping
from typing import Any

MASK = "***"
MIN_SECRET_LENGTH = 6
"""Shorter values are not registered (masking every "abc" in every text would hide more than secrets)."""

_NAMES = (
    r"password|passwd|pwd|client_?secret|secret|access_?token|refresh_?token|id_?token|session_?token|token|"
    r"authorization|vz-m2m-token|ocp-apim-subscription-key|subscription_?key|x-api-key|api_?key|webhook_?secret"
)
# "name": "value"  /  'name': 'value'  (JSON and Python reprs)
_QUOTED_FIELD = re.compile(rf"""(["'](?:{_NAMES})["']\s*:\s*)(["'])(?:\\.|(?!\2).)*\2""", re.IGNORECASE)
# name=value in a form body or a query string
_FORM_FIELD = re.compile(rf"(\b(?:{_NAMES})=)[^&\s\"']+", re.IGNORECASE)
# Header lines: "VZ-M2M-Token: value"
_HEADER = re.compile(
    r"(\b(?:vz-m2m-token|x-api-key|ocp-apim-subscription-key|cookie|set-cookie)\s*:\s*)[^\r\n\"',}]+",
    re.IGNORECASE,
)
_BEARER = re.compile(r"\b(Bearer|Basic)\s+[A-Za-z0-9._~+/=-]+")
_API_KEY = re.compile(r"\bbck_[A-Za-z0-9_-]{16,}")
# What each pattern needs somewhere in the text, case-insensitively: every alternative of _NAMES holds one
# of _NAME_HINTS, every header name one of _HEADER_HINTS. A sub runs only when its hint is there, so the
# common text — a device's request, the carrier's 2,000-device answer (whose "key" fields name nothing
# secret) — costs a few substring searches, not five regex passes (0.1 s over a 0.7 MB answer).
_NAME_HINTS = ("pass", "pwd", "secret", "token", "authorization", "subscription", "api-key", "api_key", "apikey")
_HEADER_HINTS = ("token", "api-key", "subscription", "cookie")
# The only characters outside ASCII that a case-insensitive regex matches to an ASCII character (Python's
# ``re`` folds case per character: İ and ı match i, ſ matches s, the Kelvin sign matches k), and the only ones
# whose ``str.lower`` holds an ASCII character (İ, the Kelvin sign); ``tests/security/test_redaction.py``
# checks this over every code point.
_FOLDS_TO_ASCII = (("\u0130", "i"), ("\u0131", "i"), ("\u017f", "s"), ("\u212a", "k"))


def folded(text: str) -> str:
    """``text`` lowercased so that a lowercase ASCII word is a substring of it exactly when a case-insensitive
    regex of that word finds it in ``text``.

    For an ASCII text that is ``lower()``; any other text first has the four characters that fold to ASCII
    replaced by their ASCII letter (no other non-ASCII character can match or become an ASCII one). A plain
    substring search is much cheaper than the regex: for a carrier's 2,000-device answer (~0.7 MB) 2 ms where
    the regex alternation took 40, and for a short log text with a non-ASCII character (a device's
    "ICCID … → active") a fraction of the case-insensitive regex's time.
    """
    if not text.isascii():
        for special, letter in _FOLDS_TO_ASCII:
            if special in text:  # rare: replaced only when there (``str.translate`` costs ~0.4 µs a character)
                text = text.replace(special, letter)
    return text.lower()


def mentions_any(text: str, words: tuple[str, ...]) -> bool:
    """Whether ``text`` holds one of the lowercase ASCII ``words``, case-insensitively (as a case-insensitive
    regex of the words would find them)."""
    return _holds_any(folded(text), words)


def _holds_any(lowered: str, words: tuple[str, ...]) -> bool:
    for word in words:  # noqa: SIM110 — a loop: for a short log text ``any``'s generator costs more than the searches
        if word in lowered:
            return True
    return False


_lock = threading.Lock()
_secrets: set[str] = set()
_pattern: re.Pattern[str] | None = None


def register_secret(value: str | None) -> None:
    """Mask ``value`` wherever it appears from now on (process-wide)."""
    global _pattern
    if not value or len(value) < MIN_SECRET_LENGTH:
        return
    with _lock:
        if value in _secrets:
            return
        _secrets.add(value)
        _pattern = None


def registered_count() -> int:
    with _lock:
        return len(_secrets)


def _known() -> re.Pattern[str] | None:
    global _pattern
    with _lock:
        if _pattern is None and _secrets:
            ordered = sorted(_secrets, key=len, reverse=True)
            _pattern = re.compile("|".join(re.escape(s) for s in ordered))
        return _pattern


def redact(text: str) -> str:
    """``text`` with every secret-looking field and every registered secret masked."""
    if not text:
        return text
    # Always in this order: a later pattern must not miss what an earlier one masked first. Each hint is
    # looked for in the original text, a superset of what is left (masking only removes words).
    lowered = folded(text)
    names = _holds_any(lowered, _NAME_HINTS)
    masked = text
    if names:
        masked = _QUOTED_FIELD.sub(lambda m: f"{m.group(1)}{m.group(2)}{MASK}{m.group(2)}", masked)
    if "Bearer" in text or "Basic" in text:  # _BEARER is case-sensitive
        masked = _BEARER.sub(rf"\1 {MASK}", masked)
    if _holds_any(lowered, _HEADER_HINTS):
        masked = _HEADER.sub(rf"\1{MASK}", masked)
    if names and "=" in text:
        masked = _FORM_FIELD.sub(rf"\1{MASK}", masked)
    if "bck_" in text:
        masked = _API_KEY.sub(f"bck_{MASK}", masked)
    known = _known()
    if known is not None:
        masked = known.sub(MASK, masked)
    return masked


_SECRET_KEY = re.compile(rf"^(?:{_NAMES})$", re.IGNORECASE)


def redact_value(value: Any) -> Any:
    """``redact`` applied through dicts, lists and tuples (a key that names a secret masks its value)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {
            k: (MASK if isinstance(k, str) and _SECRET_KEY.match(k) and v else redact_value(v))
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return type(value)(redact_value(v) for v in value)
    return value


def structlog_processor(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """A structlog processor: every value of the event (and a formatted exception) redacted."""
    for key, value in list(event_dict.items()):
        if isinstance(key, str) and _SECRET_KEY.match(key) and value:
            event_dict[key] = MASK
        elif isinstance(value, str | Mapping | list | tuple):
            event_dict[key] = redact_value(value)
        elif isinstance(value, BaseException):
            event_dict[key] = redact(repr(value))
    return event_dict
