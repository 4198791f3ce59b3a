"""Observable counters: what clients asked for and what the simulator really did.

``actions`` only counts operations that were *performed* (state changed or add
accepted), so a test can prove a client never made the carrier do something
twice even when it retried requests whose outcome it could not know.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Counters:
    requests: dict[str, int] = field(default_factory=dict)
    actions: dict[str, dict[str, int]] = field(default_factory=dict)
    faults: dict[str, int] = field(default_factory=dict)
    callbacks_sent: int = 0
    callbacks_acked: int = 0
    callbacks_failed: int = 0
    # The most M2M requests the simulator was answering at once (a client's concurrency, as the carrier sees it).
    max_in_flight: int = 0

    def request(self, endpoint: str) -> None:
        self.requests[endpoint] = self.requests.get(endpoint, 0) + 1

    def action(self, iccid: str, action: str) -> None:
        per_device = self.actions.setdefault(iccid, {})
        per_device[action] = per_device.get(action, 0) + 1

    def saw_in_flight(self, n: int) -> None:
        self.max_in_flight = max(self.max_in_flight, n)

    def fault(self, kind: str) -> None:
        self.faults[kind] = self.faults.get(kind, 0) + 1

    def snapshot(self) -> Counters:
        return copy.deepcopy(self)

    def as_json(self) -> dict[str, Any]:
        return asdict(self)
