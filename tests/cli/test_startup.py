"""What a `bulkchange` command loads: only what it runs.

Each command imports the database, the engine and the carriers in its own function, so `--help` and the
light commands start without the web stack, AWS, spreadsheets or the simulators. Checked in a fresh
interpreter (the test process has imported everything already) by the modules it ends up holding; the
start-up times themselves are in docs/benchmarks.md.
"""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import typer

from bulkchange.cli.main import app
from bulkchange.domain.carriers import CarrierName
from bulkchange.engine import row_rules
from bulkchange.heap import MIDDLE_THRESHOLD, YOUNG_THRESHOLD
from bulkchange.store.migrate import upgrade
from bulkchange.store.tables import Base

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
# What a command that only reads bulk changes needs none of: migrations, the queue, the engine, the carriers
# and their HTTP client, the integrations.
NOT_FOR_READING = (
    "alembic",
    "httpx",
    "bulkchange.runtime",
    "bulkchange.engine",
    "bulkchange.jobs",
    "bulkchange.queue",
    "bulkchange.carrier",
    "bulkchange.integrations",
)

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


@pytest.fixture
def at_head(tmp_path: Path) -> dict[str, str]:
    """The environment of a command on an empty database at the schema head."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BULKCHANGE_")}
    env["BULKCHANGE_DATABASE_URL"] = f"sqlite:///{tmp_path}/startup.sqlite3"
    upgrade(env["BULKCHANGE_DATABASE_URL"])
    return env


def test_status_against_a_database_loads_no_web_stack_aws_sheets_or_simulator(at_head: dict[str, str]) -> None:
    code, modules = _loaded(["status", "1"], at_head)
    assert code != 0, "no bulk change 1 in an empty database"
    assert "sqlalchemy" in modules, "it did reach the database"
    assert _found(modules, WEB_AWS_SHEETS_SIMULATORS) == []


@pytest.mark.parametrize("args", [["status", "1"], ["list"], ["export", "1"]], ids=" ".join)
def test_the_readers_load_no_migrations_queue_engine_carrier_or_integration(
    at_head: dict[str, str], args: list[str]
) -> None:
    code, modules = _loaded(args, at_head)
    assert code in (0, 2, None), "list answers; status and export: no bulk change 1 (exit 2)"
    assert "bulkchange.store.schema" in modules, "the schema head was checked"
    assert _found(modules, NOT_FOR_READING + WEB_AWS_SHEETS_SIMULATORS) == []


# What a reader does not need either: logging set-up (structlog, which imports rich's pretty-printer and
# traceback modules whenever rich is installed) — it logs nothing — and the cipher of the secret columns — it
# decrypts nothing. Holding structlog out also holds that nothing such a command runs can log unconfigured.
NO_LOGGING_NO_CIPHER = ("structlog", "rich.pretty", "rich.traceback", "cryptography")


@pytest.mark.parametrize(
    "args",
    [["status", "1"], ["status", "1", "--json"], ["--log-level", "DEBUG", "list"], ["export", "1"]],
    ids=" ".join,
)
def test_the_readers_set_up_no_logging_and_load_no_cipher(at_head: dict[str, str], args: list[str]) -> None:
    code, modules = _loaded(args, at_head)
    assert code in (0, 2, None), "list answers; status and export: no bulk change 1 (exit 2)"
    assert "bulkchange.store.tables" in modules, "it did read the tables, secret columns included"
    assert _found(modules, NO_LOGGING_NO_CIPHER) == []


def test_a_command_behind_the_schema_head_is_refused_without_loading_alembic(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BULKCHANGE_")}
    env["BULKCHANGE_DATABASE_URL"] = f"sqlite:///{tmp_path}/behind.sqlite3"
    upgrade(env["BULKCHANGE_DATABASE_URL"], "0014_bulk_change_pause")
    code, modules = _loaded(["status", "1"], env)
    assert code == 2, "refused: run `bulkchange db upgrade`"
    assert _found(modules, ("alembic", *NO_LOGGING_NO_CIPHER)) == [], "the refusal is printed, not logged"


@pytest.mark.parametrize(
    "args", [["worker", "--until-idle"], ["submit", "{file}", "--status", "active", "--service-provider", "1"]]
)
def test_the_engine_commands_check_the_schema_without_alembic(
    at_head: dict[str, str], tmp_path: Path, args: list[str]
) -> None:
    """``worker`` and ``submit`` run the engine, but only ``db upgrade`` (or ``--migrate``) migrates."""
    rows = tmp_path / "rows.csv"
    rows.write_text("ICCID\n89148000000000000001\n", encoding="utf-8")
    code, modules = _loaded([a.format(file=rows) for a in args], at_head)
    assert "bulkchange.engine" in modules, "it did build the engine"
    assert "structlog" in modules, "the engine logs: logging was set up"
    # Nothing is encrypted or decrypted on the way (no carrier is called): the cipher is not loaded.
    assert _found(modules, ("alembic", "cryptography", *WEB_AWS_SHEETS_SIMULATORS)) == []
    assert code in (0, 1, 2, None)


def test_the_collector_is_paced_for_start_up_before_the_cli_imports_anything_heavy() -> None:
    """``import bulkchange.cli`` (what the entry point does first) raises the young generation's threshold
    before Typer, Rich or anything a command runs is imported: the imports are most of a start-up."""
    probe = (
        "import gc, json, sys; import bulkchange.cli; "
        "heavy = sorted(m for m in ('typer', 'rich', 'sqlalchemy') if m in sys.modules); "
        "print(json.dumps([gc.get_threshold()[0], heavy]))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True)
    assert json.loads(done.stdout) == [YOUNG_THRESHOLD, []]


def test_typer_finds_every_commands_annotations_already_evaluated() -> None:
    """No command module keeps its annotations as strings (``from __future__ import annotations``): Typer
    would compile and evaluate them again each time it builds the command tree (bulkchange.cli)."""
    callbacks: list[Callable[..., Any]] = []

    def collect(group: typer.Typer) -> None:
        if group.registered_callback is not None and group.registered_callback.callback is not None:
            callbacks.append(group.registered_callback.callback)
        callbacks.extend(c.callback for c in group.registered_commands if c.callback is not None)
        for sub in group.registered_groups:
            if sub.typer_instance is not None:
                collect(sub.typer_instance)

    collect(app)
    assert len(callbacks) > 40, "every command and group callback was found"
    assert _string_annotations({f"{f.__module__}.{f.__qualname__}": f for f in callbacks}) == []


def _string_annotations(owners: dict[str, Any]) -> list[str]:
    """``owner: name`` for every annotation of ``owners`` (by label) that is still a string."""
    return [
        f"{label}: {name}"
        for label, owner in owners.items()
        for name, hint in inspect.get_annotations(owner).items()
        if isinstance(hint, str)
    ]


def test_the_template_commands_help_names_the_carriers_that_have_row_rules() -> None:
    """`template --help` names the carriers without importing the row rules: the two lists must agree."""
    assert sorted(CarrierName) == row_rules.carriers()
    assert CarrierName.THINGSPACE.value == row_rules.CARRIER


# The generation of each collection a command runs, in order from start to exit, and the collector's pace at
# exit.
_GC_PROBE = """
import gc, json, sys
runs = []
def count(phase, info):
    if phase == "start":
        runs.append(info["generation"])
