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
# What every pattern above needs somewhere in the text (each name holds one of these, case-insensitively):
# one search instead of five substitutions for the common text — a device's request or the carrier's answer.
_SHAPE_HINT = re.compile(r"pass|pwd|secret|token|authorization|key|cookie|bearer|basic|bck_", re.IGNORECASE)

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
    masked = text
    if _SHAPE_HINT.search(text):
        masked = _QUOTED_FIELD.sub(lambda m: f"{m.group(1)}{m.group(2)}{MASK}{m.group(2)}", masked)
        masked = _BEARER.sub(rf"\1 {MASK}", masked)
        masked = _HEADER.sub(rf"\1{MASK}", masked)
        masked = _FORM_FIELD.sub(rf"\1{MASK}", masked)
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
