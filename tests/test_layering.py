"""The package's layering holds, and nothing hides an import from it.

import-linter (the contracts in pyproject.toml) sees only imports that are executed at module level or in
function bodies alike; what it cannot judge is *why* an import sits inside a function. Outside the CLI
(whose commands import late so that ``bulkchange --help`` starts quickly) a function-level import of
bulkchange is how a cycle or a layering break gets hidden, so none is allowed.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "bulkchange"
LATE_IMPORTS_ALLOWED = {SRC / "cli"}


def _function_level_imports(path: Path, root: Path = SRC.parent) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[str] = []
    for func in ast.walk(tree):
        if not isinstance(func, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        for node in ast.walk(func):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("bulkchange"):
                found.append(f"{path.relative_to(root)}:{node.lineno} from {node.module}")
            elif isinstance(node, ast.ImportFrom) and node.level > 0:
                found.append(f"{path.relative_to(root)}:{node.lineno} relative import")
            elif isinstance(node, ast.Import) and any(a.name.startswith("bulkchange") for a in node.names):
                found.append(f"{path.relative_to(root)}:{node.lineno} import bulkchange…")
    return found


def test_no_bulkchange_import_hides_inside_a_function() -> None:
    offenders = [
        hit
        for path in sorted(SRC.rglob("*.py"))
        if not any(path.is_relative_to(allowed) for allowed in LATE_IMPORTS_ALLOWED)
        for hit in _function_level_imports(path)
    ]
    assert offenders == []


def test_the_scan_sees_a_hidden_import(tmp_path: Path) -> None:
    module = tmp_path / "sneaky.py"
    module.write_text("def f():\n    from bulkchange.engine import worker\n    return worker\n")
    assert _function_level_imports(module, root=tmp_path) == ["sneaky.py:2 from bulkchange.engine"]


def test_layering_contracts_are_kept() -> None:
    lint_imports = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    if lint_imports is None:
        pytest.fail("lint-imports is not installed: `make install` installs the dev dependencies")
    result = subprocess.run([lint_imports, "--no-cache"], capture_output=True, text=True, cwd=SRC.parents[1])
    assert result.returncode == 0, result.stdout[-4000:]
    assert " BROKEN" not in result.stdout
