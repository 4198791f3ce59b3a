"""A short chaos run (bench/chaos.py) in the suite: about 500 changes, 5 SIGKILLs, every simulator fault.

The bench runs as a subprocess (it starts its own simulator, callback receiver and three worker
processes) on a brand-new PostgreSQL database; its last line is the JSON summary, and the four counts
that prove "nothing lost, nothing done twice, database agrees with the carrier" must all be 0.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "chaos.py"


@pytest.mark.slow
@pytest.mark.serial
@pytest.mark.postgres
def test_short_chaos_run_loses_nothing_and_does_nothing_twice(pg_empty_url: str, tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    proc = subprocess.run(
        [
            sys.executable,
            str(BENCH),
            "--json",
            "--changes",
            "500",
            "--kills",
            "5",
            "--max-gap-s",
            "1.5",
            "--deadline-s",
            "240",
            "--database-url",
            pg_empty_url,
            "--keep-logs",
            str(logs),
        ],
        capture_output=True,
        text=True,
        timeout=420,
        check=False,
    )
    lines = proc.stdout.strip().splitlines()
    assert lines, f"no output; exit {proc.returncode}; stderr: {proc.stderr[-3000:]}"
    summary = json.loads(lines[-1])
    print(f"\nchaos-short: {lines[-1]}")
    assert summary["changes"] == 500
    assert summary["kills"] >= 1, summary
    zeros = {k: summary[k] for k in ("lost", "duplicate_provisioning", "state_mismatches", "unfinished")}
    assert zeros == {"lost": 0, "duplicate_provisioning": 0, "state_mismatches": 0, "unfinished": 0}, (
        summary,
        proc.stderr[-3000:],
        f"logs in {logs}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
