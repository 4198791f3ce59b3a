"""Cisco IoT Control Center REST API v1 (AT&T POD 19): client, connection settings and wire models."""

from .client import AUDIT_TRAILS, EDIT, GET_DEVICE, SEARCH, ControlCenterClient, Limiter
from .errors import INVALID_CREDENTIALS, RATE_LIMIT_EXCEEDED, error_for_answer
from .models import (
    POD19_BASE_URL,
    STATUSES,
    AuditRecord,
    AuditTrailPage,
    ControlCenterConnection,
    ControlCenterDevice,
    DeviceSearchPage,
    DeviceSummary,
    EditAccepted,
    normalise_status,
    parse_cc_datetime,
)

__all__ = [
    "AUDIT_TRAILS",
    "EDIT",
    "GET_DEVICE",
    "INVALID_CREDENTIALS",
    "POD19_BASE_URL",
    "RATE_LIMIT_EXCEEDED",
    "SEARCH",
    "STATUSES",
    "AuditRecord",
    "AuditTrailPage",
    "ControlCenterClient",
    "ControlCenterConnection",
    "ControlCenterDevice",
    "DeviceSearchPage",
    "DeviceSummary",
    "EditAccepted",
    "Limiter",
    "error_for_answer",
    "normalise_status",
    "parse_cc_datetime",
]
