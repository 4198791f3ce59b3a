"""RFC 9457 problem details: the one body every HTTP error answer has, whoever answers (the FastAPI
application's handlers and middleware, the Lambda callback handler).

``type`` is a URI naming the kind of problem (``about:blank`` when the status says it all), ``title`` that
kind in words, ``status`` the HTTP status, ``detail`` this occurrence, ``errors`` the individual problems
(each with ``row``, ``field`` and ``message``). Extension members may follow.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any

MEDIA_TYPE = "application/problem+json"

TYPE_PREFIX = "urn:bulkchange:problem:"
INVALID_REQUEST = TYPE_PREFIX + "invalid-request"
REFUSED = TYPE_PREFIX + "refused"
UNREADABLE_FILE = TYPE_PREFIX + "unreadable-file"
TOO_LARGE = TYPE_PREFIX + "too-large"
CONFLICT = TYPE_PREFIX + "conflict"

_TITLES = {
    INVALID_REQUEST: "The request is not valid",
    REFUSED: "Refused: nothing was created",
    UNREADABLE_FILE: "The file cannot be read",
    TOO_LARGE: "Over a limit",
    CONFLICT: "Conflict with the current state",
}


def title_of(status: int, type: str = "about:blank") -> str:
    """The title of a problem type; for ``about:blank``, the status's reason phrase (as the RFC asks)."""
    if type in _TITLES:
        return _TITLES[type]
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def problem_body(
    status: int,
    detail: str,
    *,
    type: str = "about:blank",
    errors: Sequence[Mapping[str, Any]] = (),
    **extensions: Any,
) -> dict[str, Any]:
    return {
        "type": type,
        "title": title_of(status, type),
        "status": status,
        "detail": detail,
        "errors": [dict(e) for e in errors],
        **extensions,
    }


def problem_bytes(status: int, detail: str, **extensions: Any) -> bytes:
    """The body, encoded (for answers written before any framework: ASGI middleware, Lambda)."""
    return json.dumps(problem_body(status, detail, **extensions)).encode("utf-8")
