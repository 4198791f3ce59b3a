"""Typed errors raised by the ThingSpace client.

The engine decides what to do with a failed carrier call from the *class* of the error alone
(retry later, fail the device, reconcile, stop the whole bulk change), so every failure the client can
see is mapped to exactly one class here.  Each error also keeps the context the engine writes to its
log row (endpoint, HTTP status, request and response text) so nobody has to parse messages.

Classification looks at carrier error *codes* only, never at messages: Verizon documents that the
messages change and that the same code can come from different services, so the code is first stripped
of its leading service name (``UnifiedWebService.REQUEST_FAILED.X`` -> ``REQUEST_FAILED.X``).
"""

from __future__ import annotations

import re
from typing import Any

from bulkchange.domain.deadline import OutOfTime

__all__ = [
    "AuthenticationFailed",
    "CarrierError",
    "DeadlineExceeded",
    "DeviceNotFound",
    "InvalidTransition",
    "LoginLocked",
    "OutcomeUnknown",
    "PermanentError",
    "RateLimited",
    "SessionExpired",
    "TransientError",
    "error_for_code",
    "strip_service_prefix",
]


class CarrierError(Exception):
    """Base class of every error the carrier client raises.

    ``code`` is the carrier error code without its service prefix (or a gateway fault code such as
    ``"900901"``); ``device`` is the device id concerned when the call was about one device.  The
    request and response texts are already redacted: no password, secret or token is ever stored here.
    """

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        http_status: int | None = None,
        device: str | None = None,
        endpoint: str = "",
        request_text: str | None = None,
        response_text: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.http_status = http_status
        self.device = device
        self.endpoint = endpoint
        self.request_text = request_text
        self.response_text = response_text

    def __str__(self) -> str:
        parts = [self.message]
        if self.code:
            parts.append(f"code={self.code}")
        if self.http_status is not None:
            parts.append(f"http={self.http_status}")
        if self.endpoint:
            parts.append(f"endpoint={self.endpoint}")
        if self.device:
            parts.append(f"device={self.device}")
        return " | ".join(parts)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, code={self.code!r}, http_status={self.http_status!r})"


class AuthenticationFailed(CarrierError):
    """The carrier refused our credentials (OAuth token 400/401, login refused, persistent 401 fault).

    Retrying does not help until an operator fixes the credentials.
    """


class LoginLocked(AuthenticationFailed):
    """Logging in must not be attempted: the carrier locked the user, or our guard refuses to try.

    ThingSpace locks a contact after 5 consecutive failed logins, so after one refused login the client
    stops trying until an operator clears the guard; this error says so in its message.
    """


class RateLimited(CarrierError):
    """The carrier asked us to slow down (HTTP 429 or a rate-limit error code).

    ``retry_after`` is the carrier's ``Retry-After`` in seconds when it sent one.
    """

    def __init__(self, message: str, *, retry_after: float | None = None, **ctx: Any) -> None:
        super().__init__(message, **ctx)
        self.retry_after = retry_after


class DeviceNotFound(CarrierError):
    """The device is unknown to the carrier or not part of the account named in the request."""


class TransientError(CarrierError):
    """A failure that is expected to go away on its own (5xx, connection trouble before sending, a
    malformed answer to a read-only call).  Nothing was changed at the carrier, so a retry is safe."""


class SessionExpired(TransientError):
    """The session token expired again right after a fresh login.

    Raised instead of logging in a third time; the client does not retry it itself (each retry would
    cost another login), the caller may try again later.
    """


class DeadlineExceeded(TransientError, OutOfTime):
    """The call was not made (or a read was cut short) because the caller's deadline was too close.

    Raised by a carrier client given a ``Deadline`` (``domain.deadline``): before an attempt when less
    than the client's minimum call time is left, and when a read-only call or a call that never left this
    process ran into the deadline. Nothing was changed at the carrier, so it is a ``TransientError``; but
    it says nothing about the carrier's health, so the engine treats it as *not started*: it releases
    the claimed changes without counting an attempt and lets the next invocation carry on. A provisioning
    request that had left when the deadline cut it short is :class:`OutcomeUnknown` instead, as any
    other lost answer.
    """


class OutcomeUnknown(CarrierError):
    """A provisioning request may or may not have been performed by the carrier.

    Raised when the request had (possibly) reached the carrier and no usable answer came back: read
    timeout, connection dropped after sending, gateway timeout, or a 2xx with an unreadable body.  It is
    never retried blindly: activating twice is not idempotent.  The engine reconciles by asking the
    carrier for the device state.
    """


