"""README's "Using it" runs as written: its ``sh`` blocks are executed top to bottom against
``bulkchange simulator``, as a new operator would paste them.

The convention the README states: a block whose first line is ``# in another terminal`` runs until
stopped — this test starts it in the background, waits for the URL it prints to answer (polling, no
sleeps), and stops it at the end. Every other block runs in one ``bash -e -o pipefail`` (so an ``export``
carries on to the next block, and the first command that fails ends the run, named).

The run is isolated from the user's own data: a temporary folder as the working directory (with a copy of
``examples/``), a temporary ``HOME`` and ``BULKCHANGE_DATABASE_URL``. The one liberty taken with the text:
the fixed ports (8765 for the simulator, 8000 for ``serve``) become free ones, so the test can run beside a
simulator someone already started.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[1]
BACKGROUND = "# in another terminal"
PORTS = (8765, 8000)  # the simulator's and serve's, as the README gives them
READY_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Block:
    code: str

    @property
    def background(self) -> bool:
        return self.code.lstrip().startswith(BACKGROUND)


def using_it_blocks(readme: str) -> list[Block]:
    """The ``sh`` blocks of the "Using it" section, in order."""
    section = re.search(r"^## Using it\n(.*?)(?=^## )", readme, re.S | re.M)
    assert section, "README has no '## Using it' section"
    return [Block(code) for code in re.findall(r"^```sh\n(.*?)^```", section.group(1), re.S | re.M)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _environment(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BULKCHANGE_", "THINGSPACE_", "XDG_"))}
    env.pop("DEVICE_BULK_CHANGE_QUEUE_URL", None)
    home = tmp / "home"
    home.mkdir()
    env.update(
        HOME=str(home),
        BULKCHANGE_DATABASE_URL=f"sqlite:///{tmp / 'readme.sqlite3'}",
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",  # where `bulkchange` is
        NO_COLOR="1",
        COLUMNS="200",
    )
    return env


class Background:
    """A long-running block: started in its own process group, ready once the URL it prints answers."""

    def __init__(self, code: str, cwd: Path, env: dict[str, str]) -> None:
        self.code = code
        self.proc = subprocess.Popen(
            ["bash", "-e", "-c", code],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.output: list[str] = []

    def wait_ready(self) -> str:
        """Read its output until it says where it is listening (the simulator's last line, uvicorn's "running
        on"), then poll that URL until it answers; return the URL."""
        assert self.proc.stdout is not None
        for line in self.proc.stdout:  # blocks until the command prints; ends if it exits
            self.output.append(line)
            found = re.search(r"(?:listening|running) on (http://127\.0\.0\.1:\d+)", line)
            if found:
                return self._poll(found.group(1))
        raise AssertionError(
            f"{self.code!r} exited ({self.proc.wait()}) before naming its URL:\n{''.join(self.output)}"
        )

    def _poll(self, url: str) -> str:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            try:
                httpx.get(url, timeout=2.0)
                return url
            except httpx.TransportError:
                assert self.proc.poll() is None, f"{self.code!r} exited:\n{''.join(self.output)}"
                assert time.monotonic() < deadline, f"{url} never answered"

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)  # Ctrl-C, as the README says
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    return tmp_path


@pytest.fixture
def background() -> Iterator[list[Background]]:
    started: list[Background] = []
    yield started
    for b in reversed(started):
        b.stop()


def _run_foreground(code: str, cwd: Path, env: dict[str, str], transcript: list[str]) -> None:
    """The blocks so far, in one shell: the first failing command ends it and is named."""
    script = "trap 'echo \"README command failed: $BASH_COMMAND\" >&2' ERR\n" + code
    done = subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-c", script],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    transcript.append(f"$ {code}\n{done.stdout}{done.stderr}")
    assert done.returncode == 0, "\n".join(transcript)


def test_the_blocks_follow_the_convention() -> None:
    blocks = using_it_blocks((ROOT / "README.md").read_text(encoding="utf-8"))
    commands = [b.code for b in blocks if b.background]
    assert any("bulkchange simulator" in c for c in commands) and any("bulkchange serve" in c for c in commands)
    assert blocks[0].background, "the simulator starts first"
    foreground = "\n".join(b.code for b in blocks if not b.background)
    for step in ("db upgrade", "providers add", "submit examples/", "worker --until-idle", "status 1", "export 1"):
        assert f"bulkchange {step}" in foreground, step


def test_using_it_runs_as_written(workdir: Path, background: list[Background]) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    ports = {old: _free_port() for old in PORTS}
    for old, new in ports.items():
        readme = re.sub(rf"(?<=[:\s]){old}\b", str(new), readme)
    env = _environment(workdir)
    transcript: list[str] = []
    shell_so_far = ""  # exports of earlier blocks hold in later ones, as in one terminal
    for block in using_it_blocks(readme):
        if block.background:
            started = Background(block.code, workdir, env)
            background.append(started)
            url = started.wait_ready()
            transcript.append(f"$ {block.code}(background) ready at {url}")
            if "bulkchange serve" in block.code:
                assert httpx.get(f"{url}/healthz").status_code == 200
                assert httpx.get(f"{url}/ui/login").status_code == 200, "the dashboard's login page"
            continue
        exports = "\n".join(line for line in shell_so_far.splitlines() if line.startswith("export "))
        _run_foreground(block.code if not exports else f"{exports}\n{block.code}", workdir, env, transcript)
        shell_so_far += block.code
    banner = "".join(background[0].output)
    assert "--client-id sim-client --client-secret sim-secret" in banner, "the simulator prints what to paste"
    output = "\n".join(transcript)
    assert re.search(r"bulk change 1: \W*PROCESSED", output), output  # the word follows its sign (✓)
    assert re.search(r"bulk change 2: \W*PROCESSED", output), output

    shown = subprocess.run(
        ["bulkchange", "status", "1", "--json"],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    status = json.loads(shown.stdout)
    assert status["status"] == "PROCESSED" and status["by_status"] == {"PROCESSED": 3}, status
    assert all(d["msisdn"] for d in status["devices"]), "every activated line has its MDN"
    exported = (workdir / "results.csv").read_text(encoding="utf-8").splitlines()
    assert exported[0].startswith("ChangeId,ICCID") and len(exported) == 1 + 3
    assert all(",PROCESSED," in line for line in exported[1:])
    assert str(workdir) in str(env["BULKCHANGE_DATABASE_URL"]) and (workdir / "readme.sqlite3").exists()
