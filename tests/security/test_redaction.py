"""The one redaction layer: by shape and by value, in log rows and in log lines."""

from __future__ import annotations

import json
import re
import string

import pytest
import structlog
from hypothesis import given, settings
from hypothesis import strategies as st

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


def _every_pattern(text: str) -> str:
    """The shape patterns applied unconditionally, in order: what ``redact`` must equal whatever it skips."""
    masked = redaction._QUOTED_FIELD.sub(lambda m: f"{m.group(1)}{m.group(2)}***{m.group(2)}", text)
    masked = redaction._BEARER.sub(r"\1 ***", masked)
    masked = redaction._HEADER.sub(r"\1***", masked)
    masked = redaction._FORM_FIELD.sub(r"\1***", masked)
    return redaction._API_KEY.sub("bck_***", masked)


_NAME_PARTS = [
    "password",
    "passwd",
    "pwd",
    "client_secret",
    "clientsecret",
    "secret",
    "access_token",
    "refreshtoken",
    "id_token",
    "session_token",
    "sessionToken",
    "token",
    "authorization",
    "vz-m2m-token",
    "ocp-apim-subscription-key",
    "subscription_key",
    "subscriptionkey",
    "x-api-key",
    "api_key",
    "apikey",
    "webhook_secret",
    "cookie",
    "set-cookie",
    "key",
    "kind",
    "iccid",
]
_NAMES_ANY_CASE = st.sampled_from(_NAME_PARTS).flatmap(
    lambda name: st.lists(st.booleans(), min_size=len(name), max_size=len(name)).map(
        lambda upper: "".join(ch.upper() if u else ch for ch, u in zip(name, upper, strict=True))
    )
)
_VALUES = st.text(alphabet="abcXYZ019_-./+=", min_size=1, max_size=20)
_PIECES = st.one_of(
    _NAMES_ANY_CASE,
    st.sampled_from(['"', "'", ":", ": ", "=", "&", " ", "\n", ",", "{", "}", "Bearer ", "Basic ", "bck_", "ſ", "K"]),
    _VALUES,
    # whole fields, as JSON, a header line and a form body hold them
    st.tuples(_NAMES_ANY_CASE, st.sampled_from(['"', "'"]), _VALUES).map(lambda t: f'{t[1]}{t[0]}{t[1]}: "{t[2]}"'),
    st.tuples(_NAMES_ANY_CASE, _VALUES).map(lambda t: f"{t[0]}: {t[1]}"),
    st.tuples(_NAMES_ANY_CASE, _VALUES).map(lambda t: f"{t[0]}={t[1]}"),
)


@given(st.lists(_PIECES, max_size=30).map("".join))
@settings(max_examples=400, deadline=None)
def test_skipping_patterns_never_changes_the_result(text: str) -> None:
    """``redact`` runs a pattern only when its hint is in the text (a 0.7 MB carrier answer costs a few
    substring searches, not five regex passes); what it masks is exactly what every pattern would mask."""
    expected = _every_pattern(text)
    known = redaction._known()  # secrets other tests registered are masked too
    assert redaction.redact(text) == (known.sub("***", expected) if known else expected)


_EVERY_CHARACTER = "".join(chr(c) for c in range(0x110000) if not 0xD800 <= c < 0xE000)


def test_only_the_listed_characters_fold_to_ascii() -> None:
    """``folded`` replaces four non-ASCII characters and relies on no other one matching an ASCII character in a
    case-insensitive regex, or lowercasing to one: checked over every code point against this Python's ``re``."""
    replaced = dict(redaction._FOLDS_TO_ASCII)
    for ascii_char in string.printable:
        matched = {c for c in re.findall(re.escape(ascii_char), _EVERY_CHARACTER, re.IGNORECASE) if not c.isascii()}
        assert matched == {c for c, letter in replaced.items() if letter == ascii_char.lower()}, ascii_char
    lowering_to_ascii = {c for c in _EVERY_CHARACTER[128:] if any(x.isascii() for x in c.lower())}
    assert lowering_to_ascii <= set(replaced)


@pytest.mark.parametrize(
    "text",
    ["PASSWORD", "paſsword", "a \u212aey TOKEN", "SECRET → x", "İnternal", "plain → text", "api-KEY", "ΑΠΙ_key", ""],
)
def test_mentions_any_agrees_with_a_case_insensitive_regex(text: str) -> None:
    for words in (redaction._NAME_HINTS, redaction._HEADER_HINTS, ("ink", "kin", "ssi")):
        pattern = re.compile("|".join(re.escape(w) for w in words), re.IGNORECASE)
        assert redaction.mentions_any(text, words) == (pattern.search(text) is not None), (text, words)


@given(st.text(alphabet=st.sampled_from("pasSwordtkenıİſ\u212aK→é_-"), max_size=12))
@settings(max_examples=300, deadline=None)
def test_mentions_any_agrees_with_the_regex_on_mixed_text(text: str) -> None:
    words = ("pass", "pwd", "token", "ink", "kin", "sk")
    pattern = re.compile("|".join(re.escape(w) for w in words), re.IGNORECASE)
    assert redaction.mentions_any(text, words) == (pattern.search(text) is not None)
