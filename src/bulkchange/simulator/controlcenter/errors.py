"""Error answers of the simulated Control Center, in one place.

The body is always ``{"errorMessage": …, "errorCode": …}`` (no ``errorCode`` before authentication).
Four codes have been seen from the real service and are reproduced exactly: ``10000001`` (invalid
credentials), ``10000003`` (``modifiedSince`` missing), ``10000024`` (bad API version) and ``40000029``
(rate limit). Cisco does not publish the codes of the other refusals, so the simulator uses its own
``9xxxxxxx`` codes for them; a client must not give them meaning beyond "a permanent refusal".
"""

from __future__ import annotations

from ..errors import ApiError

INVALID_CREDENTIALS = "10000001"
MODIFIED_SINCE_REQUIRED = "10000003"
INVALID_API_VERSION = "10000024"
RATE_LIMIT_EXCEEDED = "40000029"

# Simulator-defined codes (the real ones are not public).
SIM_INVALID_REQUEST = "90000400"
SIM_NOT_FOUND = "90000404"
SIM_INVALID_STATUS = "90000410"
SIM_TRANSITION_NOT_ALLOWED = "90000411"
SIM_UNKNOWN_RATE_PLAN = "90000412"
SIM_UNKNOWN_COMMUNICATION_PLAN = "90000413"
SIM_INVALID_EFFECTIVE_DATE = "90000414"
SIM_INVALID_DATE = "90000415"
SIM_INVALID_PAGING = "90000416"
SIM_SERVER_ERROR = "90000500"

BASIC_REALM = 'Basic realm="Jasper"'


def cc_error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> ApiError:
    return ApiError(status, {"errorMessage": message, "errorCode": code}, headers)


def authentication_required() -> ApiError:
    """No (usable) Authorization header: 401 with a challenge and, unlike every other error, no code."""
    return ApiError(
        401,
        {"errorMessage": "Full authentication is required to access this resource"},
        {"WWW-Authenticate": BASIC_REALM},
    )


def invalid_credentials() -> ApiError:
    return cc_error(401, INVALID_CREDENTIALS, "Invalid credentials")


def invalid_api_version() -> ApiError:
    return cc_error(400, INVALID_API_VERSION, "Invalid apiVersion")


def rate_limited(http_status: int, retry_after_s: int | None = None) -> ApiError:
    headers = {"Retry-After": str(retry_after_s)} if retry_after_s else None
    return cc_error(http_status, RATE_LIMIT_EXCEEDED, "Rate limit exceeded", headers)


def server_error(status: int) -> ApiError:
    return cc_error(status, SIM_SERVER_ERROR, "Internal server error")


def not_found(iccid: str) -> ApiError:
    return cc_error(404, SIM_NOT_FOUND, f"Device {iccid} not found")


def invalid_request(message: str) -> ApiError:
    return cc_error(400, SIM_INVALID_REQUEST, message)


def modified_since_required() -> ApiError:
    return cc_error(400, MODIFIED_SINCE_REQUIRED, "ModifiedSince is required.")


def invalid_date(name: str, detail: str) -> ApiError:
    return cc_error(400, SIM_INVALID_DATE, f"{name} {detail}")


def invalid_paging(message: str) -> ApiError:
    return cc_error(400, SIM_INVALID_PAGING, message)


def invalid_status(value: str) -> ApiError:
    return cc_error(400, SIM_INVALID_STATUS, f"Invalid status: {value}")


def transition_not_allowed(current: str, target: str) -> ApiError:
    return cc_error(400, SIM_TRANSITION_NOT_ALLOWED, f"Status change from {current} to {target} is not allowed")


def unknown_rate_plan(name: str) -> ApiError:
    return cc_error(400, SIM_UNKNOWN_RATE_PLAN, f"Invalid rate plan: {name}")


def unknown_communication_plan(name: str) -> ApiError:
    return cc_error(400, SIM_UNKNOWN_COMMUNICATION_PLAN, f"Invalid communication plan: {name}")


def invalid_effective_date(detail: str) -> ApiError:
    return cc_error(400, SIM_INVALID_EFFECTIVE_DATE, f"Invalid effectiveDate: {detail}")
