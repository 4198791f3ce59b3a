"""Callback listener registry, CarrierService payloads and the retry queue.

Payload shapes follow thingspace-api.md §5.2. The outer ``deviceIds`` use
mixed-case kinds (``"Iccid"``, ``"Imei"``) on purpose, as Verizon's own
examples do, so clients that compare kinds case-sensitively fail early.
Delivery itself (HTTP) lives in :mod:`.worker`.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from .devices import SimDevice

CARRIER_SERVICE = "CarrierService"
ALLOWED_PORTS: frozenset[int] = frozenset({80, 443, *range(9001, 9007), *range(50551, 50560), *range(28200, 28221)})


@dataclass(frozen=True)
class Listener:
    account: str
    service_name: str
    url: str
    username: str | None = None
    password: str | None = None

    def as_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"accountName": self.account, "serviceName": self.service_name, "url": self.url}
        if self.username is not None:
            body["username"] = self.username
        if self.password is not None:
            body["password"] = self.password
        return body


def port_allowed(url: str) -> bool:
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return port in ALLOWED_PORTS


class ListenerRegistry:
    """One listener per (account, service name), as ThingSpace allows."""

    def __init__(self) -> None:
        self._listeners: dict[tuple[str, str], Listener] = {}

    def register(self, listener: Listener) -> None:
        self._listeners[(listener.account, listener.service_name)] = listener

    def remove(self, account: str, service_name: str) -> bool:
        return self._listeners.pop((account, service_name), None) is not None

    def get(self, account: str, service_name: str) -> Listener | None:
        return self._listeners.get((account, service_name))

    def for_account(self, account: str) -> list[Listener]:
        return [listener for (acct, _), listener in self._listeners.items() if acct == account]


def mixed_case_ids(pairs: Sequence[tuple[str, str]]) -> list[dict[str, str]]:
    """``[("iccid","89..")]`` -> ``[{"id":"89..","kind":"Iccid"}]``."""
    return [{"id": value, "kind": kind.capitalize()} for kind, value in pairs]


def device_pairs(device: SimDevice) -> list[tuple[str, str]]:
    pairs = [("iccid", device.iccid)]
    if device.imei:
        pairs.append(("imei", device.imei))
    return pairs


def success_payload(request_id: str, action: str, device: SimDevice, listener: Listener) -> dict[str, Any]:
    """A CarrierService success message body, without the per-attempt counters."""
    inner: dict[str, Any]
    if action == "activate":
        inner = {
            "deviceIds": [{"id": value, "kind": kind} for kind, value in device.identifiers()],
            "ipAddress": device.ip_address,
            "state": device.state,
            "servicePlan": device.service_plan,
        }
    else:
        inner = {
            "deviceIds": [{"id": value, "kind": kind} for kind, value in device.identifiers()],
            "state": device.state,
        }
    return {
        "username": listener.username or "",
        "password": listener.password or "",
        "requestId": request_id,
        "deviceIds": mixed_case_ids(device_pairs(device)),
        "deviceResponse": {f"{action}Response": inner},
        "status": "Success",
    }


def fault_payload(
    request_id: str, pairs: Sequence[tuple[str, str]], fault: tuple[str, str], listener: Listener
) -> dict[str, Any]:
    """A CarrierService fault message body, without the per-attempt counters."""
    code, text = fault
    return {
        "username": listener.username or "",
        "password": listener.password or "",
        "requestId": request_id,
        "deviceIds": mixed_case_ids(pairs),
        "faultResponse": {"faultcode": code, "faultstring": text},
        "status": "Failed",
    }


@dataclass
class OutgoingCallback:
    """One logical callback message; ``attempts`` counts POSTs already made."""

    url: str
    payload: dict[str, Any]
    max_attempts: int
    attempts: int = 0

    def body_for_next_attempt(self) -> dict[str, Any]:
        return {**self.payload, "callbackCount": self.attempts + 1, "maxCallbackThreshold": self.max_attempts}


@dataclass
class CallbackQueue:
    """Messages waiting for their due time (first delivery or retry)."""

    _heap: list[tuple[float, int, OutgoingCallback]] = field(default_factory=list)
    _seq: itertools.count[int] = field(default_factory=itertools.count)

    def __len__(self) -> int:
        return len(self._heap)

    def push(self, due: float, message: OutgoingCallback) -> None:
        heapq.heappush(self._heap, (due, next(self._seq), message))

    def pop_due(self, now: float) -> list[OutgoingCallback]:
        due: list[OutgoingCallback] = []
        while self._heap and self._heap[0][0] <= now:
            due.append(heapq.heappop(self._heap)[2])
        return due
