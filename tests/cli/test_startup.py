"""What a `bulkchange` command loads: only what it runs.

Each command imports the database, the engine and the carriers in its own function, so `--help` and the
light commands start without the web stack, AWS, spreadsheets or the simulators. Checked in a fresh
interpreter (the test process has imported everything already) by the modules it ends up holding; the
start-up times themselves are in docs/benchmarks.md.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bulkchange.domain.carriers import CarrierName
from bulkchange.engine import row_rules
from bulkchange.store.migrate import upgrade

WEB_AWS_SHEETS_SIMULATORS = (
    "fastapi",
    "starlette",
    "uvicorn",
    "boto3",
    "botocore",
    "openpyxl",
    "jinja2",
    "aiohttp",
    "bulkchange.api",
    "bulkchange.aws",
    "bulkchange.simulator",
    "bulkchange.demo",
)
# What no `--help` needs either: the database, the engine, logging set-up, the HTTP client.
RUNTIME = ("sqlalchemy", "alembic", "structlog", "httpx", "bulkchange.runtime", "bulkchange.engine", "bulkchange.store")

_PROBE = """
import json, sys
from bulkchange.cli.main import app
try:
    app(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
print(json.dumps({"exit": code, "modules": sorted(sys.modules)}), file=sys.__stderr__)
"""


def _loaded(args: list[str], env: dict[str, str] | None = None) -> tuple[object, set[str]]:
    """Run ``bulkchange ARGS`` in a fresh interpreter: (exit code, the modules it imported)."""
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env or dict(os.environ),
    )
    last = json.loads(done.stderr.strip().splitlines()[-1])
    return last["exit"], set(last["modules"])


def _found(modules: set[str], names: tuple[str, ...]) -> list[str]:
    return sorted(n for n in names if n in modules or any(m.startswith(n + ".") for m in modules))


@pytest.mark.parametrize(
    "args",
    [["--help"], ["status", "--help"], ["submit", "--help"], ["worker", "--help"], ["list", "--help"]],
    ids=" ".join,
)
def test_help_loads_neither_the_web_stack_nor_the_database(args: list[str]) -> None:
    code, modules = _loaded(args)
    assert code in (0, None)
    assert _found(modules, WEB_AWS_SHEETS_SIMULATORS + RUNTIME) == []


def test_status_against_a_database_loads_no_web_stack_aws_sheets_or_simulator(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BULKCHANGE_")}
    env["BULKCHANGE_DATABASE_URL"] = f"sqlite:///{tmp_path}/startup.sqlite3"
    upgrade(env["BULKCHANGE_DATABASE_URL"])
    code, modules = _loaded(["status", "1"], env)
    assert code != 0, "no bulk change 1 in an empty database"
    assert "sqlalchemy" in modules, "it did reach the database"
    assert _found(modules, WEB_AWS_SHEETS_SIMULATORS) == []


def test_the_template_commands_help_names_the_carriers_that_have_row_rules() -> None:
    """`template --help` names the carriers without importing the row rules: the two lists must agree."""
    assert sorted(CarrierName) == row_rules.carriers()
    assert CarrierName.THINGSPACE.value == row_rules.CARRIER
