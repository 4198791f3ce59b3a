"""Carrier API clients.  Only Verizon ThingSpace M2M v1 for now.

Import from here: the client, its connection settings, the result models and the typed errors the
engine branches on.
"""

from .errors import (
    AuthenticationFailed,
    CarrierError,
    DeviceNotFound,
    InvalidTransition,
    LoginLocked,
    OutcomeUnknown,
    PermanentError,
    RateLimited,
    SessionExpired,
    TransientError,
    error_for_code,
    strip_service_prefix,
)
from .models import (
    ActionAccepted,
    AddDeviceResult,
    AddResult,
    CallbackListener,
    CallbackMessage,
    CarrierDevice,
    DeleteDeviceResult,
    DeviceId,
    DeviceListPage,
    ThingSpaceConnection,
)
from .thingspace import InMemoryLoginGuard, Limiter, LoginGuard, ThingSpaceClient

__all__ = [
    "ActionAccepted",
    "AddDeviceResult",
    "AddResult",
    "AuthenticationFailed",
    "CallbackListener",
    "CallbackMessage",
    "CarrierDevice",
    "CarrierError",
    "DeleteDeviceResult",
    "DeviceId",
    "DeviceListPage",
    "DeviceNotFound",
    "InMemoryLoginGuard",
    "InvalidTransition",
    "Limiter",
    "LoginGuard",
    "LoginLocked",
    "OutcomeUnknown",
    "PermanentError",
    "RateLimited",
    "SessionExpired",
    "ThingSpaceClient",
    "ThingSpaceConnection",
    "TransientError",
    "error_for_code",
    "strip_service_prefix",
]
