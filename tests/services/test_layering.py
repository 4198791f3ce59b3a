"""The application services sit between the engine and the entry points: a service never imports ``api``
or ``cli``, and the dashboard's list and detail modules build no query of their own."""

from __future__ import annotations

import ast
from pathlib import Path

import bulkchange

SRC = Path(bulkchange.__file__).parent
SQL_BUILDERS = {"select", "update", "insert", "delete", "func", "text", "and_", "or_", "exists"}


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    found: list[tuple[str, list[str]]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.extend((alias.name, []) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.append((node.module, [alias.name for alias in node.names]))
    return found


def test_services_never_import_an_entry_point() -> None:
    offending = [
        f"{path.name}: {module}"
        for path in sorted((SRC / "services").glob("*.py"))
        for module, _names in _imports(path)
        if module.startswith(("bulkchange.api", "bulkchange.cli", "bulkchange.aws"))
    ]
    assert not offending


def test_the_dashboard_and_the_api_read_models_hold_no_sql() -> None:
    offending = [
        f"{path.name}: {module} {names}"
        for path in [*sorted((SRC / "api" / "dashboard").glob("*.py")), SRC / "api" / "templating.py"]
        for module, names in _imports(path)
        if module == "sqlalchemy" or (module.startswith("sqlalchemy") and SQL_BUILDERS & set(names))
    ]
    assert not offending
