"""The reference verifier receivers can use: our signature verifies; old, tampered or unsigned does not."""

from __future__ import annotations

import json
import time

import pytest

from bulkchange.integrations.webhooks import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign
from bulkchange.security.webhook_verify import ReplayGuard, WebhookVerificationError, is_valid, verify_webhook

SECRET = "whsec-test-123456"
BODY = json.dumps({"EventId": "e1", "Page": 1, "Devices": []}, separators=(",", ":")).encode()


def _headers(timestamp: int, body: bytes = BODY, secret: str = SECRET) -> dict[str, str]:
    ts = str(timestamp)
    return {
        TIMESTAMP_HEADER: ts,
        SIGNATURE_HEADER: sign(secret, ts, body),
        "X-Bulkchange-Event-Id": "e1",
        "X-Bulkchange-Page": "1",
    }


def test_a_fresh_signed_document_verifies() -> None:
    now = int(time.time())
    verify_webhook(SECRET, _headers(now), BODY)
    lowercase = {k.lower(): v for k, v in _headers(now).items()}  # frameworks lower-case header names
    verify_webhook(SECRET, lowercase, BODY)
    assert is_valid(SECRET, _headers(now), BODY)


def test_a_too_old_timestamp_is_refused() -> None:
    old = int(time.time()) - 301
    with pytest.raises(WebhookVerificationError, match="tolerance"):
        verify_webhook(SECRET, _headers(old), BODY)
    verify_webhook(SECRET, _headers(old), BODY, tolerance_s=600)
    future = int(time.time()) + 301
    with pytest.raises(WebhookVerificationError, match="tolerance"):
        verify_webhook(SECRET, _headers(future), BODY)


def test_a_tampered_body_or_timestamp_or_secret_is_refused() -> None:
    now = int(time.time())
    tampered = BODY.replace(b'"Page":1', b'"Page":2')
    with pytest.raises(WebhookVerificationError, match="signature"):
        verify_webhook(SECRET, _headers(now), tampered)
    moved = {**_headers(now), TIMESTAMP_HEADER: str(now + 1)}
    with pytest.raises(WebhookVerificationError, match="signature"):
        verify_webhook(SECRET, moved, BODY)
    with pytest.raises(WebhookVerificationError, match="signature"):
        verify_webhook("another-secret", _headers(now), BODY)


@pytest.mark.parametrize(
    "headers",
    [{}, {TIMESTAMP_HEADER: "1"}, {SIGNATURE_HEADER: "sha256=00"}, {TIMESTAMP_HEADER: "12a", SIGNATURE_HEADER: "x"}],
)
def test_missing_or_malformed_headers_are_refused(headers: dict[str, str]) -> None:
    with pytest.raises(WebhookVerificationError):
        verify_webhook(SECRET, headers, BODY)
    with pytest.raises(WebhookVerificationError, match="no secret"):
        verify_webhook("", _headers(int(time.time())), BODY)


def test_replay_guard_drops_a_second_copy_within_the_tolerance() -> None:
    guard = ReplayGuard(ttl_s=600)
    headers = _headers(int(time.time()))
    assert guard.first_time(headers, now=0)
    assert not guard.first_time(headers, now=10)
    assert guard.first_time({**headers, "X-Bulkchange-Page": "2"}, now=10)
    assert guard.first_time(headers, now=601), "forgotten after the ttl (by then the timestamp is too old)"
