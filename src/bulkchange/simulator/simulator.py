"""The :class:`Simulator` facade: shared state, one lock, and the public test API.

HTTP handlers (server event loop) and test code (other threads) both touch the
same state, so every access goes through ``self.lock``. Handlers never await
while holding it; the background worker (see :mod:`.worker`) takes it briefly
on each tick to complete due actions and collect due callbacks.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import TYPE_CHECKING, Any

from .actions import ActionEngine, Completion
from .app import build_app
from .auth import AuthState
from .callbacks import (
    CARRIER_SERVICE,
    CallbackQueue,
    ListenerRegistry,
    OutgoingCallback,
    fault_payload,
    success_payload,
)
from .clock import Clock, system_clock
from .config import FaultConfig, SimulatorConfig
from .counters import Counters
from .devices import STATES, DeviceStore, SimDevice
from .faults import FaultInjector
from .limits import PerLineDailyLimiter, SlidingWindowLimiter
from .worker import Worker

if TYPE_CHECKING:
    from fastapi import FastAPI

    from .worker import Worker


class Simulator:
    """A stateful ThingSpace M2M v1 stand-in; serve :attr:`app` over HTTP."""

    def __init__(self, config: SimulatorConfig | None = None, clock: Clock | None = None) -> None:
        self.config = config or SimulatorConfig()
        self.clock: Clock = clock or system_clock
        self.lock = threading.RLock()
        self.auth = AuthState(self.config.token_ttl_s, self.config.session_idle_s, self.config.lockout_after)
        self.store = DeviceStore()
        self.listeners = ListenerRegistry()
        self.callback_queue = CallbackQueue()
        self.inflight_callbacks = 0
        self.activate_limiter = SlidingWindowLimiter(self.config.activate_requests_per_minute, 60.0)
        self._counters = Counters()
        self.in_flight = 0  # M2M requests being answered now (under ``lock``)
        self.engine = ActionEngine(
            store=self.store,
            counters=self._counters,
            daily=PerLineDailyLimiter(self.config.daily_actions_per_line),
            activation_delay_s=self.config.activation_delay_s,
            action_delay_s=self.config.action_delay_s,
        )
        self.injector = FaultInjector(self.config.faults)
        self.worker: Worker | None = None
        self._app: FastAPI | None = None

    # --- wiring ------------------------------------------------------------------------------------------

    @property
    def app(self) -> FastAPI:
        """The ASGI application (built once, lazily, to keep imports light)."""
        if self._app is None:
            self._app = build_app(self)
        return self._app

    def now(self) -> float:
        return self.clock()

    def ensure_worker(self) -> None:
        """Start the background worker in the running loop if it is not running there yet."""
        loop = asyncio.get_running_loop()
        with self.lock:
            if self.worker is not None and self.worker.running_in(loop):
                return
            self.worker = Worker(self)
            self.worker.start(loop)

    # --- faults & counters ---------------------------------------------------------------------------------

    @property
    def faults(self) -> FaultConfig:
        with self.lock:
            return self.injector.config

    @faults.setter
    def faults(self, value: FaultConfig) -> None:
        with self.lock:
            self.injector = FaultInjector(value)

    @property
    def counters(self) -> Counters:
        """A consistent snapshot (a copy: safe to read while the server runs)."""
        with self.lock:
            return self._counters.snapshot()

    def count(self) -> Counters:
        """The live counters; call only while holding :attr:`lock`."""
        return self._counters

    def reset_counters(self) -> None:
        with self.lock:
            fresh = Counters()
            self._counters = fresh
            self.engine.counters = fresh

    def issued_secrets(self) -> set[str]:
        """Every access token and session token ever issued (for leak scans of logs)."""
        with self.lock:
            return set(self.auth.issued)

    def fail_next(self, fault: str, *, count: int = 1, endpoints: frozenset[str] | None = None) -> None:
        """Hit the next ``count`` eligible requests with ``fault`` for certain (``faults.SCRIPTABLE``;
        ``endpoints``: name prefixes, by default the configured fault scope). Replacing :attr:`faults`
        drops faults scripted before."""
        with self.lock:
            self.injector.script(fault, count, self.injector.config.endpoints if endpoints is None else endpoints)

    def change_credentials(self, *, client_secret: str | None = None, password: str | None = None) -> None:
        """The tenant's credentials changed at the carrier: every issued access token and session ends,
        and only the new client secret / password are accepted from now on."""
        with self.lock:
            if client_secret is not None:
                self.config.client_secret = client_secret
            if password is not None:
                self.config.password = password
            for token in list(self.auth.tokens):
                self.auth.revoke_token(token)
            for session in list(self.auth.sessions):
                self.auth.end_session(session)

    def unlock_user(self, username: str | None = None) -> None:
        """Clear a login lockout (defaults to the configured user)."""
        with self.lock:
            self.auth.unlock(username or self.config.username)

    # --- devices -----------------------------------------------------------------------------------------------

    def known_accounts(self) -> set[str]:
        with self.lock:
            return {self.config.account, *self.store.accounts()}

    def add_device(
        self,
        iccid: str,
        imei: str | None = None,
        state: str = "preactive",
        account: str | None = None,
        service_plan: str | None = None,
    ) -> SimDevice:
        """Seed a device directly (not counted as an API action). Active/suspended ones get a line."""
        if state not in STATES:
            raise ValueError(f"state must be one of {STATES}")
        with self.lock:
            device = self.store.add(
                iccid=iccid,
                imei=imei,
                state=state,
                account=account or self.config.account,
                service_plan=service_plan or ("M2M_4G" if state in ("active", "suspend") else None),
                now=self.now(),
            )
            return device.copy()

    def preload(self, n: int, state: str = "preactive") -> list[SimDevice]:
        """Create ``n`` devices with generated Luhn-valid ICCIDs and IMEIs."""
        created: list[SimDevice] = []
        with self.lock:
            for _ in range(n):
                iccid = self.store.unused_iccid()
                imei = self.store.unused_imei()
                created.append(self.add_device(iccid, imei, state))
        return created

    def device(self, iccid: str) -> SimDevice | None:
        with self.lock:
            found = self.store.find("iccid", iccid)
            return found.copy() if found else None

    def devices(self) -> list[SimDevice]:
        with self.lock:
            return [device.copy() for device in self.store]

    # --- background processing ---------------------------------------------------------------------------------

    def tick(self) -> list[OutgoingCallback]:
        """Complete due actions, enqueue their callbacks, return callbacks due for sending."""
        with self.lock:
            now = self.now()
            for completion in self.engine.pop_due(now):
                self._enqueue_callback(completion, now)
            due = self.callback_queue.pop_due(now)
            self.injector.shuffle(due)
            self.inflight_callbacks += len(due)
            return due

    def _enqueue_callback(self, completion: Completion, now: float) -> None:
        listener = self.listeners.get(completion.account, CARRIER_SERVICE)
        if listener is None:
            return  # no listener: clients must poll, exactly like the real service
        if completion.fault is None and completion.device is not None:
            payload = success_payload(completion.request_id, completion.action, completion.device, listener)
        else:
            pairs = completion.ids
            if completion.device is not None:
                pairs = [("iccid", completion.device.iccid)]
                if completion.device.imei:
                    pairs.append(("imei", completion.device.imei))
            fault = completion.fault or ("UnifiedWebService.REQUEST_FAILED.UnexpectedError", "Unexpected error")
            payload = fault_payload(completion.request_id, pairs, fault, listener)
        decision = self.injector.for_callback()
        if decision.lost:
            self._counters.fault("callback_lost")
            return
        due = now
        if decision.delayed:
            self._counters.fault("callback_delayed")
            due = now + self.injector.config.callback_delay_s
        max_attempts = self.config.callback_max_attempts
        self.callback_queue.push(due, OutgoingCallback(listener.url, payload, max_attempts))
        if decision.duplicate:
            self._counters.fault("callback_duplicate")
            self.callback_queue.push(due, OutgoingCallback(listener.url, dict(payload), max_attempts))

    def delivery_done(self, message: OutgoingCallback, acked: bool) -> None:
        """Record one POST attempt; reschedule or give up when it was not acknowledged."""
        with self.lock:
            self.inflight_callbacks -= 1
            message.attempts += 1
            self._counters.callbacks_sent += 1
            if acked:
                self._counters.callbacks_acked += 1
            elif message.attempts < message.max_attempts:
                self.callback_queue.push(self.now() + self.config.callback_retry_interval_s, message)
            else:
                self._counters.callbacks_failed += 1

    def pending(self) -> bool:
        with self.lock:
            return bool(len(self.engine) or len(self.callback_queue) or self.inflight_callbacks)

    def settle(self, timeout: float = 5.0) -> None:
        """Block (real time) until no action or callback is pending; raise ``TimeoutError`` otherwise.

        With a :class:`~.clock.ManualClock` advance the clock first: pending
        work only becomes due when the injected clock says so.
        """
        deadline = time.monotonic() + timeout
        while self.pending():
            if time.monotonic() >= deadline:
                raise TimeoutError("simulator still has pending actions or callbacks")
            time.sleep(0.01)

    def snapshot_json(self) -> dict[str, Any]:
        with self.lock:
            return {"counters": self._counters.as_json(), "pending": self.pending()}
