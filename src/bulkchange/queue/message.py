"""The bulk-change wake-up message, as SQS message attributes.

The message only wakes a worker: the database row is the truth (decisions.md), so the message carries
ids and flags, never a payload. Its attribute names and encodings are the original system's
(``BulkChangeId`` as an SQS ``Number``, flags as ``"True"``/``"False"`` strings), so messages sent by the
original producers and by us are read the same way.

Messages arrive in two shapes: the SQS API's (``DataType``/``StringValue``, boto3 ``ReceiveMessage``) and
the Lambda event's (``dataType``/``stringValue``). Both are accepted. A message that cannot be read is
refused with ``MalformedMessage`` naming the attribute and the value, so the worker can log it and drop
it instead of retrying a message that will never parse.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

# Ids are BIGINT in the database; anything larger could never name a row.
_MAX_BIGINT = 2**63 - 1
_INT_PATTERN = re.compile(r"[+-]?[0-9]+")
_BOOL_VALUES = {"true": True, "false": False}

BULK_CHANGE_ID = "BulkChangeId"
IS_RETRY_NEW_ACTIVATE = "IsRetryNewActivateThingSpaceDevice"
IS_FROM_AUTOMATED_UPDATE = "IsFromAutomatedUpdateDeviceStatusLambda"
SERVICE_PROVIDER_ID = "ServiceProviderId"
RETRY_NUMBER = "RetryNumber"


class MalformedMessage(ValueError):
    """A message whose attributes cannot be read; retrying it would fail the same way.

    ``bulk_change_id`` is set when the id itself was readable, so the failure can still be logged
    against its bulk change.
    """

    def __init__(self, reason: str, bulk_change_id: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.bulk_change_id = bulk_change_id


class BulkChangeMessage(BaseModel):
    """Which bulk change to work on, and why the message was sent (the original's five attributes)."""

    model_config = ConfigDict(frozen=True, strict=True, extra="forbid")

    bulk_change_id: int = Field(gt=0, le=_MAX_BIGINT)
    is_retry_new_activate_thingspace_device: bool = False
    is_from_automated_update_device_status_lambda: bool = False
    service_provider_id: int = Field(default=0, ge=0, le=_MAX_BIGINT)
    retry_number: int = Field(default=0, ge=0, le=_MAX_BIGINT)

    def to_attributes(self) -> dict[str, dict[str, str]]:
        """The SQS ``SendMessage`` ``MessageAttributes`` (numbers as ``Number``, flags as ``"True"``/``"False"``)."""
        return {
            BULK_CHANGE_ID: _number(self.bulk_change_id),
            IS_RETRY_NEW_ACTIVATE: _flag(self.is_retry_new_activate_thingspace_device),
            IS_FROM_AUTOMATED_UPDATE: _flag(self.is_from_automated_update_device_status_lambda),
            SERVICE_PROVIDER_ID: _number(self.service_provider_id),
            RETRY_NUMBER: _number(self.retry_number),
        }

    @classmethod
    def from_attributes(cls, attrs: Mapping[str, Mapping[str, Any]]) -> BulkChangeMessage:
        """Read a message from SQS-API-shaped or Lambda-event-shaped attributes.

        Missing optional attributes take their defaults; unknown attributes are ignored (producers may add
        tracing attributes). ``BulkChangeId`` is read first so that any later refusal can carry it.

        Raises ``MalformedMessage`` when ``BulkChangeId`` is missing, not an integer or not positive, or
        when a known attribute holds a value that cannot be parsed.
        """
        if not isinstance(attrs, Mapping):
            raise MalformedMessage(f"message attributes must be a mapping, got {type(attrs).__name__}")
        raw_id = _string_value(attrs, BULK_CHANGE_ID, None)
        if raw_id is None:
            raise MalformedMessage(f"missing attribute {BULK_CHANGE_ID}")
        bulk_change_id = _parse_int(BULK_CHANGE_ID, raw_id, minimum=1, bulk_change_id=None)

        def flag(name: str) -> bool:
            raw = _string_value(attrs, name, bulk_change_id)
            return False if raw is None else _parse_bool(name, raw, bulk_change_id)

        def number(name: str) -> int:
            raw = _string_value(attrs, name, bulk_change_id)
            return 0 if raw is None else _parse_int(name, raw, minimum=0, bulk_change_id=bulk_change_id)

        return cls(
            bulk_change_id=bulk_change_id,
            is_retry_new_activate_thingspace_device=flag(IS_RETRY_NEW_ACTIVATE),
            is_from_automated_update_device_status_lambda=flag(IS_FROM_AUTOMATED_UPDATE),
            service_provider_id=number(SERVICE_PROVIDER_ID),
            retry_number=number(RETRY_NUMBER),
        )


def _number(value: int) -> dict[str, str]:
    return {"DataType": "Number", "StringValue": str(value)}


def _flag(value: bool) -> dict[str, str]:
    # The original (.NET) wrote bool.ToString(): "True" / "False".
    return {"DataType": "String", "StringValue": "True" if value else "False"}


def _string_value(attrs: Mapping[str, Mapping[str, Any]], name: str, bulk_change_id: int | None) -> str | None:
    """The attribute's string value in either shape; ``None`` when the attribute is absent."""
    if name not in attrs:
        return None
    attribute = attrs[name]
    if not isinstance(attribute, Mapping):
        raise MalformedMessage(f"attribute {name} must be a mapping, got {attribute!r}", bulk_change_id)
    value = attribute.get("StringValue", attribute.get("stringValue"))
    if not isinstance(value, str):
        raise MalformedMessage(f"attribute {name} has no string value: {attribute!r}", bulk_change_id)
    return value


def _parse_int(name: str, raw: str, *, minimum: int, bulk_change_id: int | None) -> int:
    # Stricter than int(): no "1_000", no "12.0", no unicode digits; a Number attribute from a well-behaved
    # producer is plain decimal digits.
    text = raw.strip()
    if not _INT_PATTERN.fullmatch(text):
        raise MalformedMessage(f"attribute {name} is not an integer: {raw!r}", bulk_change_id)
    value = int(text)
    if value < minimum:
        bound = "positive" if minimum == 1 else f">= {minimum}"
        raise MalformedMessage(f"attribute {name} must be {bound}: {raw!r}", bulk_change_id)
    if value > _MAX_BIGINT:
        raise MalformedMessage(f"attribute {name} is out of range: {raw!r}", bulk_change_id)
    return value


def _parse_bool(name: str, raw: str, bulk_change_id: int | None) -> bool:
    # Like .NET bool.Parse: "true"/"false" in any case, surrounding spaces ignored, nothing else.
    try:
        return _BOOL_VALUES[raw.strip().lower()]
    except KeyError:
        raise MalformedMessage(f"attribute {name} is not a boolean: {raw!r}", bulk_change_id) from None
