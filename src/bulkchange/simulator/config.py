"""Configuration models for the ThingSpace simulator.

Both models are pydantic so that the same shapes can be set from Python, parsed
from the ``POST /_sim/faults`` JSON body and built from CLI flags without three
hand-written parsers drifting apart.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

#: Endpoint-name prefixes that fault injection applies to by default: the device
#: actions and the request-status poll, i.e. the calls a bulk engine must survive.
DEFAULT_FAULT_ENDPOINTS: frozenset[str] = frozenset({"devices/", "requests/status"})


class FaultConfig(BaseModel):
    """Deterministic (given ``seed``) fault injection settings.

    Probabilities are per eligible request (or per callback for ``p_callback_*``).
    ``endpoints`` holds endpoint-name prefixes (the keys used in
    ``Simulator.counters.requests``, e.g. ``"devices/"`` or ``"session/login"``).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    seed: int | None = None
    p_server_error: float = Field(default=0.0, ge=0.0, le=1.0)
    p_rate_limited: float = Field(default=0.0, ge=0.0, le=1.0)
    retry_after_s: int = Field(default=1, ge=1)
    p_slow: float = Field(default=0.0, ge=0.0, le=1.0)
    slow_s: float = Field(default=30.0, ge=0.0)
    p_malformed: float = Field(default=0.0, ge=0.0, le=1.0)
    session_expire_every: int = Field(default=0, ge=0)
    p_callback_lost: float = Field(default=0.0, ge=0.0, le=1.0)
    p_callback_duplicate: float = Field(default=0.0, ge=0.0, le=1.0)
    p_callback_delayed: float = Field(default=0.0, ge=0.0, le=1.0)
    callback_delay_s: float = Field(default=60.0, ge=0.0)
    callback_out_of_order: bool = False
    endpoints: frozenset[str] = DEFAULT_FAULT_ENDPOINTS

    def applies_to(self, endpoint: str) -> bool:
        """True when request faults may be injected into ``endpoint``."""
        return any(endpoint.startswith(prefix) for prefix in self.endpoints)


class SimulatorConfig(BaseModel):
    """Credentials, timings and limits of one simulated ThingSpace tenant.

    Defaults mirror the documented production values (1 h tokens, 20 min idle
    sessions, lockout after 5 failures, 100 activations/min, 10k devices per
    request, 2000 devices per list page, 4 callback attempts 5 min apart).
    """

    model_config = ConfigDict(extra="forbid")

    client_id: str = "sim-client"
    client_secret: str = "sim-secret"  # noqa: S105 - simulator fixture credential
    username: str = "sim-user"
    password: str = "sim-pass"  # noqa: S105 - simulator fixture credential
    account: str = "0000123456-00001"
    token_ttl_s: float = Field(default=3600.0, gt=0)
    session_idle_s: float = Field(default=1200.0, gt=0)
    lockout_after: int = Field(default=5, ge=1)
    activation_delay_s: float = Field(default=2.0, ge=0)
    # Network + carrier processing time added to every M2M answer (benchmarks run with real-ish latency).
    latency_s: float = Field(default=0.0, ge=0)
    action_delay_s: float = Field(default=0.0, ge=0)
    max_devices_per_request: int = Field(default=10000, ge=1)
    activate_requests_per_minute: int = Field(default=100, ge=1)
    daily_actions_per_line: int = Field(default=5, ge=1)
    list_page_size: int = Field(default=2000, ge=1)
    callback_max_attempts: int = Field(default=4, ge=1)
    callback_retry_interval_s: float = Field(default=300.0, ge=0)
    callback_timeout_s: float = Field(default=5.0, gt=0)
    # Callbacks POSTed at once (each on its own kept-alive connection). ThingSpace's own fan-out is not
    # documented. httpx's cost per request grows with its pool's connection count (against a bare server
    # on this project's 2-core machine: 3.1 ms of sender CPU per callback with 32 connections, 1.7 ms with
    # 8), and the simulator shares the machine with the receiver it sends to; 16 keeps enough in flight
    # for the receiver's group commit (docs/benchmarks.md).
    callback_concurrency: int = Field(default=16, ge=1, le=256)
    enforce_callback_ports: bool = False
    faults: FaultConfig = Field(default_factory=FaultConfig)
