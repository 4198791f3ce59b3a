"""bandit over src/: clean, every remaining finding justified in place (``# nosec Bxxx - reason``).

Project-wide skips are in pyproject.toml ``[tool.bandit]`` (B101 asserts used for type narrowing, B311
``random`` for jitter and simulation — the same two rules ruff's S101 / S311 are ignored for).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_bandit_is_clean() -> None:
    bandit = shutil.which("bandit", path=str(Path(sys.executable).parent))
    if bandit is None:
        pytest.fail("bandit is not installed (it is a dev dependency: pip install -e '.[dev]')")
    proc = subprocess.run(
        [bandit, "-c", "pyproject.toml", "-r", "src", "-q"], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
