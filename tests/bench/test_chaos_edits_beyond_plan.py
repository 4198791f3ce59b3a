"""The Control Center chaos run's report of edits beyond the plan: an edit Control Center accepted and did not
make is not an edit made, so the resend that carries it out is not counted beyond the plan."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import SimpleNamespace

# Loaded from its file: putting bench/ on sys.path would let its scripts' names shadow modules in other tests.
_SPEC = importlib.util.spec_from_file_location(
    "bench_chaos_cc", Path(__file__).resolve().parents[2] / "bench" / "_chaos_cc.py"
)
assert _SPEC is not None and _SPEC.loader is not None
_chaos_cc = sys.modules["bench_chaos_cc"] = importlib.util.module_from_spec(_SPEC)  # its dataclasses look it up
_SPEC.loader.exec_module(_chaos_cc)
details = _chaos_cc.details


def _change(iccid: str, target: str) -> object:
    return SimpleNamespace(iccid=iccid, target_status=target)


def test_a_resend_of_an_edit_not_made_is_within_the_plan_and_a_real_extra_edit_is_not() -> None:
    changes = [_change("A", "deactive"), _change("B", "active"), _change("C", "active")]
    counters = {
        # A: the rate plan pre-step was not made once and sent again: 3 edits, 2 planned, 1 not made.
        # B: one edit, as planned. C: the same edit sent twice, both made.
        "puts": {"A": 3, "B": 1, "C": 2},
        "not_made": {"A": 1},
    }
    found = details(counters, changes)  # type: ignore[arg-type]
    assert found["devices_edited_beyond_plan"] == 1
    assert found["examples_edited_beyond_plan"] == {"C": 2}
    assert found["edits_not_made"] == 1
