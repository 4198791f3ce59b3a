"""A ThingSpace provider's CarrierService listener through the real command line, against the simulator over
real HTTP: `providers register-callback`, `providers callbacks` (what the carrier has) and `providers
unregister-callback`; a Control Center provider is read back and says so."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bulkchange.cli.main import app
from bulkchange.providers import add_controlcenter_provider, add_provider
from bulkchange.runtime import build_runtime
from bulkchange.security import crypto
from bulkchange.settings import Settings
from bulkchange.simulator import Simulator
from bulkchange.simulator.server import ServerHandle, serve_in_thread
from bulkchange.store.migrate import upgrade

ACCOUNT = "0000123456-00001"
PUBLIC_URL = "http://127.0.0.1:9001"


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    url = f"sqlite:///{tmp_path}/cli.sqlite3"
    monkeypatch.setenv("BULKCHANGE_DATABASE_URL", url)
    monkeypatch.setenv(crypto.KEYS_ENV, crypto.generate_key())
    crypto.reset_keyring()
    upgrade(url)  # as an operator would: commands never create a database by themselves
    yield url
    crypto.reset_keyring()


@pytest.fixture
def sim() -> Iterator[tuple[Simulator, ServerHandle]]:
    simulator = Simulator()
    with serve_in_thread(simulator.app) as server:
        yield simulator, server


def _providers(carrier_url: str) -> tuple[int, int]:
    """A ThingSpace provider on the simulator and a Control Center one."""
    rt = build_runtime(Settings())
    try:
        with rt.session_factory() as session:
            ts = add_provider(
                session,
                name="acme",
                base_url=carrier_url,
                client_id="sim-client",
                client_secret="sim-secret",
                username="sim-user",
                password="sim-pass",
                account=ACCOUNT,
            )
            cc = add_controlcenter_provider(
                session, name="pod19", base_url="https://restapi19.att.com/rws/api", username="u", api_key="k-1"
            )
        return ts, cc
    finally:
        rt.close()


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "250"})
    return result.exit_code, result.output


def test_register_list_and_delete_the_listener_at_the_carrier(db: str, sim: tuple[Simulator, ServerHandle]) -> None:
    simulator, server = sim
    ts, _cc = _providers(server.base_url)

    code, out = _run("providers", "callbacks", str(ts), "--json")
    assert code == 0, out
    assert json.loads(out) == []
    code, out = _run("providers", "callbacks", str(ts))
    assert code == 0 and "every change waits for the deferred check" in out

    code, out = _run("providers", "register-callback", str(ts), "--url", PUBLIC_URL)
    assert code == 0, out
    code, out = _run("providers", "callbacks", str(ts), "--json")
    assert code == 0, out
    listener = f"{PUBLIC_URL}/callbacks/thingspace/{ts}"
    shown = json.loads(out)
    assert [(r["service"], r["url"]) for r in shown] == [("CarrierService", listener)]
    assert shown[0]["username"].startswith("bulkchange-") and "password" not in shown[0]
    code, out = _run("providers", "list")
    acme = next(line for line in out.splitlines() if "acme" in line)
    assert code == 0 and f"registered: {listener}" in acme, out  # the callbacks column follows the registration

    code, out = _run("providers", "unregister-callback", str(ts))
    assert code == 0, out
    assert "deferred check" in out
    assert simulator.listeners.get(ACCOUNT, "CarrierService") is None
    code, out = _run("providers", "callbacks", str(ts), "--json")
    assert code == 0 and json.loads(out) == []
    code, out = _run("providers", "callback", str(ts), "--json")
    assert json.loads(out)["registered_url"] is None


def test_a_control_center_provider_is_read_back_and_says_so(db: str, sim: tuple[Simulator, ServerHandle]) -> None:
    _simulator, server = sim
    _ts, cc = _providers(server.base_url)
    for args in (
        ("providers", "register-callback", str(cc), "--url", PUBLIC_URL),
        ("providers", "callbacks", str(cc)),
        ("providers", "unregister-callback", str(cc)),
        ("providers", "callback", str(cc)),
    ):
        code, out = _run(*args)
        assert code == 2, (args, out)
        assert "read back" in out, (args, out)
    code, out = _run("providers", "list")
    assert code == 0
    assert any("pod19" in line and "read back" in line for line in out.splitlines())


def test_an_unknown_provider_is_refused(db: str) -> None:
    code, out = _run("providers", "callbacks", "99")
    assert code == 2 and "no service provider 99" in out
