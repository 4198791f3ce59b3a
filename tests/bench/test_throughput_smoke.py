"""`make bench` keeps working: the throughput benchmark, small, end to end (its figures are not checked —
speed targets live in the benchmark, not in tests)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "throughput.py"
KEYS = {
    "devices",
    "wall_s",
    "carrier_requests",
    "requests_per_device",
    "worker_cpu_ms_per_device",
    "peak_rss_mb",
    "baseline_devices",
    "baseline_wall_s",
    "speedup_per_device",
}


def test_throughput_bench_ends_with_its_json_line_and_every_change_processed() -> None:
    run = subprocess.run(
        [sys.executable, str(BENCH), "--json", "--devices", "60", "--baseline-devices", "6"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    summary = json.loads(run.stdout.strip().splitlines()[-1])
    assert set(summary) == KEYS
    assert summary["devices"] == 60 and summary["baseline_devices"] == 6
    assert summary["carrier_requests"] >= 1
    statuses = [line for line in run.stderr.splitlines() if line.startswith("by status: ")]
    assert statuses == ["by status: main {'PROCESSED': 60}, baseline {'PROCESSED': 6}"], run.stderr[-2000:]
