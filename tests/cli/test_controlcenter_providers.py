"""Control Center providers through the real command line: `providers add --carrier controlcenter`, `providers
list`, `credentials set --api-key` and `credentials rotate`; the account they make works against the
simulator over real HTTP."""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from bulkchange.carrier.controlcenter.adapter import ControlCenterCarrier
from bulkchange.carrier.errors import AuthenticationFailed
from bulkchange.carrier.port import CarrierAccount, SessionServices
from bulkchange.cli.main import app
from bulkchange.providers import controlcenter_carrier_account
from bulkchange.security import crypto
from bulkchange.simulator import ServerHandle, run_in_thread
from bulkchange.simulator.controlcenter import API_ROOT, ControlCenterConfig, ControlCenterSimulator
from bulkchange.store.tables import JasperCarrierRatePlan

API_KEY = "cc-api-key-value-1"


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    url = f"sqlite:///{tmp_path}/cli.sqlite3"
    monkeypatch.setenv("BULKCHANGE_DATABASE_URL", url)
    monkeypatch.setenv(crypto.KEYS_ENV, crypto.generate_key())
    crypto.reset_keyring()
    assert CliRunner().invoke(app, ["db", "upgrade"]).exit_code == 0
    yield url
    crypto.reset_keyring()


@pytest.fixture
def sim() -> Iterator[ServerHandle]:
    simulator = ControlCenterSimulator(ControlCenterConfig(tps=1000, tps_burst=1000))
    with run_in_thread(simulator) as server:
        yield server


def _raw(url: str, sql: str) -> list[tuple[object, ...]]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return [tuple(row) for row in conn.execute(text(sql))]
    finally:
        engine.dispose()


def _rows(output: str) -> list[list[str]]:
    return [
        [cell.strip() for cell in line.strip("│ ").split("│")]
        for line in output.splitlines()
        if line.startswith("│") and "│" in line[1:]
    ]


def _account_of(url: str, provider_id: int) -> CarrierAccount:
    engine = create_engine(url)
    try:
        with Session(engine) as session:
            return controlcenter_carrier_account(session, provider_id)
    finally:
        engine.dispose()


def _add(*args: str, stdin: str | None = None) -> tuple[int, str]:
    base = ["providers", "add", "--carrier", "controlcenter", "--username", "cc-user", "--json"]
    result = CliRunner().invoke(app, [*base, *args], input=stdin)
    return result.exit_code, result.output


def test_providers_add_and_list_a_control_center_provider(db: str) -> None:
    code, out = _add("--name", "pod19", "--pod19", "--api-key", API_KEY, "--tps", "5", "--burst", "5")
    assert code == 0, out
    pod19_id = json.loads(out.splitlines()[-1])["service_provider_id"]
    assert API_KEY not in out
    code, out = _add("--name", "host", "--base-url", "https://restapi19.att.com/rws/api/", "--api-key", "-",
                     stdin=API_KEY + "\n")
    assert code == 0, out
    code, out = _add("--name", "other-pod", "--base-url", "https://restapi3.att.com/rws/api", "--api-key", "k-value")
    assert code == 0, out
    code, out = _add("--name", "opted-out", "--base-url", "https://restapi19.att.com/rws/api", "--no-pod19",
                     "--api-key", "k-value", "--rate-plan-pre-step")
    assert code == 0, out

    listed = CliRunner().invoke(app, ["providers", "list"], env={"COLUMNS": "250"})
    assert listed.exit_code == 0 and API_KEY not in listed.output
    assert [[row[i] for i in (2, 3, 5, 8, 9)] for row in _rows(listed.output)] == [  # name, carrier, URL, TPS, POD
        ["pod19", "controlcenter", "https://restapi19.att.com/rws/api", "5, burst 5", "yes"],
        ["host", "controlcenter", "https://restapi19.att.com/rws/api", "1", "yes"],
        ["other-pod", "controlcenter", "https://restapi3.att.com/rws/api", "1", "no"],
        ["opted-out", "controlcenter", "https://restapi19.att.com/rws/api", "1", "no"],
    ]
    assert _raw(db, 'SELECT "TpsBurst" FROM "JasperAuthentication" ORDER BY id') == [(5,), (1,), (1,), (1,)]
    burst = ControlCenterCarrier().rate_rules(_account_of(db, pod19_id), "").bucket
    assert burst is not None and (burst.burst, round(burst.rate_per_s * 1.01, 6)) == (5, 5.0)
    stored = _raw(db, 'SELECT "ServiceProviderId", "ApiKey", "RatePlanPreStep" FROM "JasperAuthentication" ORDER BY id')
    assert all(str(key).startswith("enc:v1:") for _, key, _ in stored)
    assert [bool(pre) for _, _, pre in stored] == [False, False, False, True]
    assert _raw(db, f'SELECT "IntegrationId" FROM "ServiceProvider" WHERE id = {pod19_id}') == [(2,)]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--api-key", "k-value"], "needs --base-url"),
        (["--base-url", "https://restapi19.att.com/rws/api"], "needs --api-key"),
        (["--pod19", "--api-key", "k-value", "--tps", "0"], "tps must be more than 0"),
        (["--pod19", "--api-key", "k-value", "--burst", "0"], "burst must be from 1 to 100"),
        (["--base-url", "http://restapi19.att.com/rws/api", "--api-key", "k-value"], "https"),
    ],
)
def test_providers_add_refuses_an_incomplete_control_center_provider(db: str, args: list[str], message: str) -> None:
    code, out = _add("--name", "x", *args)
    assert code == 2 and message in " ".join(out.split()), out
    assert _raw(db, 'SELECT count(*) FROM "ServiceProvider"') == [(0,)]


