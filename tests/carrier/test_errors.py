"""Classification of carrier error codes (codes only, never messages)."""

from __future__ import annotations

import pytest

from bulkchange.carrier.errors import (
    AuthenticationFailed,
    CarrierError,
    DeviceNotFound,
    InvalidTransition,
    LoginLocked,
    OutcomeUnknown,
    PermanentError,
    RateLimited,
    TransientError,
    error_for_code,
    strip_service_prefix,
)


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("UnifiedWebService.REQUEST_FAILED.SessionToken.Expired", "REQUEST_FAILED.SessionToken.Expired"),
        ("DeviceService.INPUT_INVALID.CustomField.InvalidName", "INPUT_INVALID.CustomField.InvalidName"),
        ("UnifiedWebService.INPUT_INVALID.Device.Account.Invalid", "INPUT_INVALID.Device.Account.Invalid"),
        ("REQUEST_FAILED.UnexpectedError", "REQUEST_FAILED.UnexpectedError"),
        ("DeserializationFailed", "DeserializationFailed"),
        ("900901", "900901"),
        ("SessionToken.Expired", "SessionToken.Expired"),
        ("  UnifiedWebService.REQUEST_FAILED.X ", "REQUEST_FAILED.X"),
    ],
)
def test_strip_service_prefix(code: str, expected: str) -> None:
    assert strip_service_prefix(code) == expected


@pytest.mark.parametrize(
    ("code", "cls"),
    [
        ("UnifiedWebService.REQUEST_FAILED.DeviceAlreadyActive", InvalidTransition),
        ("UnifiedWebService.REQUEST_FAILED.DeviceActivationInProgress", InvalidTransition),
        ("UnifiedWebService.REQUEST_FAILED.DeviceAlreadyDeactive", InvalidTransition),
        ("UnifiedWebService.REQUEST_FAILED.InvalidStateTransition", InvalidTransition),
        ("UnifiedWebService.REQUEST_FAILED.Device.DailyActionLimitExceeded", InvalidTransition),
        ("UnifiedWebService.INPUT_INVALID.Device.Account.Invalid", DeviceNotFound),
        ("UnifiedWebService.REQUEST_FAILED.InvalidCredentials", AuthenticationFailed),
        ("UnifiedWebService.REQUEST_FAILED.UserLocked", LoginLocked),
        ("UnifiedWebService.REQUEST_FAILED.RateLimitExceeded", RateLimited),
        ("UnifiedWebService.REQUEST_FAILED.ServiceUnavailable", TransientError),
        ("UnifiedWebService.REQUEST_FAILED.UnexpectedError", PermanentError),
        ("UnifiedWebService.INPUT_INVALID.Request.TooManyDevices", PermanentError),
        ("UnifiedWebService.INPUT_INVALID.Request.InvalidCharacter", PermanentError),
        ("UnifiedWebService.REQUEST_FAILED.AccountNotFound", PermanentError),
        ("DeserializationFailed", PermanentError),
        ("900901", AuthenticationFailed),
        ("900906", PermanentError),
        ("Something.Completely.New", PermanentError),
    ],
)
def test_error_for_code_classes(code: str, cls: type[CarrierError]) -> None:
    err = error_for_code(code, "msg", endpoint="devices/actions/activate", device="8914", http_status=400)
    assert type(err) is cls
    assert err.code == strip_service_prefix(code)
    assert (err.endpoint, err.device, err.http_status, err.message) == ("devices/actions/activate", "8914", 400, "msg")


def test_classification_ignores_messages() -> None:
    # A message that *sounds* like a transition error must not change the class of an unknown code.
    err = error_for_code("UnifiedWebService.REQUEST_FAILED.Other", "Device is already active")
    assert type(err) is PermanentError


def test_rate_limited_keeps_retry_after() -> None:
    err = error_for_code("UnifiedWebService.REQUEST_FAILED.RateLimitExceeded", "slow down", retry_after=7.0)
    assert isinstance(err, RateLimited)
    assert err.retry_after == 7.0


def test_hierarchy() -> None:
    assert issubclass(LoginLocked, AuthenticationFailed)
    # OutcomeUnknown must never be mistaken for something safe to retry.
    assert not issubclass(OutcomeUnknown, TransientError)
    for cls in (
        AuthenticationFailed,
        RateLimited,
        DeviceNotFound,
        TransientError,
        OutcomeUnknown,
        InvalidTransition,
        PermanentError,
    ):
        assert issubclass(cls, CarrierError)


def test_str_has_context_but_no_texts() -> None:
    err = PermanentError("nope", code="X", http_status=400, endpoint="e", request_text='{"a":1}')
    assert "nope" in str(err) and "code=X" in str(err) and "http=400" in str(err)
    assert '{"a":1}' not in str(err)
