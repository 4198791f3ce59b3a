"""A reference verifier for receivers of bulkchange's status-update webhook (docs/webhooks.md).

Self-contained on purpose (standard library only): copy it into a receiver as it is.

    from bulkchange.security.webhook_verify import WebhookVerificationError, verify_webhook

    try:
        verify_webhook(SECRET, request.headers, raw_body)          # raw bytes, before any JSON parsing
    except WebhookVerificationError as exc:
        return 401, str(exc)

Checks, in order: both headers present; the timestamp is an integer within ``tolerance_s`` of the
receiver's clock (a captured request replayed later is refused); the signature is
``sha256=hex(HMAC-SHA256(secret, timestamp + "." + body))``, compared in constant time. A replay *within*
the tolerance still verifies: deduplicate by ``(X-Bulkchange-Event-Id, X-Bulkchange-Page)`` as well
(``ReplayGuard`` is a minimal in-memory one).
"""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from collections.abc import Mapping

SIGNATURE_HEADER = "X-Bulkchange-Signature"
TIMESTAMP_HEADER = "X-Bulkchange-Timestamp"
EVENT_ID_HEADER = "X-Bulkchange-Event-Id"
PAGE_HEADER = "X-Bulkchange-Page"
DEFAULT_TOLERANCE_S = 300


class WebhookVerificationError(ValueError):
    """The request is not an authentic, fresh webhook from bulkchange (the message says why)."""


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None:
        lowered = name.lower()
        value = next((v for k, v in headers.items() if k.lower() == lowered), None)
    return value


def expected_signature(secret: str, timestamp: str, body: bytes) -> str:
    mac = hmac.new(secret.encode("utf-8"), timestamp.encode("ascii") + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify_webhook(
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
    now: float | None = None,
) -> None:
    """Raise ``WebhookVerificationError`` unless the request is signed with ``secret`` and fresh."""
    if not secret:
        raise WebhookVerificationError("no secret configured: cannot verify")
    signature = _header(headers, SIGNATURE_HEADER)
    timestamp = _header(headers, TIMESTAMP_HEADER)
    if not signature or not timestamp:
        raise WebhookVerificationError(f"missing {SIGNATURE_HEADER} or {TIMESTAMP_HEADER}")
    if not timestamp.isascii() or not timestamp.isdigit() or len(timestamp) > 12:
        raise WebhookVerificationError("malformed timestamp")
    clock = time.time() if now is None else now
    if abs(clock - int(timestamp)) > tolerance_s:
        raise WebhookVerificationError(f"timestamp outside the {tolerance_s:g} s tolerance (replayed or clock skew)")
    expected = expected_signature(secret, timestamp, body)
    if not hmac.compare_digest(expected.encode("ascii"), signature.encode("utf-8", "replace")):
        raise WebhookVerificationError("signature does not match the body")


def is_valid(secret: str, headers: Mapping[str, str], body: bytes, *, tolerance_s: float = DEFAULT_TOLERANCE_S) -> bool:
    try:
        verify_webhook(secret, headers, body, tolerance_s=tolerance_s)
    except WebhookVerificationError:
        return False
    return True


class ReplayGuard:
    """Remembers ``(event id, page)`` for ``ttl_s`` (longer than the timestamp tolerance): a second copy is
    reported as seen. In-memory, one process; a receiver with several processes keeps this in its store."""

    def __init__(self, ttl_s: float = 2 * DEFAULT_TOLERANCE_S) -> None:
        self._ttl_s = ttl_s
        self._seen: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()

    def first_time(self, headers: Mapping[str, str], *, now: float | None = None) -> bool:
        key = (_header(headers, EVENT_ID_HEADER) or "", _header(headers, PAGE_HEADER) or "")
        clock = time.monotonic() if now is None else now
        with self._lock:
            self._seen = {k: t for k, t in self._seen.items() if t > clock}
            if key in self._seen:
                return False
            self._seen[key] = clock + self._ttl_s
            return True
