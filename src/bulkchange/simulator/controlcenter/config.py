"""Settings of the Control Center simulator.

Control Center's public material leaves much of its behaviour unstated (see docs/controlcenter.md,
"Inferred behaviour"). Wherever the simulator has to pick one answer, the choice is a setting here, so a
test can switch to the other plausible behaviour instead of the simulator silently asserting a guess.
Pydantic models, so Python, the ``POST /_sim/faults`` body and the CLI flags share one parser.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

#: Every SIM status value the simulator knows (REST spelling, upper case).
STATUSES: tuple[str, ...] = (
    "INVENTORY",
    "TEST_READY",
    "ACTIVATION_READY",
    "ACTIVATED",
    "DEACTIVATED",
    "RETIRED",
    "PURGED",
    "REPLACED",
    "GLOBAL_IN_TRANSFER",
)

#: The statuses an enterprise account may set through the API by default. TEST_READY is the operator's,
#: REPLACED and GLOBAL_IN_TRANSFER are Control Center's own, PURGED is permanent and often admin-only.
ACCOUNT_SETTABLE: frozenset[str] = frozenset({"INVENTORY", "ACTIVATION_READY", "ACTIVATED", "DEACTIVATED", "RETIRED"})


def default_transitions() -> dict[str, frozenset[str]]:
    """From every status except PURGED (terminal) to any account-settable status."""
    return {status: (frozenset() if status == "PURGED" else ACCOUNT_SETTABLE) for status in STATUSES}


#: The kinds of request fault the simulator can inject (see :class:`ControlCenterFaults`).
FaultKind = Literal["server_error", "rate_limited", "slow", "malformed", "missing_iccid", "not_applied"]
FAULT_KINDS: tuple[str, ...] = ("server_error", "rate_limited", "slow", "malformed", "missing_iccid", "not_applied")

#: Endpoint names (the keys of ``counters.requests``) that faults apply to by default: every API call.
DEFAULT_FAULT_ENDPOINTS: frozenset[str] = frozenset({"devices/"})


class ControlCenterFaults(BaseModel):
    """Deterministic (given ``seed``) fault injection.

    Probabilities are per eligible request. ``endpoints`` holds endpoint-name prefixes (``devices/get``,
    ``devices/edit``, ``devices/search``, ``devices/auditTrails``). ``iccid_faults`` makes faults
    certain for the listed ICCIDs on every eligible call about that device (until the faults are
    replaced). ``missing_iccid`` and ``not_applied`` only ever concern Edit Device Details (PUT).

    - ``server_error``: ``server_error_status`` before doing anything.
    - ``rate_limited``: 429 / ``40000029`` before doing anything (on top of the real limiter).
    - ``slow``: the work is done, the answer comes ``slow_s`` later (a client timeout then cannot know).
    - ``malformed``: the work is done, the 2xx body is not JSON.
    - ``missing_iccid``: the change is made, the 2xx body is ``{}``.
    - ``not_applied``: 200 ``{"iccid": …}``, the device is left unchanged and the audit trail gets a
      record per requested field with ``ControlCenterConfig.audit_error_status``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    seed: int | None = None
    p_server_error: float = Field(default=0.0, ge=0.0, le=1.0)
    server_error_status: int = Field(default=500, ge=500, le=599)
    p_rate_limited: float = Field(default=0.0, ge=0.0, le=1.0)
    retry_after_s: int | None = Field(default=None, ge=1)
    p_slow: float = Field(default=0.0, ge=0.0, le=1.0)
    slow_s: float = Field(default=30.0, ge=0.0)
    p_malformed: float = Field(default=0.0, ge=0.0, le=1.0)
    p_missing_iccid: float = Field(default=0.0, ge=0.0, le=1.0)
    p_not_applied: float = Field(default=0.0, ge=0.0, le=1.0)
    iccid_faults: dict[str, frozenset[FaultKind]] = Field(default_factory=dict)
    endpoints: frozenset[str] = DEFAULT_FAULT_ENDPOINTS

    def applies_to(self, endpoint: str) -> bool:
        return any(endpoint.startswith(prefix) for prefix in self.endpoints)


