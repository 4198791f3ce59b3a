"""Test helpers for the simulator suite: a raw HTTP client, polling, a callback receiver record."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from bulkchange.simulator import ManualClock, Simulator

M2M = "/api/m2m/v1"
ACCOUNT = "0000123456-00001"


def wait_for(condition: Callable[[], Any], timeout: float = 5.0) -> Any:
    """Poll ``condition`` until truthy (returns it) or fail after ``timeout`` real seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


class Api:
    """A thin test client: real HTTP, explicit credentials, no retries."""

    def __init__(self, base_url: str) -> None:
        self.http = httpx.Client(base_url=base_url, timeout=10.0)
        self.token: str | None = None
        self.session: str | None = None

    def close(self) -> None:
        self.http.close()

    def get_token(self, client_id: str = "sim-client", secret: str = "sim-secret") -> httpx.Response:
        return self.http.post(
            "/api/ts/v1/oauth2/token", auth=(client_id, secret), data={"grant_type": "client_credentials"}
        )

    def login(self, username: str = "sim-user", password: str = "sim-pass") -> httpx.Response:
        if self.token is None:
            self.token = self.get_token().json()["access_token"]
        response = self.http.post(
            f"{M2M}/session/login",
            headers={"Authorization": f"Bearer {self.token}"},
            json={"username": username, "password": password},
        )
        if response.status_code == 200:
            self.session = response.json()["sessionToken"]
        return response

    def headers(self) -> dict[str, str]:
        out: dict[str, str] = {}
        if self.token:
            out["Authorization"] = f"Bearer {self.token}"
        if self.session:
            out["VZ-M2M-Token"] = self.session
        return out

    def post(self, path: str, body: Any = None, **kwargs: Any) -> httpx.Response:
        return self.http.post(f"{M2M}{path}", headers=self.headers(), json=body, **kwargs)

    def get(self, path: str) -> httpx.Response:
        return self.http.get(f"{M2M}{path}", headers=self.headers())

    def delete(self, path: str) -> httpx.Response:
        return self.http.delete(f"{M2M}{path}", headers=self.headers())

    # shorthands ------------------------------------------------------------------------------------------

    def action(self, action: str, *iccids: str, **extra: Any) -> httpx.Response:
        body: dict[str, Any] = {"devices": [{"deviceIds": [{"kind": "iccid", "id": i}]} for i in iccids]}
        if action == "activate":
            body |= {"servicePlan": "M2M_4G", "mdnZipCode": "98801"}
        if action == "deactivate":
            body |= {"accountName": ACCOUNT, "reasonCode": "FF"}
        body |= extra
        return self.post(f"/devices/actions/{action}", body)

    def status(self, request_id: str, account: str = ACCOUNT) -> httpx.Response:
        return self.get(f"/accounts/{account}/requests/{request_id}/status")


@dataclass
class Env:
    sim: Simulator
    clock: ManualClock
    api: Api
    base_url: str

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    def state(self, iccid: str) -> str | None:
        device = self.sim.device(iccid)
        return device.state if device else None


@dataclass
class Receiver:
    """A real HTTP callback listener; ``statuses`` is consumed per request (then 200)."""

    url: str = ""
    received: list[dict[str, Any]] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def bodies(self) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.received)


def register(api: Api, url: str, **extra: Any) -> httpx.Response:
    return api.post(f"/callbacks/{ACCOUNT}", {"name": "CarrierService", "url": url, **extra})
