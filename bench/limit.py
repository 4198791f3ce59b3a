"""The physical limit against bulkchange: the same work, the same simulator, interleaved.

    python bench/limit.py --json [--devices 10000] [--rounds 3] [--latency-ms 50] [--activation-delay 1]
                          [--database-url postgresql+psycopg://127.0.0.1:5432/postgres] [--scrape-every 0.5]

The work: N devices that are not yet at the carrier become active with an IMEI (ThingSpace: Add, then
Activate), their MSISDN and IP address known afterwards, results by CarrierService callback.

* **limit**: the minimal correct client (``_limit_client.py``, its own process): access token, session
  login, one Add request of N devices, one Activate request of N devices, a listener in the same process
  that only counts the N callbacks, then one list pass (pages of 2,000) for MSISDN and IP.
* **bulkchange**: the public CLI with the shipped defaults: ``bulkchange serve`` receiving callbacks
  (started and registered before the clock starts), then ``bulkchange submit FILE`` and ``bulkchange worker
  --until-idle``, one after the other; SQLite, or with ``--database-url`` a fresh database per round on that
  PostgreSQL server (dropped afterwards).

Each round runs limit, then bulkchange, each on a fresh simulator (its own process, not counted in CPU).
Wall: from starting the first timed process to the last one's exit (bulkchange: the worker exits once the
bulk change is finished). CPU: user + system of every process on our side (limit: the client; bulkchange:
submit, worker and serve's share while the clock ran). Peak RSS: the largest resident set of each of our
processes (submit and worker from ``wait4``, serve from ``VmHWM``). Where a bulkchange round's time went
(``bulkchange_phases``): when the Adds and the Activates were recorded, the callbacks stored and the changes
PROCESSED, each as [first, last] seconds from the clock's start, read from the rows' timestamps;
``bulkchange_submit_s``: when ``submit`` exited. ``bulkchange_receiver_lock_s``: on SQLite, the seconds the
receiver's callback intake and its applier waited for the database's write lock and held it while the clock
ran (from ``serve``'s ``/metrics``); ``bulkchange_worker_lock_s``: the same for the worker's recording and
claiming (from its last log line). With ``--scrape-every S``, ``serve``'s ``/metrics`` is also scraped every S
seconds while the bulkchange side's clock runs, as a monitoring system would, and ``bulkchange_scrape_ms``
says how long the scrapes took (median, 90th percentile, longest; over every round's scrapes). Figures are
medians over the rounds; the last line printed is one JSON object.

Before the first round the ``bulkchange`` package this runs (the one on ``PYTHONPATH`` first) has its bytecode
compiled, as installing a wheel does: otherwise, where ``PYTHONDONTWRITEBYTECODE`` is set, each command timed
would compile the package's sources again at its start-up.
"""

from __future__ import annotations

import argparse
import compileall
import csv
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from _common import free_port, fresh_database, new_iccid, new_imei, wait_http
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import ColumnElement, create_engine, func, select, text

import bulkchange
from bulkchange.carrier.thingspace.steps import Step
from bulkchange.engine.worker import WRITE_LOCK_EVENT
from bulkchange.store.tables import DeviceBulkChangeLog, M2MDeviceChange, ThingSpaceCallBackResponseLog, as_utc

HERE = Path(__file__).resolve().parent
ACCOUNT = "0000123456-00001"
SIM_AUTH = ("sim-client", "sim-secret")
SIM_LOGIN = {"username": "sim-user", "password": "sim-pass"}
OUR_ENDPOINTS = ("devices/", "requests/")  # the carrier requests of the work (not token, login, callbacks)
METRICS_TOKEN = "bench-limit-metrics"
# The receiver's write-lock figures reported: (name in the summary, metric, work).
RECEIVER_LOCK = (
    ("intake_wait", "bulkchange_sqlite_write_lock_wait_seconds_total", "callback_intake"),
    ("intake_held", "bulkchange_sqlite_write_lock_held_seconds_total", "callback_intake"),
    ("apply_wait", "bulkchange_sqlite_write_lock_wait_seconds_total", "callback_apply"),
    ("apply_held", "bulkchange_sqlite_write_lock_held_seconds_total", "callback_apply"),
)
# The worker's, from its last log line: (name in the summary, work, figure).
WORKER_LOCK = (
    ("record_wait", "record", "wait_s"),
    ("record_held", "record", "held_s"),
    ("claim_wait", "claim", "wait_s"),
    ("claim_held", "claim", "held_s"),
)