gc.callbacks.append(count)
from bulkchange.cli.main import app
try:
    app(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
print(json.dumps({"exit": code, "collections": runs, "threshold": gc.get_threshold()}), file=sys.__stderr__)
"""


def _collections(args: list[str], env: dict[str, str]) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", _GC_PROBE, *args], capture_output=True, text=True, timeout=120, env=env
    )
    return dict(json.loads(done.stderr.strip().splitlines()[-1]))


@pytest.mark.parametrize(
    "args",
    [["status", "1"], ["list"], ["submit", "{file}", "--status", "active", "--service-provider", "1"]],
    ids=" ".join,
)
def test_a_commands_start_up_never_collects_the_older_generations(
    at_head: dict[str, str], tmp_path: Path, args: list[str]
) -> None:
    """What a start-up makes — modules, classes, mappers, validators — lives until the process ends: the
    collector examines it once while young (which reclaims start-up's short-lived cycles), never again for a
    middle or full collection (bulkchange.heap; each one was ~0.02 s of ``status``)."""
    rows = tmp_path / "rows.csv"
    rows.write_text("ICCID\n89148000000000000001\n", encoding="utf-8")
    seen = _collections([a.format(file=rows) for a in args], at_head)
    assert seen["exit"] in (0, 1, 2, None)
    assert 0 in seen["collections"], "young collections still run"
    assert set(seen["collections"]) == {0}, "no middle (1) or full (2) collection"


def test_the_worker_goes_back_to_the_usual_pace_once_started(at_head: dict[str, str]) -> None:
    """``worker`` runs on for hours: once started it collects the middle generation at CPython's pace again,
    after the one full collection that settles its start-up heap."""
    seen = _collections(["worker", "--until-idle"], at_head)
    assert seen["exit"] in (0, None)
    older = [generation for generation in seen["collections"] if generation > 0]
    assert older[:1] == [2], "no middle collection before the full one that settles the start-up heap"
    assert seen["threshold"][:2] == [YOUNG_THRESHOLD, MIDDLE_THRESHOLD]


def test_the_tables_annotations_are_objects_not_strings() -> None:
    """``store.tables`` keeps its annotations as objects: SQLAlchemy would otherwise compile and evaluate each
    ``Mapped[...]`` string of the 28 declarative classes whenever a command opens the database."""
    classes = [m.class_ for m in Base.registry.mappers]
    assert len(classes) >= 28
    assert _string_annotations({cls.__name__: cls for cls in classes}) == []