class InvalidTransition(CarrierError):
    """The carrier refused the state change for this device (already active, already deactive,
    activation in progress, daily action limit...).  Retrying the same request will not help."""


class PermanentError(CarrierError):
    """Any other refusal (bad input, unknown account, too many devices, empty requestId...)."""


# Segments that start a carrier error code proper (after the service name).
_CATEGORY = re.compile(r"^[A-Z][A-Z0-9_]*$")

_INVALID_TRANSITION_TAILS = frozenset(
    {
        "DeviceAlreadyActive",
        "DeviceAlreadyDeactive",
        "DeviceAlreadyDeactivated",
        "DeviceAlreadySuspended",
        "DeviceActivationInProgress",
        "DeviceNotActive",
        "DeviceNotSuspended",
        "InvalidStateTransition",
        "InvalidDeviceState",
        "DailyActionLimitExceeded",
    }
)
_DEVICE_NOT_FOUND = frozenset(
    {
        "INPUT_INVALID.Device.Account.Invalid",
        "INPUT_INVALID.Device.NotFound",
        "REQUEST_FAILED.DeviceNotFound",
        "REQUEST_FAILED.Device.NotFound",
        "INPUT_INVALID.DeviceNotFound",
    }
)
_AUTH_FAILED = frozenset(
    {
        "REQUEST_FAILED.InvalidCredentials",
        "REQUEST_FAILED.Login.InvalidCredentials",
        "REQUEST_FAILED.AuthenticationFailed",
        "900901",  # gateway: invalid or expired bearer token (after our one refresh)
        "900902",  # gateway: missing credentials
        "invalid_client",  # OAuth error field
        "invalid_grant",
        "unauthorized_client",
    }
)
_LOCKED = frozenset({"REQUEST_FAILED.UserLocked", "REQUEST_FAILED.AccountLocked", "REQUEST_FAILED.User.Locked"})
_RATE_LIMITED = frozenset({"REQUEST_FAILED.RateLimitExceeded", "REQUEST_FAILED.TooManyRequests"})
_TRANSIENT = frozenset(
    {
        "REQUEST_FAILED.ServiceUnavailable",
        "REQUEST_FAILED.Timeout",
        "REQUEST_FAILED.SystemBusy",
        "REQUEST_FAILED.SessionToken.Expired",
    }
)


def strip_service_prefix(code: str) -> str:
    """Drop the leading service name of a carrier error code, keep everything else.

    ``UnifiedWebService.REQUEST_FAILED.X`` and ``DeviceService.INPUT_INVALID.Y`` lose their first
    segment; codes that already start with a category (``REQUEST_FAILED.X``), one-word codes
    (``DeserializationFailed``) and gateway numbers (``900901``) are returned unchanged.
    """
    code = code.strip()
    head, sep, rest = code.partition(".")
    if not sep or not rest or _CATEGORY.match(head):
        return code
    next_segment = rest.split(".", 1)[0]
    if head.endswith(("Service", "Services")) or _CATEGORY.match(next_segment):
        return rest
    return code


def error_for_code(code: str, message: str, **ctx: Any) -> CarrierError:
    """Build the typed error for a carrier error code (synchronous ``errorCode`` or callback
    ``faultcode``).

    ``ctx`` is passed to the error: ``http_status``, ``device``, ``endpoint``, ``request_text``,
    ``response_text`` and, for rate limits, ``retry_after``.  The returned error's ``code`` is the
    stripped code.  Unknown codes are :class:`PermanentError`: retrying an unexplained refusal of a
    state change is the riskier choice.
    """
    stripped = strip_service_prefix(code)
    tail = stripped.rsplit(".", 1)[-1]
    retry_after = ctx.pop("retry_after", None)
    ctx["code"] = stripped
    if stripped in _LOCKED or tail == "UserLocked":
        return LoginLocked(message, **ctx)
    if stripped in _AUTH_FAILED or tail == "InvalidCredentials":
        return AuthenticationFailed(message, **ctx)
    if stripped in _RATE_LIMITED or tail == "RateLimitExceeded":
        return RateLimited(message, retry_after=retry_after, **ctx)
    if stripped in _DEVICE_NOT_FOUND or tail == "DeviceNotFound":
        return DeviceNotFound(message, **ctx)
    if tail in _INVALID_TRANSITION_TAILS:
        return InvalidTransition(message, **ctx)
    if stripped in _TRANSIENT or tail == "ServiceUnavailable":
        return TransientError(message, **ctx)
    return PermanentError(message, **ctx)
