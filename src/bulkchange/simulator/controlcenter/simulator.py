"""The :class:`ControlCenterSimulator` facade: state, one lock, the Control Center rules, the test API.

HTTP handlers (the server's event loop) and tests (other threads) share the state, so every access
takes ``self.lock``; nothing awaits while holding it. Two clocks are injected: ``clock`` is wall time
(device dates, effective dates, audit history; a :class:`~bulkchange.simulator.clock.ManualClock` lets a
test jump to a scheduled change's date) and ``monotonic`` drives the per-account rate limit.

Scheduled changes (an ``effectiveDate`` in the future) become due on the wall clock; they are applied at
the start of the next API call, or when a test calls :meth:`run_due`, so no background task is needed
and a client never observes a due change as not yet applied.
"""

from __future__ import annotations

import heapq
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..clock import Clock, system_clock
from . import errors
from .app import build_app
from .config import STATUSES, ControlCenterConfig, ControlCenterFaults
from .counters import ControlCenterCounters
from .devices import AuditRecord, CCDevice, DeviceStore
from .faults import FaultInjector, RequestFaults
from .limits import TokenBucket

if TYPE_CHECKING:
    from fastapi import FastAPI

SYSTEM_USER = "system"


@dataclass(frozen=True)
class User:
    """A Control Center user: the Basic-auth name, its API key and the enterprise account it acts for."""

    username: str
    api_key: str
    account_id: str


@dataclass(order=True)
class _Scheduled:
    due: float
    seq: int
    iccid: str = field(compare=False)
    changes: dict[str, str] = field(compare=False)
    user: str = field(compare=False)


