"""What clients asked the simulated Control Center for and what it really did.

``puts`` counts Edit Device Details requests about a device of the caller's account that passed
authentication and the rate limits, valid or not; ``not_made`` those of them accepted and not made (the
injected "not applied": answered 200, an error record in the audit trail), so an edit sent again to carry
one out can be told from an edit repeated; ``changes`` counts field changes really made, so a test can prove
a client never made the carrier change a device twice. ``throttled`` counts every 429 /
``40000029`` answer by its reason: ``tps`` (the per-account rate), ``in_flight`` (a call arrived while the
account already had its allowed calls open) and ``injected`` (fault injection). ``max_in_flight`` is the
most calls one account had open at once, counting the ones refused for it.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class ControlCenterCounters:
    requests: dict[str, int] = field(default_factory=dict)
    puts: dict[str, int] = field(default_factory=dict)
    not_made: dict[str, int] = field(default_factory=dict)
    changes: dict[str, dict[str, int]] = field(default_factory=dict)
    throttled: dict[str, int] = field(default_factory=dict)
    faults: dict[str, int] = field(default_factory=dict)
    unauthorized: int = 0
    max_in_flight: int = 0

    @property
    def rate_limited(self) -> int:
        """Every 429 / ``40000029`` answer, whatever its reason."""
        return sum(self.throttled.values())

    def request(self, endpoint: str) -> None:
        self.requests[endpoint] = self.requests.get(endpoint, 0) + 1

    def put(self, iccid: str) -> None:
        self.puts[iccid] = self.puts.get(iccid, 0) + 1

    def not_made_edit(self, iccid: str) -> None:
        self.not_made[iccid] = self.not_made.get(iccid, 0) + 1

    def change(self, iccid: str, field_name: str) -> None:
        per_device = self.changes.setdefault(iccid, {})
        per_device[field_name] = per_device.get(field_name, 0) + 1

    def throttle(self, reason: str) -> None:
        self.throttled[reason] = self.throttled.get(reason, 0) + 1

    def fault(self, kind: str) -> None:
        self.faults[kind] = self.faults.get(kind, 0) + 1

    def saw_in_flight(self, n: int) -> None:
        self.max_in_flight = max(self.max_in_flight, n)

    def snapshot(self) -> ControlCenterCounters:
        return copy.deepcopy(self)

    def as_json(self) -> dict[str, Any]:
        body = asdict(self)
        body["rate_limited"] = self.rate_limited
        return body
