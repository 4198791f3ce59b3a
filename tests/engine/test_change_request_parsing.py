"""A change's request is parsed once per loaded row and text (``changes.request_of``)."""

from __future__ import annotations

import json

from bulkchange.engine import changes as ch
from bulkchange.store.tables import M2MDeviceChange


def _request(iccid: str, rate_plan: str) -> str:
    return json.dumps({"UpdateStatus": "suspend", "Request": {"ICCID": iccid, "RatePlanCode": rate_plan}})


def _change(text: str) -> M2MDeviceChange:
    return M2MDeviceChange(change_request=text, target_status="suspend", plan="Suspend", step_index=0)


def test_a_request_is_read_again_when_its_text_changes_and_never_shared_between_changes() -> None:
    change, twin = _change(_request("8901", "plan-a")), _change(_request("8901", "plan-a"))
    first = ch.request_of(change)
    assert ch.request_of(change) is first  # the same row and text: parsed once
    assert ch.request_of(twin) is not first and ch.request_of(twin) == first  # another row: its own
    change.change_request = _request("8901", "plan-b")
    assert ch.request_of(change).request.rate_plan_code == "plan-b"
    assert ch.view_of(twin).request.request.rate_plan_code == "plan-a"
