"""Carrier APIs behind one port.

``bulkchange.carrier.port`` is what the engine asks of any carrier; each carrier API is an adapter in its
own package (``bulkchange.carrier.thingspace`` for Verizon ThingSpace M2M v1) made of a client, its wire
models and the adapter implementing the port. ``bulkchange.carrier.errors`` holds the typed errors every
client raises and every adapter turns into outcomes; they are re-exported here.
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

__all__ = [
    "AuthenticationFailed",
    "CarrierError",
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
