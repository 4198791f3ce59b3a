"""No secret or token in any log line or any text column after a full demo run (and a short chaos run).

The demo runs the whole job (ThingSpace simulator, callbacks, Rev.io stand-in, signed webhooks); every
structlog line it writes is captured; then every text column of every table is read and both are searched
for every access / session token the simulator issued, the configured client secret and passwords, the
Rev.io password and subscription key and the webhook secret.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import String, Text, create_engine, select

from bulkchange.demo import run_demo
from bulkchange.logging_setup import configure_logging
from bulkchange.settings import Settings
from bulkchange.store.tables import Base

ROOT = Path(__file__).resolve().parents[2]


def _text_columns(url: str) -> list[tuple[str, str, str]]:
    """(table, column, value) of every non-empty text value in the database."""
    found: list[tuple[str, str, str]] = []
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            for table in Base.metadata.sorted_tables:
                columns = [c for c in table.columns if isinstance(c.type, String | Text) or "String" in repr(c.type)]
                if not columns:
                    continue
                for row in conn.execute(select(*[c for c in columns])):
                    for column, value in zip(columns, row, strict=True):
                        if value:
                            found.append((table.name, column.name, str(value)))
    finally:
        engine.dispose()
    return found


def _hits(secrets: set[str], texts: list[tuple[str, str, str]], lines: list[str]) -> list[str]:
    hits = []
    for secret in sorted(secrets):
        for table, column, value in texts:
            if secret in value:
                hits.append(f"{table}.{column} contains {secret[:4]}…")
        for line in lines:
            if secret in line:
                hits.append(f"log line contains {secret[:4]}…: {line[:160]}")
    return hits


def test_demo_leaves_no_secret_in_logs_or_tables(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from bulkchange import demo_support

    revio_secrets: set[str] = set()
    original = demo_support.demo_billing

    def spying(rt):  # type: ignore[no-untyped-def]
        context = original(rt)

        class Spy:
            def __enter__(self):  # type: ignore[no-untyped-def]
                billing = context.__enter__()
                for attribute in ("revio", "inbox"):
                    holder = getattr(billing, attribute, None)
                    config = getattr(holder, "config", None)
                    for name in ("password", "subscription_key"):
                        if config is not None and getattr(config, name, None):
                            revio_secrets.add(str(getattr(config, name)))
                    if holder is not None and getattr(holder, "secret", None):
                        revio_secrets.add(str(holder.secret))
                return billing

            def __exit__(self, *exc):  # type: ignore[no-untyped-def]
                return context.__exit__(*exc)

        return Spy()

    monkeypatch.setattr("bulkchange.demo.demo_billing", spying)
    url = f"sqlite:///{tmp_path}/demo.sqlite3"
    configure_logging("DEBUG", json_lines=True)
    try:
        result, sim = run_demo(60, settings=Settings(database_url=url))
    finally:
        configure_logging("INFO")
    out, err = capfd.readouterr()
    lines = (out + err).splitlines()
    assert result.ok, result.errors[:5] + result.mismatches[:5]
    assert len(lines) > 20, "the demo's log lines were captured"
    # Nothing went wrong on the way either: e.g. the second carrier's webhook sent to a receiver already stopped.
    assert [line for line in lines if '"level": "error"' in line] == []
    assert len(revio_secrets) >= 3, "the Rev.io password, subscription key and webhook secret are scanned for"

    issued = sim.issued_secrets()
    assert issued, "the simulator issued tokens"
    secrets = issued | {sim.config.client_secret, sim.config.password} | revio_secrets
    secrets = {s for s in secrets if s and len(s) >= 6}
    texts = _text_columns(url)
    assert any(t == "DeviceBulkChangeLog" for t, _c, _v in texts), "log rows were written and scanned"
    assert _hits(secrets, texts, lines) == []
    stored = {c: v for t, c, v in texts if t == "ThingSpaceAuthentication" and c in ("ClientSecret", "Password")}
    assert all(v.startswith("enc:v1:") for v in stored.values())


_TOKEN_FIELDS = re.compile(
    r"""(access_token|sessionToken|session_token|"password"|client_secret|VZ-M2M-Token|Authorization)"""
    r"""["']?\s*[:=]\s*["']?(?!\*\*\*)(?:Bearer |Basic )?([A-Za-z0-9._~+/=-]{8,})"""
)


@pytest.mark.slow
@pytest.mark.serial
@pytest.mark.postgres
def test_short_chaos_run_leaves_no_secret(tmp_path: Path, pg_empty_url: str) -> None:
    """bench/chaos.py in a short form (PostgreSQL, worker processes SIGKILLed, carrier faults).

    The simulator runs in its own process there, so the tokens it issued are not known here: the scan looks
    for the configured client secret and password, and for any token-named field whose value is not masked.
    """
    chaos = ROOT / "bench" / "chaos.py"
    if not chaos.exists():
        pytest.skip("bench/chaos.py is not in this tree")
    logs = tmp_path / "logs"
    proc = subprocess.run(
        [
            sys.executable,
            str(chaos),
            "--json",
            "--changes",
            "120",
            "--kills",
            "2",
            "--workers",
            "2",
            "--deadline-s",
            "300",
            "--database-url",
            pg_empty_url,
            "--keep-logs",
            str(logs),
        ],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "BULKCHANGE_LOG_LEVEL": "DEBUG"},
        cwd=ROOT,
    )
    lines = (proc.stdout + proc.stderr).splitlines()
    for path in logs.rglob("*"):
        if path.is_file():
            lines += path.read_text(errors="replace").splitlines()
    assert proc.returncode in (0, 1), proc.stderr[-2000:]
    assert lines, "the run's output and its worker, simulator and receiver logs were read (workers log at WARNING)"
    texts = _text_columns(pg_empty_url)
    assert any(t == "DeviceBulkChangeLog" for t, _c, _v in texts)
    assert _hits({"sim-secret", "sim-pass"}, texts, lines) == []
    unmasked = [m.group(0) for line in lines + [v for _t, _c, v in texts] for m in _TOKEN_FIELDS.finditer(line)]
    assert unmasked == []
