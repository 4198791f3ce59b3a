"""The ThingSpace adapter against the ThingSpace simulator (real HTTP on loopback, a manual clock)."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from bulkchange.carrier.port import CarrierAccount
from bulkchange.carrier.thingspace.adapter import ThingSpaceCarrier, thingspace_account
from bulkchange.carrier.thingspace.models import CallbackMessage
from bulkchange.domain.change_request import StatusUpdateRequest
from bulkchange.domain.outcomes import CarrierFacts
from bulkchange.domain.statuses import TargetStatus
from bulkchange.simulator import CARRIER_SERVICE, FaultConfig, ManualClock, Simulator, SimulatorConfig, run_in_thread
from bulkchange.simulator.callbacks import Listener

from .harness import Fault, TargetCase

_DELAY_S = 30.0  # accepted actions complete only when the harness moves the clock past this
_SCRIPTED = {
    Fault.RATE_LIMITED: "rate_limited",
    Fault.SERVER_ERROR: "server_error",
    Fault.TIMEOUT_AFTER_SEND: "slow",
    Fault.REFUSED: "refused",
}


class _Receiver:
    """Our CarrierService listener: keeps every callback body it acknowledges."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
                with receiver.lock:
                    receiver.bodies.append(body)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/cb/carrier"

    @contextlib.contextmanager
    def running(self) -> Iterator[_Receiver]:
        thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self.server.shutdown()
            self.server.server_close()


class ThingSpaceHarness:
    carrier = ThingSpaceCarrier()
    cases = {
        TargetStatus.INVENTORY: TargetCase(start=None, end="preactive"),
        TargetStatus.PENDING_ACTIVATION: TargetCase(start=None, end="preactive"),
        TargetStatus.ACTIVE: TargetCase(start=None, end="active", line=True),
        TargetStatus.DEACTIVE: TargetCase(start="active", end="deactive"),
        TargetStatus.SUSPEND: TargetCase(start="active", end="suspend"),
        TargetStatus.RESTORE: TargetCase(start="suspend", end="active"),
    }
    max_request = 10_000
    retry_after_s = 7.0
    timeout_s = 4.0

    def __init__(self) -> None:
        self.clock = ManualClock()
        faults = FaultConfig(retry_after_s=int(self.retry_after_s), slow_s=self.timeout_s * 5)
        config = SimulatorConfig(activation_delay_s=_DELAY_S, action_delay_s=_DELAY_S, faults=faults)
        self.sim = Simulator(config, clock=self.clock)
        self._credentials = (config.client_id, config.username, config.client_secret, config.password)
        self._stack = contextlib.ExitStack()
        self.base_url = ""

    def __enter__(self) -> ThingSpaceHarness:
        server = self._stack.enter_context(run_in_thread(self.sim, host="127.0.0.1", port=0))
        self.base_url = server.base_url
        self._receiver = self._stack.enter_context(_Receiver().running())
        with self.sim.lock:
            self.sim.listeners.register(Listener(self.sim.config.account, CARRIER_SERVICE, self._receiver.url))
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._stack.close()

    def _account(self, account_number: str, credential_id: int) -> CarrierAccount:
        client_id, username, client_secret, password = self._credentials
        return thingspace_account(
            provider_id=credential_id,
            credential_id=credential_id,
            base_url=self.base_url,
            account_number=account_number,
            client_id=client_id,
            username=username,
            client_secret=client_secret,
            password=password,
        )

    def account(self) -> CarrierAccount:
        return self._account(self.sim.config.account, 1)

    def other_account(self) -> CarrierAccount:
        return self._account("0000654321-00001", 2)

    def new_device(self) -> tuple[str, str | None]:
        with self.sim.lock:
            return self.sim.store.unused_iccid(), self.sim.store.unused_imei()

    def preload(self, iccid: str, imei: str | None, state: str) -> None:
        self.sim.add_device(iccid, imei, state)

    def state(self, iccid: str) -> str | None:
        device = self.sim.device(iccid)
        return device.state if device else None

    def facts(self, iccid: str) -> CarrierFacts:
        device = self.sim.device(iccid)
        assert device is not None
        return CarrierFacts(msisdn=device.msisdn, ip_address=device.ip_address)

    def request(self, target: TargetStatus, iccid: str, imei: str | None, *, variant: int = 0) -> StatusUpdateRequest:
        return StatusUpdateRequest.model_validate(
            {
                "UpdateStatus": target.value,
                "Request": {
                    "ICCID": iccid,
                    "IMEI": imei,
                    "RatePlanCode": ["M2M_4G", "M2M_5G"][variant],
                    "MdnZipCode": "98801",
                    "ReasonCode": ["FF", "AB"][variant],
                    "SkuNumber": [None, "SKU-2"][variant],
                },
            }
        )

    def refused_plans(self) -> Sequence[tuple[TargetStatus, StatusUpdateRequest]]:
        iccid, _ = self.new_device()
        # Add then Activate needs an IMEI or a SKU number; this request has neither.
        return [(TargetStatus.ACTIVE, self.request(TargetStatus.ACTIVE, iccid, None))]

    def inject(self, fault: Fault, *, calls: int = 1) -> None:
        self.sim.fail_next(_SCRIPTED[fault], count=calls)

    def refuse_credentials(self) -> None:
        self.sim.change_credentials(client_secret="rotated-secret", password="rotated-pass")

    def complete(self) -> None:
        self.clock.advance(_DELAY_S + 1)
        self.sim.settle(timeout=10.0)

    def callbacks(self, iccid: str) -> list[Any]:
        with self._receiver.lock:
            bodies = list(self._receiver.bodies)
        return [b for b in bodies if CallbackMessage.parse(b).iccid == iccid]
