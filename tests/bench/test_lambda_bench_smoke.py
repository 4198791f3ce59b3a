"""`bench/lambda_invocation.py` keeps working: small, end to end (its figures are not checked — sizing
figures belong in docs/benchmarks.md, not in tests)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "lambda_invocation.py"


def test_the_lambda_bench_ends_with_its_json_line_and_every_change_processed() -> None:
    small = ["--bulk-changes", "2", "--devices", "10", "--latency-ms", "0", "--check-delay", "2"]
    run = subprocess.run(
        [sys.executable, str(BENCH), "--json", *small],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    summary = json.loads(run.stdout.strip().splitlines()[-1])
    assert summary["devices"] == 20 and summary["changes"] == {"PROCESSED": 20}
    assert summary["records"]["n"] >= 2 and summary["invocations"]["n"] >= 1
    assert summary["records_reported"] == 0