class ControlCenterSimulator:
    """A stateful Cisco IoT Control Center REST API v1 stand-in; serve :attr:`app` over HTTP."""

    def __init__(
        self,
        config: ControlCenterConfig | None = None,
        clock: Clock | None = None,
        monotonic: Clock | None = None,
    ) -> None:
        self.config = config or ControlCenterConfig()
        self.clock: Clock = clock or system_clock
        self.monotonic: Clock = monotonic or time.monotonic
        self.lock = threading.RLock()
        self.store = DeviceStore()
        cfg = self.config
        self._users: dict[str, User] = {cfg.username: User(cfg.username, cfg.api_key, cfg.account_id)}
        self._buckets: dict[str, TokenBucket] = {}
        self._in_flight: dict[str, int] = {}
        self._counters = ControlCenterCounters()
        self.injector = FaultInjector(cfg.faults)
        self._schedule: list[_Scheduled] = []
        self._seq = 0
        self._app: FastAPI | None = None

    @property
    def app(self) -> FastAPI:
        """The ASGI application (built on first use)."""
        if self._app is None:
            self._app = build_app(self)
        return self._app

    def now(self) -> float:
        return self.clock()

    # --- users, limits ----------------------------------------------------------------------------------------

    def add_user(self, username: str, api_key: str, account_id: str | None = None) -> User:
        """Another user (e.g. of a second account, which gets its own rate limit)."""
        user = User(username, api_key, account_id or self.config.account_id)
        with self.lock:
            self._users[username] = user
        return user

    def authenticate(self, username: str, api_key: str) -> User | None:
        with self.lock:
            user = self._users.get(username)
        return user if user is not None and user.api_key == api_key else None

    def begin_call(self, account_id: str) -> int:
        """Count a call of ``account_id`` as open; return how many are open now (this one included)."""
        with self.lock:
            n = self._in_flight.get(account_id, 0) + 1
            self._in_flight[account_id] = n
            self._counters.saw_in_flight(n)
            return n

    def open_calls(self, account_id: str | None = None) -> int:
        """How many calls of the account (default: the configured one) are being answered now."""
        with self.lock:
            return self._in_flight.get(account_id or self.config.account_id, 0)

    def end_call(self, account_id: str) -> None:
        with self.lock:
            self._in_flight[account_id] -= 1

    def take_token(self, account_id: str) -> bool:
        """Spend one call of the account's per-second budget; False when it is used up."""
        with self.lock:
            bucket = self._buckets.get(account_id)
            now = self.monotonic()
            if bucket is None:
                bucket = TokenBucket(self.config.tps, self.config.tps_burst, now)
                self._buckets[account_id] = bucket
            return bucket.try_take(now)

    # --- faults & counters -----------------------------------------------------------------------------------

    @property
    def faults(self) -> ControlCenterFaults:
        with self.lock:
            return self.injector.config

    @faults.setter
    def faults(self, value: ControlCenterFaults) -> None:
        with self.lock:
            self.injector = FaultInjector(value)

    def fail_next(self, fault: str, *, count: int = 1, endpoints: frozenset[str] | None = None) -> None:
        """Hit the next ``count`` eligible calls with ``fault`` for certain (``faults.SCRIPTABLE``;
        ``endpoints``: name prefixes, by default the configured fault scope). Replacing :attr:`faults`
        drops faults scripted before."""
        with self.lock:
            self.injector.script(fault, count, self.injector.config.endpoints if endpoints is None else endpoints)

    def set_usage(self, iccid: str, data_bytes: int) -> None:
        """Set the device's data usage of the current cycle (what Get Device Usage reports)."""
        with self.lock:
            device = self.store.get(iccid)
            if device is None:
                raise KeyError(iccid)
            device.ctd_data_bytes = data_bytes

    def request_faults(self, endpoint: str, iccid: str | None, edit: bool) -> RequestFaults:
        with self.lock:
            return self.injector.for_request(endpoint, iccid, edit)

    @property
    def counters(self) -> ControlCenterCounters:
        """A consistent copy, safe to read while the server runs."""
        with self.lock:
            return self._counters.snapshot()

    def count(self) -> ControlCenterCounters:
        """The live counters; call only while holding :attr:`lock`."""
        return self._counters

    def reset_counters(self) -> None:
        with self.lock:
            self._counters = ControlCenterCounters()

    # --- devices ---------------------------------------------------------------------------------------------

    def add_device(
        self,
        iccid: str | None = None,
        status: str = "INVENTORY",
        *,
        account_id: str | None = None,
        rate_plan: str | None = None,
        communication_plan: str | None = None,
        imei: str = "",
        test_ready_target: str | None = None,
        fixed_ip: str | None = None,
    ) -> CCDevice:
        """Seed a device directly (not an API call, no audit record). Activated devices get ``dateActivated``."""
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}")
        with self.lock:
            now = self.now()
            ids = self.store.ids
            device = CCDevice(
                iccid=iccid or self.store.unused_iccid(),
                imsi=ids.next_imsi(),
                msisdn="1" + ids.next_mdn(),
                imei=imei,
                status=status,
                rate_plan=rate_plan or self.config.default_rate_plan,
                communication_plan=communication_plan or self.config.default_communication_plan,
                account_id=account_id or self.config.account_id,
                date_added=now,
                date_shipped=now,
                date_updated=now,
                date_activated=now if status == "ACTIVATED" else None,
                test_ready_target=test_ready_target,
                fixed_ip=fixed_ip,
            )
            return self.store.add(device).copy()

    def preload(self, n: int, status: str = "INVENTORY") -> list[CCDevice]:
        """Create ``n`` devices with generated Luhn-valid ICCIDs."""
        with self.lock:
            return [self.add_device(status=status) for _ in range(n)]

    def device(self, iccid: str) -> CCDevice | None:
        with self.lock:
            found = self.store.get(iccid)
            return found.copy() if found else None

    def devices(self) -> list[CCDevice]:
        with self.lock:
            return [device.copy() for device in self.store]

    def audit_trail(self, iccid: str) -> list[AuditRecord]:
        """The device's audit records, newest first (empty for an unknown ICCID)."""
        with self.lock:
            found = self.store.get(iccid)
            return list(reversed(found.audit)) if found else []

    def visible(self, user: User, iccid: str) -> CCDevice:
        """The device if it exists in the user's account; the 404 answer otherwise."""
        device = self.store.get(iccid)
        if device is None or device.account_id != user.account_id:
            raise errors.not_found(iccid)
        return device

    # --- automatic transitions (no API call) -----------------------------------------------------------------

    def use_device(self, iccid: str) -> bool:
        """The SIM's first network use: ACTIVATION_READY becomes ACTIVATED. True if the status changed."""
        return self._auto_transition(iccid, "ACTIVATION_READY", lambda _device: "ACTIVATED")

    def exhaust_test_quota(self, iccid: str) -> bool:
        """The SIM used its test quota: TEST_READY moves to its target status. True if the status changed."""
        return self._auto_transition(
            iccid, "TEST_READY", lambda device: device.test_ready_target or self.config.test_ready_target
        )

    def _auto_transition(self, iccid: str, source: str, target_of: Callable[[CCDevice], str]) -> bool:
        with self.lock:
            device = self.store.get(iccid)
            if device is None:
                raise KeyError(iccid)
            if device.status != source:
                return False
            now = self.now()
            self._apply(device, {"status": target_of(device)}, now, now, SYSTEM_USER)
            return True

    # --- edits ------------------------------------------------------------------------------------------------

    def edit(
        self, user: User, iccid: str, changes: dict[str, str], effective_at: float | None, faults: RequestFaults
    ) -> tuple[int, dict[str, str]]:
        """Edit Device Details on validated input; returns the HTTP status and body. Call under :attr:`lock`."""
        device = self.visible(user, iccid)
        now = self.now()
        if self._blocked(device, changes):
            raise errors.transition_not_allowed(device.status, changes["status"])
        body = {} if faults.missing_iccid else {"iccid": iccid}
        if faults.missing_iccid:
            self._counters.fault("missing_iccid")
        if faults.not_applied:
            self._counters.fault("not_applied")
            self._counters.not_made_edit(iccid)
            self._refuse(device, changes, now, user.username)
            return self.config.edit_status_code, body
        if effective_at is not None and effective_at > now:
            self._seq += 1
            heapq.heappush(self._schedule, _Scheduled(effective_at, self._seq, iccid, dict(changes), user.username))
            return self.config.scheduled_status_code, body
        self._apply(device, changes, now, now, user.username)
        return self.config.edit_status_code, body

    def _blocked(self, device: CCDevice, changes: dict[str, str]) -> bool:
        """True when ``changes`` asks for a status the matrix does not allow from the device's status."""
        target = changes.get("status")
        return target is not None and target != device.status and not self.config.may_transition(device.status, target)

    def _record(
        self, device: CCDevice, name: str, prior: str | None, value: str, at: float, ok: bool, user: str
    ) -> None:
        status = self.config.audit_ok_status if ok else self.config.audit_error_status
        device.audit.append(AuditRecord(name, prior or "", value, at, status, user))

    def _refuse(self, device: CCDevice, changes: dict[str, str], at: float, user: str) -> None:
        """The change is not made; the audit trail says so, one error record per requested field."""
        for name, value in changes.items():
            self._record(device, name, device.get(name), value, at, False, user)

    def _apply(self, device: CCDevice, changes: dict[str, str], now: float, effective_at: float, user: str) -> None:
        changed = False
        for name, value in changes.items():
            prior = device.get(name)
            if prior == value:
                if name == "status" and self.config.audit_same_status:
                    self._record(device, name, prior, value, effective_at, True, user)
                continue
            device.set(name, value)
            self._record(device, name, prior, value, effective_at, True, user)
            self._counters.change(device.iccid, name)
            changed = True
            if name == "status" and value == "ACTIVATED" and device.date_activated is None:
                device.date_activated = effective_at
        if changed:
            self.store.touch(device, now)

    def run_due(self) -> int:
        """Apply every scheduled change whose effective date has come; return how many were handled.

        The transition is checked again on the effective date: a change that is no longer allowed is not
        made and its audit records carry the error status.
        """
        handled = 0
        with self.lock:
            now = self.now()
            while self._schedule and self._schedule[0].due <= now:
                item = heapq.heappop(self._schedule)
                handled += 1
                device = self.store.get(item.iccid)
                if device is None:
                    continue
                if self._blocked(device, item.changes):
                    self._refuse(device, item.changes, item.due, item.user)
                    continue
                self._apply(device, item.changes, now, item.due, item.user)
        return handled

    def scheduled(self) -> int:
        """How many scheduled changes wait for their effective date."""
        with self.lock:
            return len(self._schedule)
