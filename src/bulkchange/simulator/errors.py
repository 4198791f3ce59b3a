"""Error bodies exactly as ThingSpace sends them.

Two families exist on the wire (see thingspace-api.md §2.1 and §6.1): the WSO2
gateway ``{"fault": {...}}`` / OAuth ``{"error": ...}`` bodies and the M2M
``{"errorCode", "errorMessage"}`` body. Keeping them in one place makes the
strings greppable and stops handlers from inventing variants.
"""

from __future__ import annotations

from typing import Any

SERVICE = "UnifiedWebService"


class ApiError(Exception):
    """Raised by handlers to return a specific status, JSON body and headers."""

    def __init__(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        super().__init__(f"{status}: {body}")
        self.status = status
        self.body = body
        self.headers = headers or {}


def m2m_error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> ApiError:
    """An M2M ``{"errorCode","errorMessage"}`` error; ``code`` excludes the service prefix."""
    return ApiError(status, {"errorCode": f"{SERVICE}.{code}", "errorMessage": message}, headers)


# --- gateway / OAuth -------------------------------------------------------------------------------------


def missing_grant_type() -> ApiError:
    return ApiError(400, {"error": "invalid_request", "error_description": "Missing grant_type parameter value"})


def missing_basic() -> ApiError:
    return ApiError(
        401,
        {
            "fault": {
                "code": "900902",
                "message": "Missing Credentials",
                "description": "Required OAuth credentials not provided. Make sure your API invocation "
                'call has a header: "Authorization: Basic ACCESS_TOKEN"',
            }
        },
    )


def missing_bearer() -> ApiError:
    return ApiError(
        401,
        {
            "fault": {
                "code": "900902",
                "message": "Missing Credentials",
                "description": "Required OAuth credentials not provided. Make sure your API invocation "
                'call has a header: "Authorization: Bearer ACCESS_TOKEN"',
            }
        },
    )


def invalid_credentials() -> ApiError:
    return ApiError(
        401,
        {
            "fault": {
                "code": "900901",
                "message": "Invalid Credentials",
                "description": "Access failure for API: /m2m/v1, version: v1. "
                "Make sure you have given the correct access token",
            }
        },
    )


def invalid_client() -> ApiError:
    return ApiError(
        401,
        {
            "fault": {
                "code": "900901",
                "message": "Invalid Credentials",
                "description": "Invalid client credentials. Make sure you have given the correct "
                "consumer key and secret",
            }
        },
    )


def no_resource() -> ApiError:
    return ApiError(
        400,
        {
            "fault": {
                "code": "900906",
                "message": "No matching resource found in the API for the given request",
                "description": "Access failure for API: /m2m/v1, version: v1. "
                "Check the API documentation and add a proper REST resource path to the invocation URL",
            }
        },
    )


# --- M2M synchronous ---------------------------------------------------------------------------------------


def bad_login() -> ApiError:
    return m2m_error(400, "REQUEST_FAILED.InvalidCredentials", "Invalid username or password.")


def user_locked(after: int) -> ApiError:
    return m2m_error(400, "REQUEST_FAILED.UserLocked", f"The user is locked after {after} failed log in attempts.")


def session_expired() -> ApiError:
    return m2m_error(400, "REQUEST_FAILED.SessionToken.Expired", "The Session has expired.")


def unexpected(detail: str) -> ApiError:
    return m2m_error(
        400,
        "REQUEST_FAILED.UnexpectedError",
        f"Unexpected error occurred. Could not complete request. {detail}".strip(),
    )


def account_not_found(account: str) -> ApiError:
    return m2m_error(400, "REQUEST_FAILED.AccountNotFound", f"Account {account} was not found.")


def too_many_devices(limit: int) -> ApiError:
    return m2m_error(400, "INPUT_INVALID.Request.TooManyDevices", f"A request may contain at most {limit} devices.")


def rate_limited(retry_after: int) -> ApiError:
    return m2m_error(
        429,
        "REQUEST_FAILED.RateLimitExceeded",
        "Too many requests. Retry after the number of seconds in the Retry-After header.",
        {"Retry-After": str(max(1, retry_after))},
    )


def service_unavailable() -> ApiError:
    return m2m_error(503, "REQUEST_FAILED.ServiceUnavailable", "The service is temporarily unavailable.")


def request_id_invalid() -> ApiError:
    return m2m_error(400, "INPUT_INVALID.RequestId.Invalid", "The requestId is not valid.")


def request_id_multiple() -> ApiError:
    return m2m_error(
        400,
        "INPUT_INVALID.RequestId.MultipleDevices",
        "Request status is only available for requests on a single device.",
    )


def callback_port_invalid() -> ApiError:
    return m2m_error(400, "INPUT_INVALID.CallbackUrl.InvalidPort", "The callback URL uses a port that is not allowed.")


def service_name_invalid(name: str) -> ApiError:
    return m2m_error(400, "INPUT_INVALID.ServiceName.Invalid", f"No callback registered for service {name}.")


# --- asynchronous (callback faultResponse) codes -----------------------------------------------------------

FAULT_ALREADY_ACTIVE = (f"{SERVICE}.REQUEST_FAILED.DeviceAlreadyActive", "REQUEST_FAILED. Device is already active")
FAULT_ACTIVATION_IN_PROGRESS = (
    f"{SERVICE}.REQUEST_FAILED.DeviceActivationInProgress",
    "REQUEST_FAILED. Device activation is in progress",
)
FAULT_ALREADY_DEACTIVE = (
    f"{SERVICE}.REQUEST_FAILED.DeviceAlreadyDeactive",
    "REQUEST_FAILED. Device is already deactive",
)
FAULT_INVALID_TRANSITION = (
    f"{SERVICE}.REQUEST_FAILED.InvalidStateTransition",
    "REQUEST_FAILED. The device state does not allow this action",
)
FAULT_NOT_IN_ACCOUNT = (
    f"{SERVICE}.INPUT_INVALID.Device.Account.Invalid",
    "The device was not a part of the account specified.",
)
FAULT_DAILY_LIMIT = (
    f"{SERVICE}.REQUEST_FAILED.Device.DailyActionLimitExceeded",
    "REQUEST_FAILED. Daily provisioning action limit exceeded for this line",
)