def cpu_s(pid: int) -> float:
    """utime + stime of a running process, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mb(pid: int) -> float:
    """The high-water mark of a running process's resident set (``VmHWM``), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def run_child(
    cmd: list[str], env: dict[str, str] | None = None, out: Any = subprocess.DEVNULL, stderr_to: list[str] | None = None
) -> tuple[float, float]:
    """Run ``cmd`` to its end: (its CPU seconds including its own children, its peak RSS in MB); its standard
    error's lines appended to ``stderr_to`` when given."""
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.PIPE, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[:4]} exited {proc.returncode}: {err[-2000:]}")
    if stderr_to is not None:
        stderr_to.extend(err.splitlines())
    return usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


class Simulator:
    """A fresh ThingSpace simulator process with the real limits."""

    def __init__(self, stack: ExitStack, *, latency_ms: float, activation_delay: float) -> None:
        port = free_port()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bulkchange.cli.main",
                "simulator",
                "--port",
                str(port),
                "--latency-ms",
                str(latency_ms),
                "--activation-delay",
                str(activation_delay),
                "--callback-retry-interval",
                "5",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        stack.callback(_stop, self.proc)
        self.url = f"http://127.0.0.1:{port}"
        wait_http(f"{self.url}/_sim/counters")

    def requests(self) -> dict[str, int]:
        return dict(httpx.get(f"{self.url}/_sim/counters", timeout=30).json()["requests"])

    def register_listener(self, url: str, username: str | None = None, password: str | None = None) -> None:
        """The CarrierService listener, registered as an operator would before the work starts."""
        token = httpx.post(
            f"{self.url}/api/ts/v1/oauth2/token", auth=SIM_AUTH, data={"grant_type": "client_credentials"}
        ).json()["access_token"]
        bearer = {"Authorization": f"Bearer {token}"}
        session = httpx.post(f"{self.url}/api/m2m/v1/session/login", json=SIM_LOGIN, headers=bearer).json()
        body: dict[str, Any] = {"name": "CarrierService", "url": url}
        if username:
            body |= {"username": username, "password": password}
        r = httpx.post(
            f"{self.url}/api/m2m/v1/callbacks/{ACCOUNT}",
            json=body,
            headers=bearer | {"VZ-M2M-Token": session["sessionToken"]},
        )
        r.raise_for_status()


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def receiver_lock(port: int) -> dict[str, float]:
    """The receiver's write-lock seconds so far (``RECEIVER_LOCK``), from its ``/metrics``; none on PostgreSQL."""
    text = httpx.get(
        f"http://127.0.0.1:{port}/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}, timeout=30
    ).raise_for_status().text
    found = {
        (sample.name, sample.labels.get("work")): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    return {name: found[(metric, work)] for name, metric, work in RECEIVER_LOCK if (metric, work) in found}


class Scraper:
    """Scrapes ``/metrics`` every ``every_s`` seconds in a thread until stopped; the seconds each scrape took."""

    def __init__(self, port: int, every_s: float | None) -> None:
        self.took: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(port, every_s), daemon=True) if every_s else None

    def __enter__(self) -> Scraper:
        if self._thread is not None:
            self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(60)

    def _run(self, port: int, every_s: float) -> None:
        headers = {"Authorization": f"Bearer {METRICS_TOKEN}"}
        with httpx.Client(headers=headers, timeout=60) as client:
            while not self._stop.is_set():
                started = time.perf_counter()
                client.get(f"http://127.0.0.1:{port}/metrics").raise_for_status()
                self.took.append(time.perf_counter() - started)
                self._stop.wait(every_s)


def worker_lock(log_lines: list[str]) -> dict[str, float]:
    """The worker's write-lock seconds (``WORKER_LOCK``), from its last log line; none on PostgreSQL."""
    for line in reversed(log_lines):
        if line.startswith("{") and (entry := json.loads(line)).get("event") == WRITE_LOCK_EVENT:
            by_work = entry["write_lock"]
            return {name: by_work[work][key] for name, work, key in WORKER_LOCK if work in by_work}
    return {}


def delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0)}


def counts(requests: dict[str, int]) -> dict[str, int]:
    return {
        "carrier_requests": sum(v for k, v in requests.items() if k.startswith(OUR_ENDPOINTS)),
        "tokens": requests.get("oauth2/token", 0),
        "logins": requests.get("session/login", 0),
    }


def limit_round(devices: list[tuple[str, str]], workdir: Path, args: argparse.Namespace) -> dict[str, Any]:
    with ExitStack() as stack:
        sim = Simulator(stack, latency_ms=args.latency_ms, activation_delay=args.activation_delay)
        port = free_port()
        sim.register_listener(f"http://127.0.0.1:{port}")
        path = workdir / "limit-devices.json"
        path.write_text(json.dumps(devices))
        before = sim.requests()
        sim_cpu0 = cpu_s(sim.proc.pid)
        out = workdir / "limit-out.json"
        started = time.monotonic()
        with out.open("w") as fh:
            cpu, _ = run_child([sys.executable, str(HERE / "_limit_client.py"), sim.url, str(port), str(path)], out=fh)
        wall = time.monotonic() - started
        result = json.loads(out.read_text())
        if result["callbacks"] != len(devices) or result["with_msisdn_and_ip"] != len(devices):
            raise RuntimeError(f"limit client did not finish the work: {result}")
        return {
            "wall_s": round(wall, 3),
            "cpu_s": round(cpu, 3),
            "sim_cpu_s": round(cpu_s(sim.proc.pid) - sim_cpu0, 3),
            **counts(delta(sim.requests(), before)),
            "load": os.getloadavg()[0],
        }


