"""Seeded fault decisions, and scripted ones.

All randomness of the simulator flows through one :class:`random.Random`
seeded from :class:`FaultConfig.seed`, so a failing client run can be replayed
exactly by re-running with the same seed and the same request sequence.
A scripted fault (:meth:`FaultInjector.script`) hits the next N eligible
requests for certain, ahead of the random ones and without drawing from them.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TypeVar

from .config import DEFAULT_FAULT_ENDPOINTS, FaultConfig

T = TypeVar("T")


@dataclass(frozen=True)
class RequestFaults:
    """What to do to one eligible request."""

    server_error: bool = False
    rate_limited: bool = False
    slow: bool = False
    malformed: bool = False
    refused: bool = False


SCRIPTABLE: frozenset[str] = frozenset({"server_error", "rate_limited", "slow", "malformed", "refused"})
"""Faults :meth:`FaultInjector.script` accepts: the ``RequestFaults`` field set for the scripted requests
(``refused``: a 400 M2M error, nothing done)."""


@dataclass
class _Scripted:
    fault: str
    remaining: int
    endpoints: frozenset[str]


@dataclass(frozen=True)
class CallbackFaults:
    """What to do to one outgoing callback message."""

    lost: bool = False
    duplicate: bool = False
    delayed: bool = False


class FaultInjector:
    """Draws fault decisions from a config; replace the config to reset the sequence."""

    def __init__(self, config: FaultConfig) -> None:
        self.config = config
        self._rng = random.Random(config.seed)
        self._session_calls = 0
        self._scripted: list[_Scripted] = []

    def _hit(self, p: float) -> bool:
        # Draw only for enabled faults, so enabling one fault does not perturb
        # another fault's sequence more than necessary.
        return p > 0 and self._rng.random() < p

    def script(self, fault: str, count: int = 1, endpoints: frozenset[str] = DEFAULT_FAULT_ENDPOINTS) -> None:
        """Hit the next ``count`` requests to ``endpoints`` (name prefixes) with ``fault`` (see SCRIPTABLE)."""
        if fault not in SCRIPTABLE:
            raise ValueError(f"fault must be one of {sorted(SCRIPTABLE)}")
        if count < 1:
            raise ValueError("count must be >= 1")
        self._scripted.append(_Scripted(fault, count, frozenset(endpoints)))

    def _next_scripted(self, endpoint: str) -> RequestFaults | None:
        for scripted in self._scripted:
            if any(endpoint.startswith(prefix) for prefix in scripted.endpoints):
                scripted.remaining -= 1
                if scripted.remaining == 0:
                    self._scripted.remove(scripted)
                return RequestFaults(**{scripted.fault: True})
        return None

    def for_request(self, endpoint: str) -> RequestFaults:
        scripted = self._next_scripted(endpoint)
        if scripted is not None:
            return scripted
        cfg = self.config
        if not cfg.applies_to(endpoint):
            return RequestFaults()
        return RequestFaults(
            server_error=self._hit(cfg.p_server_error),
            rate_limited=self._hit(cfg.p_rate_limited),
            slow=self._hit(cfg.p_slow),
            malformed=self._hit(cfg.p_malformed),
        )

    def session_should_expire(self, endpoint: str) -> bool:
        """Counts session-bearing eligible calls; every Nth one loses its session."""
        every = self.config.session_expire_every
        if every <= 0 or not self.config.applies_to(endpoint):
            return False
        self._session_calls += 1
        return self._session_calls % every == 0

    def for_callback(self) -> CallbackFaults:
        cfg = self.config
        return CallbackFaults(
            lost=self._hit(cfg.p_callback_lost),
            duplicate=self._hit(cfg.p_callback_duplicate),
            delayed=self._hit(cfg.p_callback_delayed),
        )

    def shuffle(self, items: list[T]) -> None:
        if self.config.callback_out_of_order and len(items) > 1:
            self._rng.shuffle(items)
