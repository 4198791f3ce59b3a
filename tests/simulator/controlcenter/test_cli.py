"""``bulkchange simulator --carrier controlcenter`` starts, prints how to reach it, and serves what it printed."""

from __future__ import annotations

import queue
import re
import subprocess
import sys
import threading
import time

import httpx
import typer
from typer.testing import CliRunner

from bulkchange.cli.simulator_cmd import register


def _read_banner(proc: subprocess.Popen[str], until: str, timeout: float = 30.0) -> list[str]:
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line.rstrip("\n"))

    threading.Thread(target=pump, daemon=True).start()
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while not any(until in line for line in seen):
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"no {until!r} line in time; got {seen}"
        try:
            seen.append(lines.get(timeout=remaining))
        except queue.Empty:
            continue
    return seen


def test_controlcenter_simulator_prints_url_credentials_and_a_working_curl_line() -> None:
    args = ["simulator", "--carrier", "controlcenter", "--port", "0", "--preload", "3", "--api-key", "k-42"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "bulkchange.cli.main", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        banner = "\n".join(_read_banner(proc, "list devices:"))
        assert "preloaded 3 INVENTORY devices into account 100020620" in banner
        base = re.search(r"base URL:\s+(http://127\.0\.0\.1:\d+/rws/api)$", banner, re.M)
        assert base is not None, banner
        assert re.search(r"username:\s+sim-user$", banner, re.M)
        assert re.search(r"API key:\s+k-42$", banner, re.M)
        assert "1 TPS" in banner
        curl = re.search(r"curl -u (\S+?):(\S+) '(\S+)'", banner)
        assert curl is not None, banner
        user, key, url = curl.groups()
        assert (user, key) == ("sim-user", "k-42")
        assert url.startswith(base.group(1) + "/v1/devices?modifiedSince=")
        listed = httpx.get(url, auth=(user, key), timeout=10.0)
        assert listed.status_code == 200
        assert len(listed.json()["devices"]) == 3
        assert httpx.get(url, auth=(user, "sim-api-key"), timeout=10.0).status_code == 401
    finally:
        proc.terminate()
        proc.wait(10)


def test_help_lists_the_control_center_flags() -> None:
    app = typer.Typer()
    register(app)

    @app.command()
    def other() -> None:  # a second command forces Typer into sub-command mode, like the main CLI
        """Placeholder."""

    result = CliRunner().invoke(app, ["simulator", "--help"], env={"COLUMNS": "200", "TERM": "dumb"})
    assert result.exit_code == 0, result.output
    flags = ("--carrier", "--api-key", "--account-id", "--tps", "--tps-burst", "--max-in-flight", "--p-not-applied")
    flags += ("--p-missing-iccid", "--p-server-error", "--p-rate-limited", "--p-slow", "--p-malformed", "--seed")
    for flag in flags:
        assert flag in result.output
    assert "controlcenter" in result.output


def test_an_unknown_preload_status_is_refused() -> None:
    app = typer.Typer()
    register(app)

    @app.command()
    def other() -> None:
        """Placeholder."""

    args = ["simulator", "--carrier", "controlcenter", "--preload", "1", "--preload-state", "preactive", "--port", "0"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code != 0
    assert "INVENTORY" in result.output