def test_providers_add_refuses_an_unknown_carrier(db: str) -> None:
    result = CliRunner().invoke(app, ["providers", "add", "--name", "x", "--carrier", "sprint"])
    assert result.exit_code == 2 and "unknown carrier" in result.output


async def test_the_account_works_and_its_key_rotates(
    db: str, sim: ServerHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = sim.base_url + API_ROOT
    code, out = _add("--name", "sim", "--base-url", url, "--username", "sim-user", "--api-key", "stale-key-value")
    assert code == 0, out
    provider_id = json.loads(out.splitlines()[-1])["service_provider_id"]
    engine = create_engine(db)
    with Session(engine) as session:
        session.add(JasperCarrierRatePlan(service_provider_id=provider_id, rate_plan_code="POD19 1GB",
                                          plan_mb=Decimal("1024"), base_rate=Decimal("8.00")))
        session.add(JasperCarrierRatePlan(service_provider_id=provider_id, rate_plan_code="No Allowance Known"))
        session.commit()

    async def authenticate() -> None:
        with Session(engine) as session:
            account = controlcenter_carrier_account(session, provider_id)
        opened = ControlCenterCarrier().connect(account, SessionServices(call_attempts=1, timeout_s=5.0))
        try:
            await opened.authenticate()
        finally:
            await opened.aclose()

    with pytest.raises(AuthenticationFailed):
        await authenticate()
    refused = CliRunner().invoke(app, ["credentials", "set", "--provider", str(provider_id), "--password", "p-value"])
    assert refused.exit_code == 2 and "--api-key" in refused.output
    result = CliRunner().invoke(
        app, ["credentials", "set", "--provider", str(provider_id), "--api-key", "-"], input="sim-api-key\n"
    )
    assert result.exit_code == 0 and "sim-api-key" not in result.output, result.output
    await authenticate()

    with Session(engine) as session:
        account = controlcenter_carrier_account(session, provider_id)
    assert account.secrets["api_key"] == "sim-api-key" and account.fields["pod19"] is False  # loopback, not POD 19
    assert account.fields["write_is_enabled"] is True and account.fields["tps"] == 1.0
    assert [plan["code"] for plan in account.fields["rate_plans"]] == ["POD19 1GB"]  # only plans with both figures

    new_key = crypto.generate_key()
    monkeypatch.setenv(crypto.KEYS_ENV, f"{new_key},{crypto.keyring().keys[0]}")
    crypto.reset_keyring()
    rotated = CliRunner().invoke(app, ["credentials", "rotate", "--json"])
    assert json.loads(rotated.stdout)["reencrypted"] == 1, rotated.output
    monkeypatch.setenv(crypto.KEYS_ENV, new_key)  # the old key is gone: the API key still reads
    crypto.reset_keyring()
    await authenticate()
    engine.dispose()