def bulkchange_round(devices: list[tuple[str, str]], workdir: Path, args: argparse.Namespace) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BULKCHANGE_", "THINGSPACE_"))}
    cli = [sys.executable, "-m", "bulkchange.cli.main"]
    with ExitStack() as stack:
        db = fresh_database(args.database_url, workdir, stack)
        env["BULKCHANGE_DATABASE_URL"] = db
        sim = Simulator(stack, latency_ms=args.latency_ms, activation_delay=args.activation_delay)
        run_child([*cli, "db", "upgrade"], env)
        added = subprocess.run(
            [
                *cli,
                "providers",
                "add",
                "--name",
                "bench",
                "--base-url",
                sim.url,
                "--client-id",
                SIM_AUTH[0],
                "--client-secret",
                SIM_AUTH[1],
                "--username",
                SIM_LOGIN["username"],
                "--password",
                SIM_LOGIN["password"],
                "--account",
                ACCOUNT,
                "--register-callback",
                "--json",
            ],
            env=env,
            capture_output=True,
            check=True,
        )
        provider = str(json.loads(added.stdout)["service_provider_id"])
        port = free_port()
        env["BULKCHANGE_METRICS_TOKEN"] = METRICS_TOKEN
        serve = subprocess.Popen(
            [*cli, "serve", "--port", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        stack.callback(_stop, serve)
        wait_http(f"http://127.0.0.1:{port}/healthz")
        run_child([*cli, "providers", "register-callback", provider, "--url", f"http://127.0.0.1:{port}"], env)
        csv_path = workdir / "bc-devices.csv"
        with csv_path.open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["ICCID", "IMEI", "ServicePlan", "MdnZipCode"])
            w.writerows((iccid, imei, "M2M_4G", "98801") for iccid, imei in devices)
        before = sim.requests()
        sim_cpu0, serve_cpu0 = cpu_s(sim.proc.pid), cpu_s(serve.pid)
        lock0 = receiver_lock(port)
        started, started_at = time.monotonic(), datetime.now(UTC)
        with Scraper(port, args.scrape_every) as scrapes:
            submit_cpu, submit_rss = run_child(
                [*cli, "submit", str(csv_path), "--status", "active", "--service-provider", provider, "--json"], env
            )
            submitted = time.monotonic() - started
            worker_log: list[str] = []
            worker_cpu, worker_rss = run_child([*cli, "worker", "--until-idle"], env, stderr_to=worker_log)
            wall = time.monotonic() - started
        serve_cpu, serve_rss = cpu_s(serve.pid) - serve_cpu0, peak_rss_mb(serve.pid)
        lock = {name: round(s - lock0.get(name, 0.0), 3) for name, s in receiver_lock(port).items()}
        by_status, with_line = _outcome(db)
        if by_status != {"PROCESSED": len(devices)} or with_line != len(devices):
            raise RuntimeError(f"bulkchange did not finish the work: {by_status}, {with_line} with MSISDN and IP")
        return {
            "wall_s": round(wall, 3),
            "submit_s": round(submitted, 3),
            "phases": _phases(db, started_at),
            "receiver_lock_s": lock,
            "worker_lock_s": worker_lock(worker_log),
            "scrapes_s": scrapes.took,
            "cpu_s": round(submit_cpu + worker_cpu + serve_cpu, 3),
            "cpu_by_process": {
                "submit": round(submit_cpu, 3),
                "worker": round(worker_cpu, 3),
                "serve": round(serve_cpu, 3),
            },
            "peak_rss_mb": {
                "submit": round(submit_rss, 1),
                "worker": round(worker_rss, 1),
                "serve": round(serve_rss, 1),
            },
            "sim_cpu_s": round(cpu_s(sim.proc.pid) - sim_cpu0, 3),
            **counts(delta(sim.requests(), before)),
            "load": os.getloadavg()[0],
        }


def _outcome(db_url: str) -> tuple[dict[str, int], int]:
    """Where the changes ended, and how many carry an MSISDN and an IP address."""
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            by_status = {
                str(status): int(n)
                for status, n in conn.execute(
                    text('SELECT "Status", count(*) FROM "M2M_DeviceChange" GROUP BY "Status"')
                ).all()
            }
            with_line = conn.execute(
                text('SELECT count(*) FROM "M2M_DeviceChange" WHERE "MSISDN" IS NOT NULL AND "IpAddress" IS NOT NULL')
            ).scalar_one()
    finally:
        engine.dispose()
    return by_status, int(with_line)


_LOG, _STORED = DeviceBulkChangeLog, ThingSpaceCallBackResponseLog
_PHASE_SPANS: dict[str, tuple[Any, ColumnElement[bool] | None]] = {
    # phase: (the rows' timestamp, which rows)
    "add_recorded": (_LOG.processed_date, _LOG.log_entry_description == Step.ADD.description),
    "activate_recorded": (_LOG.processed_date, _LOG.log_entry_description == Step.ACTIVATE.description),
    "callbacks_stored": (_STORED.received_date, None),
    "changes_processed": (M2MDeviceChange.processed_date, None),
}
PHASES = tuple(_PHASE_SPANS)


def _phases(db_url: str, started_at: datetime) -> dict[str, list[float]]:
    """Where a bulkchange round's time went: for each part of the work, [first, last] in seconds from the
    clock's start, read from the rows' own timestamps — a step's log row is written in the transaction that
    records its outcome, a callback row in the receiver's commit before its 2xx."""
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            phases: dict[str, list[float]] = {}
            for name, (column, where) in _PHASE_SPANS.items():
                query = select(func.min(column), func.max(column))
                first, last = conn.execute(query if where is None else query.where(where)).one()
                if first is not None:
                    phases[name] = [_after(started_at, first), _after(started_at, last)]
    finally:
        engine.dispose()
    return phases


def _after(start: datetime, moment: datetime) -> float:
    return round((as_utc(moment) - start).total_seconds(), 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved pairs (limit, bulkchange)")
    parser.add_argument("--latency-ms", type=float, default=50.0, help="added to every simulator answer")
    parser.add_argument("--activation-delay", type=float, default=1.0, help="seconds until an activation completes")
    parser.add_argument(
        "--database-url", default=None, help="a PostgreSQL server (a fresh database per round); default SQLite"
    )
    parser.add_argument(
        "--scrape-every", type=float, default=None, help="scrape serve's /metrics every S seconds during the round"
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    _compile_package()
    rng = random.Random(24)
    limit_runs: list[dict[str, Any]] = []
    bc_runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.rounds):
            # Fresh devices per run: each run has its own simulator, but ICCIDs stay distinct anyway.
            limit_runs.append(limit_round(_devices(rng, args.devices), Path(tmp), args))
            print(f"limit: {limit_runs[-1]}", file=sys.stderr)
            bc_runs.append(bulkchange_round(_devices(rng, args.devices), Path(tmp), args))
            print(f"bulkchange: {bc_runs[-1]}", file=sys.stderr)
    database = "postgresql" if (args.database_url or "").startswith("postgresql") else "sqlite"
    print(json.dumps(summary(args.devices, limit_runs, bc_runs, database)))


def _compile_package() -> None:
    """The bytecode of the ``bulkchange`` package the timed commands import, as a wheel install leaves it."""
    for folder in bulkchange.__path__:
        compileall.compile_dir(folder, quiet=1)


def _devices(rng: random.Random, n: int) -> list[tuple[str, str]]:
    return [(new_iccid(rng), new_imei(rng)) for _ in range(n)]


def summary(
    n: int, limit_runs: list[dict[str, Any]], bc_runs: list[dict[str, Any]], database: str = "sqlite"
) -> dict[str, Any]:
    def median(runs: list[dict[str, Any]], key: str) -> float:
        return round(statistics.median(r[key] for r in runs), 3)

    lw, bw = median(limit_runs, "wall_s"), median(bc_runs, "wall_s")
    lc, bc = median(limit_runs, "cpu_s"), median(bc_runs, "cpu_s")
    return {
        "devices": n,
        "rounds": len(bc_runs),
        "limit_wall_s": lw,
        "bulkchange_wall_s": bw,
        "ratio": round(bw / lw, 2),
        "limit_cpu_s": lc,
        "bulkchange_cpu_s": bc,
        "cpu_ratio": round(bc / lc, 2),
        "carrier_requests": max(r["carrier_requests"] for r in bc_runs),
        "limit_carrier_requests": max(r["carrier_requests"] for r in limit_runs),
        "logins": max(r["logins"] for r in bc_runs),
        "database": database,
        "bulkchange_peak_rss_mb": max(max(r["peak_rss_mb"].values()) for r in bc_runs),
        "tokens": max(r["tokens"] for r in bc_runs),
        "bulkchange_phases": {
            name: [round(statistics.median(r["phases"][name][i] for r in bc_runs), 2) for i in (0, 1)]
            for name in PHASES
            if all(name in r["phases"] for r in bc_runs)
        },
        "bulkchange_submit_s": median(bc_runs, "submit_s"),
        "bulkchange_receiver_lock_s": _medians(bc_runs, "receiver_lock_s", [name for name, _, _ in RECEIVER_LOCK]),
        "bulkchange_worker_lock_s": _medians(bc_runs, "worker_lock_s", [name for name, _, _ in WORKER_LOCK]),
        **_scrapes([s for r in bc_runs for s in r.get("scrapes_s", [])]),
        "bulkchange_wall_s_runs": [r["wall_s"] for r in bc_runs],
        "limit_wall_s_runs": [r["wall_s"] for r in limit_runs],
        "load": [r["load"] for r in limit_runs + bc_runs],
    }


def _medians(runs: list[dict[str, Any]], key: str, names: list[str]) -> dict[str, float]:
    """Per name, the median over the runs of ``run[key][name]`` (names some run lacks are left out)."""
    return {
        name: round(statistics.median(r[key][name] for r in runs), 3)
        for name in names
        if all(name in r[key] for r in runs)
    }


def _scrapes(took: list[float]) -> dict[str, Any]:
    """``bulkchange_scrape_ms`` when there were scrapes: median, 90th percentile and longest, in ms."""
    if not took:
        return {}
    ordered = sorted(took)
    p90 = ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]
    return {
        "bulkchange_scrape_ms": {
            "scrapes": len(ordered),
            "median": round(1000 * statistics.median(ordered), 1),
            "p90": round(1000 * p90, 1),
            "max": round(1000 * ordered[-1], 1),
        }
    }


if __name__ == "__main__":
    main()
