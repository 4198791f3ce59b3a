"""How Control Center's answers map onto the carrier error classes of :mod:`bulkchange.carrier.errors`.

Control Center's error body is ``{"errorMessage": …, "errorCode": …}``; classification looks at the HTTP
status and the ``errorCode`` only, never at the message. The few codes known from the real service:

* ``10000001`` invalid credentials (HTTP 401) and a 401 without a code (no usable Authorization header):
  :class:`AuthenticationFailed`; nothing works until an operator fixes the user name / API key.
* ``40000029`` rate limit exceeded, with HTTP 429 or another status, and any 429: :class:`RateLimited`
  (``retry_after`` from a ``Retry-After`` header if one is ever sent; Control Center is not known to).
* 5xx: :class:`TransientError`, except a 504 to an edit, which may have been made: :class:`OutcomeUnknown`.
* 404: :class:`DeviceNotFound` (unknown ICCID, or not in this user's account).
* every other 4xx, e.g. ``10000003`` (``modifiedSince`` missing), ``10000024`` (bad API version), an
  invalid status or transition (codes not published): :class:`PermanentError` with the carrier's code and
  message; retrying the same request cannot help.
"""

from __future__ import annotations

from typing import Any

from ..errors import (
    AuthenticationFailed,
    CarrierError,
    DeviceNotFound,
    OutcomeUnknown,
    PermanentError,
    RateLimited,
    TransientError,
)

INVALID_CREDENTIALS = "10000001"
MODIFIED_SINCE_REQUIRED = "10000003"
INVALID_API_VERSION = "10000024"
RATE_LIMIT_EXCEEDED = "40000029"


def error_for_answer(
    http_status: int,
    code: str | None,
    message: str | None,
    *,
    edit: bool,
    retry_after: float | None = None,
    **ctx: Any,
) -> CarrierError:
    """The typed error for a non-2xx answer. ``ctx``: ``device``, ``endpoint``, request/response texts."""
    text = message or f"HTTP {http_status} from Control Center"
    ctx.update(code=code, http_status=http_status)
    if code == RATE_LIMIT_EXCEEDED or http_status == 429:
        return RateLimited(f"Control Center rate limit: {text}", retry_after=retry_after, **ctx)
    if http_status == 401 or code == INVALID_CREDENTIALS:
        return AuthenticationFailed(f"Control Center refused the user name / API key: {text}", **ctx)
    if http_status >= 500:
        if http_status == 504 and edit:
            return OutcomeUnknown(
                f"Control Center gateway timed out ({text}); the change may or may not have been made", **ctx
            )
        return TransientError(f"Control Center server error: {text}", **ctx)
    if http_status == 404:
        return DeviceNotFound(text, **ctx)
    return PermanentError(text, **ctx)
