"""The Control Center adapter against the Control Center simulator (real HTTP on loopback).

The simulator's account limits are set far above what the suite needs: the suite checks the adapter's
contract with one attempt per call, and the limits (TPS, one call in flight) have their own tests with the
shared limiter. A POD 19 account: every edit is verified by reading the device and its audit trail.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any

from bulkchange.carrier.controlcenter.adapter import ControlCenterCarrier, controlcenter_account
from bulkchange.carrier.port import CarrierAccount
from bulkchange.domain.change_request import StatusUpdateRequest
from bulkchange.domain.outcomes import CarrierFacts
from bulkchange.domain.statuses import TargetStatus
from bulkchange.simulator import run_in_thread
from bulkchange.simulator.controlcenter import (
    API_ROOT,
    ControlCenterConfig,
    ControlCenterFaults,
    ControlCenterSimulator,
)

from .harness import Fault, TargetCase

_SCRIPTED = {
    Fault.RATE_LIMITED: "rate_limited",
    Fault.SERVER_ERROR: "server_error",
    Fault.TIMEOUT_AFTER_SEND: "slow",
    Fault.REFUSED: "refused",
}
_RATE_PLANS = ("POD19 1GB", "POD19 5GB")
_COMMUNICATION_PLANS = ("POD19 Data", "POD19 Data+SMS")


class ControlCenterHarness:
    carrier = ControlCenterCarrier()
    cases = {
        TargetStatus.INVENTORY: TargetCase(start="ACTIVATION_READY", end="INVENTORY"),
        TargetStatus.PENDING_ACTIVATION: TargetCase(start="INVENTORY", end="ACTIVATION_READY"),
        TargetStatus.ACTIVE: TargetCase(start="INVENTORY", end="ACTIVATED"),
        TargetStatus.DEACTIVE: TargetCase(start="ACTIVATED", end="DEACTIVATED"),
        TargetStatus.RETIRED: TargetCase(start="DEACTIVATED", end="RETIRED"),
    }
    max_request = 10  # changes per send: one edit per device, no bulk request
    shared_requests = False
    retry_after_s = None  # Control Center sends no Retry-After
    timeout_s = 4.0

    def __init__(self) -> None:
        faults = ControlCenterFaults(slow_s=self.timeout_s * 5)
        config = ControlCenterConfig(tps=10_000, tps_burst=10_000, max_in_flight=100, faults=faults)
        self.sim = ControlCenterSimulator(config)
        self.other_user = self.sim.add_user("sim-user-2", "sim-api-key-2", "100020999")
        self._stack = contextlib.ExitStack()
        self.base_url = ""

    def __enter__(self) -> ControlCenterHarness:
        server = self._stack.enter_context(run_in_thread(self.sim, host="127.0.0.1", port=0))
        self.base_url = server.base_url + API_ROOT
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._stack.close()

    def _account(self, username: str, api_key: str, credential_id: int) -> CarrierAccount:
        return controlcenter_account(
            provider_id=credential_id,
            credential_id=credential_id,
            base_url=self.base_url,
            username=username,
            api_key=api_key,
            pod19=True,
        )

    def account(self) -> CarrierAccount:
        return self._account(self.sim.config.username, self.sim.config.api_key, 1)

    def other_account(self) -> CarrierAccount:
        return self._account(self.other_user.username, self.other_user.api_key, 2)

    def new_device(self) -> tuple[str, str | None]:
        with self.sim.lock:
            return self.sim.store.unused_iccid(), self.sim.store.ids.next_imei()

    def preload(self, iccid: str, imei: str | None, state: str) -> None:
        self.sim.add_device(iccid, state, imei=imei or "")

    def state(self, iccid: str) -> str | None:
        device = self.sim.device(iccid)
        return device.status if device else None

    def facts(self, iccid: str) -> CarrierFacts:
        device = self.sim.device(iccid)
        assert device is not None
        return CarrierFacts(msisdn=device.msisdn, ip_address=device.fixed_ip)

    def request(self, target: TargetStatus, iccid: str, imei: str | None, *, variant: int = 0) -> StatusUpdateRequest:
        return StatusUpdateRequest.model_validate(
            {
                "UpdateStatus": target.value,
                "Request": {
                    "ICCID": iccid,
                    "IMEI": imei,
                    "RatePlan": _RATE_PLANS[variant],
                    "CommunicationPlan": _COMMUNICATION_PLANS[variant],
                },
            }
        )

    def refused_plans(self) -> Sequence[tuple[TargetStatus, StatusUpdateRequest]]:
        iccid, imei = self.new_device()
        too_far = self.request(TargetStatus.ACTIVE, iccid, imei).model_copy(deep=True)
        too_far.request.effective_date = datetime.now(UTC) + timedelta(days=181)
        return [(TargetStatus.ACTIVE, too_far)]

    def inject(self, fault: Fault, *, calls: int = 1) -> None:
        self.sim.fail_next(_SCRIPTED[fault], count=calls)

    def refuse_credentials(self) -> None:
        config = self.sim.config
        self.sim.add_user(config.username, "rotated-api-key", config.account_id)

    def complete(self) -> None:
        self.sim.run_due()

    def callbacks(self, iccid: str) -> list[Any]:
        return []
