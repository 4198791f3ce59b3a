"""The one redaction layer: by shape and by value, in log rows and in log lines."""

from __future__ import annotations

import json

import pytest
import structlog

from bulkchange.engine.logbook import redact as logbook_redact
from bulkchange.logging_setup import configure_logging
from bulkchange.security import redaction
from bulkchange.security.crypto import encrypt, reveal


@pytest.mark.parametrize(
    "text",
    [
        '{"username": "u", "password": "hunter2-secret"}',
        "{'client_secret': 'hunter2-secret'}",
        '{"access_token":"hunter2-secret","expires_in":3600}',
        '{"sessionToken": "hunter2-secret"}',
        "Authorization: Bearer hunter2-secret",
        "Authorization: Basic aHVudGVyMi1zZWNyZXQ=",
        "VZ-M2M-Token: hunter2-secret",
        "Ocp-Apim-Subscription-Key: hunter2-secret",
        "grant_type=password&password=hunter2-secret&x=1",
        "key bck_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789 used",
    ],
)
def test_secrets_are_masked_by_shape(text: str) -> None:
    masked = redaction.redact(text)
    assert "hunter2-secret" not in masked and "aHVudGVyMi1zZWNyZXQ=" not in masked
    assert "AbCdEfGhIjKlMnOpQrStUvWxYz" not in masked
    assert "***" in masked


def test_registered_values_are_masked_anywhere() -> None:
    redaction.register_secret("zq-registered-value-42")
    assert (
        redaction.redact("error: login as x with zq-registered-value-42 failed") == "error: login as x with *** failed"
    )
    assert "zq-registered" not in (logbook_redact("<xml>zq-registered-value-42</xml>") or "")
    redaction.register_secret("abc")  # too short to register: would mask ordinary text
    assert redaction.redact("abc") == "abc"


def test_revealed_credentials_are_registered(monkeypatch: pytest.MonkeyPatch, secret_keys: list[str]) -> None:
    stored = encrypt("revealed-secret-77")
    reveal(stored)
    assert redaction.redact("x revealed-secret-77 y") == "x *** y"


def test_ordinary_text_is_left_alone() -> None:
    text = '{"requestId": "4d9f", "ICCID": "89148000000000000027", "status": "Success", "token_type": "bearer"}'
    assert redaction.redact(text) == text


def test_log_lines_are_redacted(capsys: pytest.CaptureFixture[str]) -> None:
    redaction.register_secret("line-secret-value-9")
    configure_logging("INFO", json_lines=True)
    try:
        log = structlog.get_logger("test")
        log.info("login failed", password="p4ss-word-value", detail="sent line-secret-value-9 to the carrier")
        log.info("headers", headers={"Authorization": "Bearer tok-123456789", "Accept": "application/json"})
        try:
            raise RuntimeError("boom with line-secret-value-9")
        except RuntimeError:
            log.exception("failed")
    finally:
        configure_logging("INFO")
    err = capsys.readouterr().err
    assert "line-secret-value-9" not in err and "p4ss-word-value" not in err and "tok-123456789" not in err
    first = json.loads(err.splitlines()[0])
    assert first["password"] == "***" and first["detail"] == "sent *** to the carrier"
