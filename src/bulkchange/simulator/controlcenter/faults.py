"""Seeded fault decisions for the Control Center simulator.

One :class:`random.Random` seeded from ``ControlCenterFaults.seed``: the same seed and the same request
sequence give the same faults, so a failing client run can be replayed.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from .config import ControlCenterFaults

#: Faults that only make sense for Edit Device Details.
EDIT_ONLY: frozenset[str] = frozenset({"missing_iccid", "not_applied"})


@dataclass(frozen=True)
class RequestFaults:
    server_error: bool = False
    rate_limited: bool = False
    slow: bool = False
    malformed: bool = False
    missing_iccid: bool = False
    not_applied: bool = False


class FaultInjector:
    def __init__(self, config: ControlCenterFaults) -> None:
        self.config = config
        self._rng = random.Random(config.seed)

    def _hit(self, p: float) -> bool:
        return p > 0 and self._rng.random() < p

    def for_request(self, endpoint: str, iccid: str | None, edit: bool) -> RequestFaults:
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