class ControlCenterConfig(BaseModel):
    """One simulated Control Center pod with one primary user and account.

    Defaults follow the documented values (1 TPS, one call in flight, pages of at most 50, audit history
    of 30 days by default and 365 at most, effective dates at most 180 days ahead).
    """

    model_config = ConfigDict(extra="forbid")

    username: str = "sim-user"
    api_key: str = "sim-api-key"
    account_id: str = "100020620"
    # --- limits -------------------------------------------------------------------------------------------
    tps: float = Field(default=1.0, gt=0)
    # Capacity of the per-account token bucket: how many calls may arrive back to back after an idle spell.
    # The real service's tolerance is not published; 1 means "never two calls closer than 1/tps".
    tps_burst: float = Field(default=1.0, ge=1.0)
    max_in_flight: int = Field(default=1, ge=1)
    # Whether the throttling answer carries HTTP 429 (both were reported together; not guaranteed).
    rate_limit_http_status: int = Field(default=429, ge=400, le=499)
    # Added to every API answer (carrier processing time); the call counts as in flight meanwhile.
    latency_s: float = Field(default=0.0, ge=0)
    page_size_max: int = Field(default=50, ge=1)
    audit_days_default: int = Field(default=30, ge=1)
    audit_days_max: int = Field(default=365, ge=1)
    effective_date_max_days: int = Field(default=180, ge=0)
    # Search refuses a modifiedSince in the future or older than this many days (None: no lower bound).
    modified_since_max_age_days: int | None = Field(default=365, ge=1)
    # --- statuses ---------------------------------------------------------------------------------------------
    transitions: dict[str, frozenset[str]] = Field(default_factory=default_transitions)
    # Status values are compared exactly (upper case); False also accepts "Activated" / "activated".
    status_case_sensitive: bool = True
    # Setting the current status again: 200 and no change; True also writes an audit record.
    audit_same_status: bool = True
    # Where TEST_READY goes once its test quota is used (per device overridable).
    test_ready_target: str = "ACTIVATION_READY"
    # --- plans ------------------------------------------------------------------------------------------------
    rate_plans: frozenset[str] = frozenset({"POD19 1GB", "POD19 5GB", "POD19 Suspend"})
    communication_plans: frozenset[str] = frozenset({"POD19 Data", "POD19 Data+SMS"})
    default_rate_plan: str = "POD19 1GB"
    default_communication_plan: str = "POD19 Data"
    # --- edit answers -------------------------------------------------------------------------------------
    edit_status_code: int = Field(default=200, ge=200, le=299)
    scheduled_status_code: int = Field(default=202, ge=200, le=299)
    # --- audit trail ------------------------------------------------------------------------------------------
    audit_ok_status: str = "Executed"
    audit_error_status: str = "Error"
    faults: ControlCenterFaults = Field(default_factory=ControlCenterFaults)

    @field_validator("transitions")
    @classmethod
    def _known_statuses(cls, value: dict[str, frozenset[str]]) -> dict[str, frozenset[str]]:
        named = set(value) | {target for targets in value.values() for target in targets}
        unknown = named - set(STATUSES)
        if unknown:
            raise ValueError(f"unknown status values in transitions: {sorted(unknown)}")
        return value

    @model_validator(mode="after")
    def _plans_known(self) -> ControlCenterConfig:
        if self.default_rate_plan not in self.rate_plans:
            raise ValueError("default_rate_plan must be one of rate_plans")
        if self.default_communication_plan not in self.communication_plans:
            raise ValueError("default_communication_plan must be one of communication_plans")
        if self.test_ready_target not in STATUSES:
            raise ValueError("test_ready_target must be a status value")
        return self

    def may_transition(self, current: str, target: str) -> bool:
        return target in self.transitions.get(current, frozenset())
