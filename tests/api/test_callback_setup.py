"""Callback credentials as an operator meets them: generated with the provider, shown, rotated, registered
with the carrier — and `bulkchange serve` refusing to start, with one line, when they are not in order."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text, update
from typer.testing import CliRunner

from bulkchange.cli.main import app
from bulkchange.providers import add_provider
from bulkchange.runtime import build_runtime
from bulkchange.security.crypto import generate_key, reset_keyring
from bulkchange.settings import Settings
from bulkchange.simulator import Simulator
from bulkchange.simulator.server import serve_in_thread
from bulkchange.store.tables import ThingSpaceAuthentication

ACCOUNT = "0000123456-00001"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """A database and a secret key of this test, for the CLI run here and for `serve` run as a process."""
    values = {
        "BULKCHANGE_DATABASE_URL": f"sqlite:///{tmp_path}/setup.sqlite3",
        "BULKCHANGE_SECRET_KEYS": generate_key(),
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    for name in ("BULKCHANGE_CALLBACK_USERNAME", "BULKCHANGE_CALLBACK_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    reset_keyring()
    yield values
    reset_keyring()


def _provider(name: str, base_url: str = "https://thingspace.example") -> int:
    rt = build_runtime(Settings())
    try:
        with rt.session_factory() as session:
            return add_provider(
                session,
                name=name,
                base_url=base_url,
                client_id="sim-client",
                client_secret="sim-secret",
                username="sim-user",
                password="sim-pass",
                account=ACCOUNT,
            )
    finally:
        rt.close()


def _set_callback_columns(provider_id: int, **values: str | None) -> None:
    """Write the columns directly, as a database from before callback credentials (or a hand edit) has them."""
    engine = create_engine(os.environ["BULKCHANGE_DATABASE_URL"])
    with engine.begin() as conn:
        conn.execute(
            update(ThingSpaceAuthentication)
            .where(ThingSpaceAuthentication.service_provider_id == provider_id)
            .values(**values)
        )
    engine.dispose()


class Serve:
    """`bulkchange serve` as a process of this test (stopped by the test, by its pid)."""

    def __init__(self, env: dict[str, str], *args: str) -> None:
        self.port = _free_port()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bulkchange.cli.main", "serve", "--port", str(self.port), *args],
            env={**os.environ, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def refusal(self, deadline_s: float = 60.0) -> tuple[int, str]:
        """Its exit code and stderr, once it exited (it must, by the deadline)."""
        try:
            _out, err = self.process.communicate(timeout=deadline_s)
        except subprocess.TimeoutExpired:
            self.stop()
            raise AssertionError("`bulkchange serve` started instead of refusing") from None
        return self.process.returncode, err

    def wait_ready(self, deadline_s: float = 60.0) -> None:
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            assert self.process.poll() is None, self.process.communicate()[1][-2000:]
            try:
                if httpx.get(f"{self.base_url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError("`bulkchange serve` did not come up")

    def stop(self) -> str:
        """Stop it; what it wrote to stdout (uvicorn's access log)."""
        if self.process.poll() is not None:
            return ""
        self.process.send_signal(signal.SIGTERM)
        try:
            out, _err = self.process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            out, _err = self.process.communicate()
        return out


def _one_readable_line(stderr: str, needle: str) -> None:
    assert "Traceback" not in stderr, stderr[-3000:]
    lines = [line for line in stderr.splitlines() if needle in line]
    assert len(lines) == 1, stderr[-3000:]
    assert lines[0].startswith("refused"), lines[0]


def test_serve_refuses_the_retired_global_callback_settings(env: dict[str, str]) -> None:
    _provider("acme")
    serve = Serve({**env, "BULKCHANGE_CALLBACK_USERNAME": "ts-callback"})  # a username and no password
    code, stderr = serve.refusal()
    assert code == 2
    _one_readable_line(stderr, "BULKCHANGE_CALLBACK_USERNAME")
    assert "credentials set --provider N --callback-username" in stderr


def test_serve_refuses_a_provider_with_half_of_its_callback_credentials(env: dict[str, str]) -> None:
    provider = _provider("acme")
    _set_callback_columns(provider, callback_password=None)
    code, stderr = Serve(env).refusal()
    assert code == 2
    _one_readable_line(stderr, "only half of their callback credentials")
    assert f"service provider(s) {provider} " in stderr


def test_without_callback_credentials_serve_starts_only_insecure_and_on_loopback(env: dict[str, str]) -> None:
    legacy = _provider("legacy")
    _set_callback_columns(legacy, callback_username=None, callback_password=None)
    current = _provider("current")

    code, stderr = Serve(env).refusal()
    assert code == 2
    _one_readable_line(stderr, "have no callback credentials")
    assert "--rotate-callback" in stderr and "--insecure-callbacks" in stderr

    code, stderr = Serve(env, "--insecure-callbacks", "--host", "0.0.0.0").refusal()
    assert code == 2
    _one_readable_line(stderr, "loopback")

    serve = Serve(env, "--insecure-callbacks")
    try:
        serve.wait_ready()
        body = {"requestId": "r-1", "deviceIds": [{"id": "89148000000000000013", "kind": "iccid"}], "status": "Success"}
        admitted = httpx.post(f"{serve.base_url}/callbacks/thingspace/{legacy}", json=body, timeout=10)
        assert admitted.status_code == 200, admitted.text  # insecure: the provider without credentials
        refused = httpx.post(f"{serve.base_url}/callbacks/thingspace/{current}", json=body, timeout=10)
        assert refused.status_code == 401  # a provider with credentials is still checked
    finally:
        access_log = serve.stop()
    # The access log keeps the refusal and the probes, not a line per acknowledged callback (a burst of
    # 10,000 of those is counted in /metrics and stored in the database instead).
    assert f'"POST /callbacks/thingspace/{current} HTTP/1.1" 401' in access_log, access_log
    assert '"GET /healthz HTTP/1.1" 200' in access_log, access_log
    assert f"/callbacks/thingspace/{legacy} " not in access_log, access_log


def test_credentials_are_generated_shown_rotated_and_registered(env: dict[str, str]) -> None:
    runner = CliRunner()
    sim = Simulator()
    with serve_in_thread(sim.app) as carrier:
        provider = _provider("acme", base_url=carrier.base_url)
        shown = json.loads(runner.invoke(app, ["providers", "callback", str(provider), "--json"]).stdout)
        assert shown["path"] == f"/callbacks/thingspace/{provider}" and shown["account"] == ACCOUNT
        first = (shown["username"], shown["password"])
        assert first[0].startswith("bulkchange-") and len(first[1]) >= 40
        engine = create_engine(env["BULKCHANGE_DATABASE_URL"])
        with engine.connect() as conn:
            stored = conn.execute(text('SELECT "CallbackPassword" FROM "ThingSpaceAuthentication"')).scalar_one()
        assert stored.startswith("enc:v1:") and first[1] not in stored

        rotated = runner.invoke(app, ["credentials", "set", "--provider", str(provider), "--rotate-callback"])
        assert rotated.exit_code == 0, rotated.output
        second = json.loads(runner.invoke(app, ["providers", "callback", str(provider), "--json"]).stdout)
        assert (second["username"], second["password"]) != first
        assert f"callback password: {second['password']}" in rotated.stdout

        registered = runner.invoke(
            app, ["providers", "register-callback", str(provider), "--public-url", "http://127.0.0.1:9001"]
        )
        assert registered.exit_code == 0, registered.output
        listener = sim.listeners.get(ACCOUNT, "CarrierService")
        assert listener is not None
        assert (listener.url, listener.username, listener.password) == (
            f"http://127.0.0.1:9001/callbacks/thingspace/{provider}",
            second["username"],
            second["password"],
        )

        # Setting the values an existing listener was registered with (e.g. the old global ones) …
        kept = runner.invoke(
            app,
            [
                "credentials",
                "set",
                "--provider",
                str(provider),
                "--callback-username",
                "ts-old",
                "--callback-password",
                "-",
            ],
            input="old-password-123\n",
        )
        assert kept.exit_code == 0, kept.output
        assert "old-password-123" not in kept.output
        third = json.loads(runner.invoke(app, ["providers", "callback", str(provider), "--json"]).stdout)
        assert (third["username"], third["password"]) == ("ts-old", "old-password-123")
        # … never half: a username alone for a provider that has no password is refused.
        _set_callback_columns(provider, callback_username=None, callback_password=None)
        half = runner.invoke(app, ["credentials", "set", "--provider", str(provider), "--callback-username", "x"])
        assert half.exit_code == 2 and "half" in half.output
        # Plain http to anything but loopback is refused for the listener URL.
        insecure = runner.invoke(
            app, ["providers", "register-callback", str(provider), "--public-url", "http://example.com"]
        )
        assert insecure.exit_code == 2
        engine.dispose()
