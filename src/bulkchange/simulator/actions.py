"""Asynchronous provisioning requests and the device state machine.

A request (activate/deactivate/suspend/restore) is accepted synchronously and
each of its devices becomes a :class:`PendingAction` due after a delay. Checks
that ThingSpace can only answer asynchronously (wrong state, wrong account,
daily line limit) end as a fault outcome that is reported through the
CarrierService callback, never as a synchronous error.

Activation is validated at submit time because that is when the device enters
``pending activation`` (so a second activation is "in progress"); the other
actions are validated against the state at completion time, which makes
back-to-back requests on one line apply in order.
"""

from __future__ import annotations

import heapq
import itertools
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

from . import errors
from .counters import Counters
from .devices import DeviceStore, SimDevice
from .limits import PerLineDailyLimiter

ASYNC_ACTIONS: tuple[str, ...] = ("activate", "deactivate", "suspend", "restore")
Fault = tuple[str, str]

# (action, current state) -> new state, for the legal transitions at completion time.
TRANSITIONS: dict[tuple[str, str], str] = {
    ("activate", "pending activation"): "active",
    ("deactivate", "active"): "deactive",
    ("suspend", "active"): "suspend",
    ("restore", "suspend"): "active",
}


@dataclass
class AsyncRequest:
    """Book-keeping for ``/accounts/{a}/requests/{id}/status``."""

    request_id: str
    account: str
    action: str
    outcomes: list[bool | None]

    @property
    def status(self) -> str:
        if any(outcome is None for outcome in self.outcomes):
            return "Pending"
        return "Success" if all(self.outcomes) else "Failure"


@dataclass
class PendingAction:
    request_id: str
    index: int
    action: str
    account: str
    ids: list[tuple[str, str]]
    iccid: str | None
    fault: Fault | None = None
    service_plan: str | None = None
    prior_state: str | None = None


@dataclass
class Completion:
    """The result of one device's action, ready to be turned into a callback."""

    request_id: str
    account: str
    action: str
    ids: list[tuple[str, str]]
    device: SimDevice | None
    fault: Fault | None


@dataclass
class ActionEngine:
    store: DeviceStore
    counters: Counters
    daily: PerLineDailyLimiter
    activation_delay_s: float
    action_delay_s: float
    requests: dict[str, AsyncRequest] = field(default_factory=dict)
    _heap: list[tuple[float, int, PendingAction]] = field(default_factory=list)
    _seq: itertools.count[int] = field(default_factory=itertools.count)

    def __len__(self) -> int:
        return len(self._heap)

    def submit(
        self,
        action: str,
        account: str,
        devices: Sequence[list[tuple[str, str]]],
        now: float,
        service_plan: str | None = None,
        group_name: str | None = None,
    ) -> str:
        """Accept a request for ``devices`` (each a list of (kind, id)) and return its requestId."""
        request_id = str(uuid.uuid4())
        self.requests[request_id] = AsyncRequest(request_id, account, action, [None] * len(devices))
        delay = self.activation_delay_s if action == "activate" else self.action_delay_s
        for index, ids in enumerate(devices):
            pending = PendingAction(request_id, index, action, account, list(ids), None, service_plan=service_plan)
            device = self.store.find_any(ids)
            if device is None and action == "activate":
                device = self._add_for_activation(ids, account, service_plan, group_name, now)
            if device is None or device.account != account:
                pending.fault = errors.FAULT_NOT_IN_ACCOUNT
            else:
                pending.iccid = device.iccid
                pending.fault = self._submit_check(action, device, now)
                if pending.fault is None and action == "activate":
                    pending.prior_state = device.state
                    device.state = "pending activation"
            heapq.heappush(self._heap, (now + delay, next(self._seq), pending))
        return request_id

    def _add_for_activation(
        self,
        ids: list[tuple[str, str]],
        account: str,
        service_plan: str | None,
        group_name: str | None,
        now: float,
    ) -> SimDevice | None:
        """ThingSpace adds unknown devices to the account before activating them."""
        by_kind = dict(ids)
        iccid = by_kind.get("iccid")
        if not iccid:
            return None
        device = self.store.add(
            iccid=iccid,
            imei=by_kind.get("imei"),
            state="preactive",
            account=account,
            service_plan=service_plan,
            now=now,
            group_names=[group_name] if group_name else (),
        )
        self.counters.action(iccid, "add")
        return device

    def _submit_check(self, action: str, device: SimDevice, now: float) -> Fault | None:
        if action == "activate":
            if device.state == "pending activation":
                return errors.FAULT_ACTIVATION_IN_PROGRESS
            if device.state == "active":
                return errors.FAULT_ALREADY_ACTIVE
            if device.state not in ("preactive", "deactive"):
                return errors.FAULT_INVALID_TRANSITION
        if not self.daily.try_acquire(device.iccid, now):
            return errors.FAULT_DAILY_LIMIT
        return None

    def pop_due(self, now: float) -> list[Completion]:
        """Complete every action whose time has come, in due order."""
        done: list[Completion] = []
        while self._heap and self._heap[0][0] <= now:
            done.append(self._complete(heapq.heappop(self._heap)[2], now))
        return done

    def _complete(self, pending: PendingAction, now: float) -> Completion:
        fault = pending.fault
        device = self.store.find("iccid", pending.iccid) if pending.iccid else None
        if fault is None:
            if device is None or device.account != pending.account:
                fault = errors.FAULT_NOT_IN_ACCOUNT
            else:
                fault = self._apply(pending, device, now)
        request = self.requests.get(pending.request_id)
        if request is not None:
            request.outcomes[pending.index] = fault is None
        snapshot = device.copy() if device is not None else None
        return Completion(pending.request_id, pending.account, pending.action, pending.ids, snapshot, fault)

    def _apply(self, pending: PendingAction, device: SimDevice, now: float) -> Fault | None:
        target = TRANSITIONS.get((pending.action, device.state))
        if target is None:
            if pending.action == "deactivate" and device.state == "deactive":
                return errors.FAULT_ALREADY_DEACTIVE
            return errors.FAULT_INVALID_TRANSITION
        if pending.action == "activate":
            self.store.assign_line(device, now)
            if pending.service_plan:
                device.service_plan = pending.service_plan
        elif pending.action == "deactivate":
            self.store.release_line(device)
        device.state = target
        self.counters.action(device.iccid, pending.action)
        return None
