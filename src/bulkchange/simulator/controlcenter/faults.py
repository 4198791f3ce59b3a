"""Seeded fault decisions for the Control Center simulator, and scripted ones.

One :class:`random.Random` seeded from ``ControlCenterFaults.seed``: the same seed and the same request
sequence give the same faults, so a failing client run can be replayed. A scripted fault
(:meth:`FaultInjector.script`) hits the next N eligible requests for certain, ahead of the random ones and
without drawing from them.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from .config import FAULT_KINDS, ControlCenterFaults

#: Faults that only make sense for Edit Device Details.
EDIT_ONLY: frozenset[str] = frozenset({"missing_iccid", "not_applied"})

#: Faults :meth:`FaultInjector.script` accepts: every configurable kind, plus ``refused`` (a 400 answer
#: before any work, as for a request Control Center will not carry out).
SCRIPTABLE: frozenset[str] = frozenset({*FAULT_KINDS, "refused"})


@dataclass(frozen=True)
class RequestFaults:
    server_error: bool = False
    rate_limited: bool = False
    slow: bool = False
    malformed: bool = False
    missing_iccid: bool = False
    not_applied: bool = False
    refused: bool = False


@dataclass
class _Scripted:
    fault: str
    remaining: int
    endpoints: frozenset[str] = field(default_factory=frozenset)


class FaultInjector:
    def __init__(self, config: ControlCenterFaults) -> None:
        self.config = config
        self._rng = random.Random(config.seed)
        self._scripted: list[_Scripted] = []

    def _hit(self, p: float) -> bool:
        return p > 0 and self._rng.random() < p

    def script(self, fault: str, count: int, endpoints: frozenset[str]) -> None:
        """Hit the next ``count`` requests to ``endpoints`` (name prefixes) with ``fault`` (see SCRIPTABLE);
        an edit-only fault skips reads."""
        if fault not in SCRIPTABLE:
            raise ValueError(f"fault must be one of {sorted(SCRIPTABLE)}")
        if count < 1:
            raise ValueError("count must be >= 1")
        self._scripted.append(_Scripted(fault, count, endpoints))

    def _next_scripted(self, endpoint: str, edit: bool) -> RequestFaults | None:
        for scripted in self._scripted:
            if scripted.fault in EDIT_ONLY and not edit:
                continue
            if any(endpoint.startswith(prefix) for prefix in scripted.endpoints):
                scripted.remaining -= 1
                if scripted.remaining == 0:
                    self._scripted.remove(scripted)
                return RequestFaults(**{scripted.fault: True})
        return None

    def for_request(self, endpoint: str, iccid: str | None, edit: bool) -> RequestFaults:
        scripted = self._next_scripted(endpoint, edit)
        if scripted is not None:
            return scripted
        cfg = self.config
        if not cfg.applies_to(endpoint):
            return RequestFaults()
        forced = cfg.iccid_faults.get(iccid, frozenset()) if iccid else frozenset()
        if not edit:
            forced = forced - EDIT_ONLY
        return RequestFaults(
            server_error="server_error" in forced or self._hit(cfg.p_server_error),
            rate_limited="rate_limited" in forced or self._hit(cfg.p_rate_limited),
            slow="slow" in forced or self._hit(cfg.p_slow),
            malformed="malformed" in forced or self._hit(cfg.p_malformed),
            missing_iccid="missing_iccid" in forced or (edit and self._hit(cfg.p_missing_iccid)),
            not_applied="not_applied" in forced or (edit and self._hit(cfg.p_not_applied)),
        )
