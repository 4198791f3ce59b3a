"""Property tests of the validators: ICCID / IMEI (Luhn), the target status parser, the transition matrix.

No exception but the documented one escapes, and a refusal says what is wrong.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bulkchange.carrier.thingspace.adapter import ThingSpaceCarrier
from bulkchange.domain.identifiers import iccid_problem, imei_problem, luhn_check_digit, luhn_valid, random_luhn_number
from bulkchange.domain.statuses import DEVICE_STATUS_NAMES, TargetStatus

digits = st.text(alphabet="0123456789", min_size=1, max_size=30)


@st.composite
def valid_iccids(draw: st.DrawFn) -> str:
    body = "89" + draw(st.text(alphabet="0123456789", min_size=16, max_size=17))
    return body + luhn_check_digit(body)


@st.composite
def valid_imeis(draw: st.DrawFn) -> str:
    body = draw(st.text(alphabet="0123456789", min_size=14, max_size=14))
    return body + luhn_check_digit(body)


@given(st.randoms(use_true_random=False), st.sampled_from(["8901260", "890117"]))
def test_made_up_iccids_keep_their_prefix_and_pass_the_checks(rng: random.Random, prefix: str) -> None:
    iccid = random_luhn_number(prefix, 20, rng)
    assert iccid.startswith(prefix) and len(iccid) == 20 and iccid_problem(iccid) is None
    assert imei_problem(random_luhn_number("35", 15, rng)) is None


@given(st.text())
def test_identifier_checks_are_total(value: str) -> None:
    for check in (iccid_problem, imei_problem):
        problem = check(value)
        assert problem is None or (isinstance(problem, str) and problem)
    assert isinstance(luhn_valid(value), bool)


@given(valid_iccids())
def test_valid_iccids_pass(value: str) -> None:
    assert iccid_problem(value) is None


@given(valid_imeis())
def test_valid_imeis_pass(value: str) -> None:
    assert imei_problem(value) is None


@given(valid_iccids(), st.data())
def test_any_single_digit_change_of_an_iccid_is_refused(value: str, data: st.DataObject) -> None:
    i = data.draw(st.integers(min_value=2, max_value=len(value) - 1))  # keep the 89 prefix
    new = data.draw(st.sampled_from([d for d in "0123456789" if d != value[i]]))
    changed = value[:i] + new + value[i + 1 :]
    assert iccid_problem(changed) == "ICCID check digit is wrong (Luhn)"


@given(valid_imeis(), st.data())
def test_any_single_digit_change_of_an_imei_is_refused(value: str, data: st.DataObject) -> None:
    i = data.draw(st.integers(min_value=0, max_value=len(value) - 1))
    new = data.draw(st.sampled_from([d for d in "0123456789" if d != value[i]]))
    assert imei_problem(value[:i] + new + value[i + 1 :]) == "IMEI check digit is wrong (Luhn)"


@given(st.text().filter(lambda s: not s.isdigit()))
def test_non_digits_are_refused_with_a_reason(value: str) -> None:
    excel = "Excel rewrote this number"  # a value that reads as a number in scientific notation ("0E0")
    iccid, imei = iccid_problem(value), imei_problem(value)
    assert iccid in {"ICCID is required", "ICCID must contain digits only"} or (iccid or "").startswith(excel)
    assert imei in {"IMEI is required", "IMEI must contain digits only"} or (imei or "").startswith(excel)


@given(digits.filter(lambda s: not 19 <= len(s) <= 20))
def test_wrong_length_iccids_name_the_length(value: str) -> None:
    assert iccid_problem(value) == f"ICCID must be 19 or 20 digits (got {len(value)})"


@given(st.one_of(st.none(), st.text()))
def test_status_parse_returns_a_member_or_refuses_naming_the_accepted_values(raw: str | None) -> None:
    try:
        parsed = TargetStatus.parse(raw)
    except ValueError as exc:
        text = str(exc)
        assert "unknown status" in text or "cannot be set by a bulk change" in text  # e.g. Control Center's PURGED
        assert all(m.value in text for m in TargetStatus)
    else:
        assert isinstance(parsed, TargetStatus)


@given(
    st.sampled_from([m.value for m in TargetStatus] + ["deactivated", "Suspended", "PENDING_ACTIVATION"]),
    st.text(alphabet=" \t\n", max_size=3),
    st.text(alphabet=" \t\n", max_size=3),
    st.booleans(),
)
def test_status_parse_ignores_case_and_surrounding_space(name: str, left: str, right: str, upper: bool) -> None:
    raw = left + (name.upper() if upper else name) + right
    assert isinstance(TargetStatus.parse(raw), TargetStatus)


@given(
    st.one_of(st.none(), st.sampled_from(sorted(DEVICE_STATUS_NAMES.values())), st.text(max_size=20)),
    st.sampled_from(list(TargetStatus)),
    st.booleans(),
)
def test_transition_check_is_total_and_names_both_ends(current: str | None, target: TargetStatus, ignore: bool) -> None:
    problem = ThingSpaceCarrier().transition_problem(current, target, ignore_current_status=ignore)
    if ignore or current is None:
        assert problem is None
    if problem is not None:
        assert repr(current) in problem and repr(target.value) in problem and "allowed from" in problem


@pytest.mark.parametrize("target", list(TargetStatus))
def test_a_device_unknown_locally_may_be_asked_anything(target: TargetStatus) -> None:
    assert ThingSpaceCarrier().transition_problem(None, target, ignore_current_status=False) is None
