"""`make bench-limit` keeps working: the physical-limit comparison, tiny, one round, end to end (its figures
are not checked — speed targets live in the benchmark, not in tests)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "limit.py"
KEYS = {
    "devices",
    "limit_wall_s",
    "bulkchange_wall_s",
    "ratio",
    "limit_cpu_s",
    "bulkchange_cpu_s",
    "cpu_ratio",
    "carrier_requests",
    "logins",
    "database",
    "bulkchange_peak_rss_mb",
    "bulkchange_phases",
}


def test_limit_bench_ends_with_its_json_line_and_both_sides_did_the_work() -> None:
    # Both sides check their own work (every callback counted / every change PROCESSED with an MSISDN and
    # an IP address) and the bench exits non-zero otherwise.
    run = subprocess.run(
        [sys.executable, str(BENCH), "--json", "--devices", "20", "--rounds", "1", "--scrape-every", "0.2"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    summary = json.loads(run.stdout.strip().splitlines()[-1])
    assert set(summary) >= KEYS
    assert summary["devices"] == 20 and summary["database"] == "sqlite"
    assert summary["bulkchange_peak_rss_mb"] > 0
    assert summary["carrier_requests"] >= 2 and summary["logins"] >= 1
    # Where the round's time went, from the rows' own timestamps, inside the round's clock (a phase outside it
    # would mean the bench read the wrong clock or the wrong rows). A callback may be stored before its
    # Activate is recorded (it then waits for it), or after the worker exits (a carrier's resend), so only
    # the worker's own phases are bounded by its exit.
    phases = summary["bulkchange_phases"]
    assert list(phases) == ["add_recorded", "activate_recorded", "callbacks_stored", "changes_processed"]
    assert all(0 < first <= last for first, last in phases.values())
    wall = summary["bulkchange_wall_s"]
    assert all(phases[name][1] <= wall for name in ("add_recorded", "activate_recorded", "changes_processed"))
    assert phases["add_recorded"][0] <= phases["activate_recorded"][0]
    # The receiver's share of SQLite's write lock, read from its /metrics: it stored and applied callbacks.
    lock = summary["bulkchange_receiver_lock_s"]
    assert set(lock) == {"intake_wait", "intake_held", "apply_wait", "apply_held"}
    assert lock["intake_held"] > 0 and lock["apply_held"] > 0 and min(lock.values()) >= 0
    # /metrics scraped while the round ran (the first scrape is made as the clock starts).
    scrapes = summary["bulkchange_scrape_ms"]
    assert scrapes["scrapes"] >= 1 and 0 < scrapes["median"] <= scrapes["p90"] <= scrapes["max"]
    # The worker's, from its last log line: it claimed and recorded.
    worker = summary["bulkchange_worker_lock_s"]
    assert set(worker) == {"record_wait", "record_held", "claim_wait", "claim_held"}
    assert worker["record_held"] > 0 and worker["claim_held"] > 0 and min(worker.values()) >= 0
