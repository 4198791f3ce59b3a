"""BulkChangeMessage: the original's attributes, both wire shapes, and refusals that name the culprit."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from bulkchange.queue import BulkChangeMessage, MalformedMessage

MAX_BIGINT = 2**63 - 1

messages = st.builds(
    BulkChangeMessage,
    bulk_change_id=st.integers(1, MAX_BIGINT),
    is_retry_new_activate_thingspace_device=st.booleans(),
    is_from_automated_update_device_status_lambda=st.booleans(),
    service_provider_id=st.integers(0, MAX_BIGINT),
    retry_number=st.integers(0, MAX_BIGINT),
)


def _lambda_shape(attrs: dict[str, dict[str, str]]) -> dict[str, dict[str, Any]]:
    """What a Lambda SQS event carries: camelCase keys plus empty list values."""
    return {
        name: {
            "stringValue": value["StringValue"],
            "stringListValues": [],
            "binaryListValues": [],
            "dataType": value["DataType"],
        }
        for name, value in attrs.items()
    }


@given(messages)
def test_attributes_round_trip(message: BulkChangeMessage) -> None:
    assert BulkChangeMessage.from_attributes(message.to_attributes()) == message


@given(messages)
def test_lambda_event_attributes_round_trip(message: BulkChangeMessage) -> None:
    assert BulkChangeMessage.from_attributes(_lambda_shape(message.to_attributes())) == message


def test_to_attributes_is_the_sqs_send_message_shape() -> None:
    message = BulkChangeMessage(
        bulk_change_id=12,
        is_retry_new_activate_thingspace_device=True,
        service_provider_id=3,
        retry_number=2,
    )
    assert message.to_attributes() == {
        "BulkChangeId": {"DataType": "Number", "StringValue": "12"},
        "IsRetryNewActivateThingSpaceDevice": {"DataType": "String", "StringValue": "True"},
        "IsFromAutomatedUpdateDeviceStatusLambda": {"DataType": "String", "StringValue": "False"},
        "ServiceProviderId": {"DataType": "Number", "StringValue": "3"},
        "RetryNumber": {"DataType": "Number", "StringValue": "2"},
    }


def test_only_the_id_is_required_and_unknown_attributes_are_ignored() -> None:
    message = BulkChangeMessage.from_attributes(
        {
            "BulkChangeId": {"DataType": "Number", "StringValue": "7"},
            "TraceId": {"DataType": "String", "StringValue": "abc"},
            "Weird": {"DataType": "Binary", "BinaryValue": b"\x00"},
        }
    )
    assert message == BulkChangeMessage(bulk_change_id=7)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("True", True), ("true", True), ("TRUE", True), (" false ", False), ("False", False), ("fAlSe", False)],
)
def test_booleans_in_any_case(raw: str, expected: bool) -> None:
    message = BulkChangeMessage.from_attributes(
        {
            "BulkChangeId": {"DataType": "Number", "StringValue": "1"},
            "IsFromAutomatedUpdateDeviceStatusLambda": {"dataType": "String", "stringValue": raw},
        }
    )
    assert message.is_from_automated_update_device_status_lambda is expected


def test_numbers_may_be_sent_as_strings_with_spaces() -> None:
    message = BulkChangeMessage.from_attributes(
        {
            "BulkChangeId": {"DataType": "String", "StringValue": " 42 "},
            "RetryNumber": {"DataType": "Number", "StringValue": "+3"},
        }
    )
    assert (message.bulk_change_id, message.retry_number) == (42, 3)


def _attrs(**values: str) -> dict[str, dict[str, str]]:
    return {name: {"DataType": "String", "StringValue": value} for name, value in values.items()}


@pytest.mark.parametrize(
    ("attrs", "attribute", "bulk_change_id"),
    [
        ({}, "BulkChangeId", None),
        (_attrs(RetryNumber="1"), "BulkChangeId", None),
        (_attrs(BulkChangeId=""), "BulkChangeId", None),
        (_attrs(BulkChangeId="abc"), "BulkChangeId", None),
        (_attrs(BulkChangeId="12.0"), "BulkChangeId", None),
        (_attrs(BulkChangeId="1_000"), "BulkChangeId", None),
        (_attrs(BulkChangeId="0"), "BulkChangeId", None),
        (_attrs(BulkChangeId="-5"), "BulkChangeId", None),
        (_attrs(BulkChangeId=str(2**63)), "BulkChangeId", None),
        ({"BulkChangeId": {"DataType": "Number"}}, "BulkChangeId", None),
        ({"BulkChangeId": "12"}, "BulkChangeId", None),
        ({"BulkChangeId": {"DataType": "Number", "StringValue": 12}}, "BulkChangeId", None),
        (_attrs(BulkChangeId="9", IsRetryNewActivateThingSpaceDevice="yes"), "IsRetryNewActivateThingSpaceDevice", 9),
        (
            _attrs(BulkChangeId="9", IsFromAutomatedUpdateDeviceStatusLambda="1"),
            "IsFromAutomatedUpdateDeviceStatusLambda",
            9,
        ),
        (_attrs(BulkChangeId="9", ServiceProviderId="x"), "ServiceProviderId", 9),
        (_attrs(BulkChangeId="9", ServiceProviderId="-1"), "ServiceProviderId", 9),
        (_attrs(BulkChangeId="9", RetryNumber="two"), "RetryNumber", 9),
        ({**_attrs(BulkChangeId="9"), "RetryNumber": {"DataType": "Number"}}, "RetryNumber", 9),
    ],
)
def test_malformed_messages_are_refused_naming_the_attribute(
    attrs: dict[str, Any], attribute: str, bulk_change_id: int | None
) -> None:
    with pytest.raises(MalformedMessage) as caught:
        BulkChangeMessage.from_attributes(attrs)
    assert attribute in caught.value.reason
    assert str(caught.value) == caught.value.reason
    assert caught.value.bulk_change_id == bulk_change_id
    assert isinstance(caught.value, ValueError)


def test_the_refusal_quotes_the_bad_value() -> None:
    with pytest.raises(MalformedMessage, match=r"RetryNumber.*'two'"):
        BulkChangeMessage.from_attributes(_attrs(BulkChangeId="9", RetryNumber="two"))


def test_attributes_that_are_not_a_mapping_are_refused() -> None:
    with pytest.raises(MalformedMessage):
        BulkChangeMessage.from_attributes([("BulkChangeId", "1")])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"bulk_change_id": 0},
        {"bulk_change_id": "12"},
        {"bulk_change_id": 1, "retry_number": -1},
        {"bulk_change_id": 1, "x": 1},
    ],
)
def test_the_model_itself_refuses_what_could_not_be_sent(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        BulkChangeMessage(**kwargs)


def test_messages_are_frozen_and_hashable() -> None:
    message = BulkChangeMessage(bulk_change_id=1)
    with pytest.raises(ValidationError):
        message.retry_number = 2  # type: ignore[misc]
    assert hash(message) == hash(BulkChangeMessage(bulk_change_id=1))
