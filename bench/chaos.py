"""Chaos run: worker processes SIGKILLed at random moments while the carrier misbehaves.

    python bench/chaos.py --json [--carrier thingspace|controlcenter] [--changes N] [--kills N]
                          [--workers 3] [--seed 1] [--deadline-s 900] [--database-url URL] [--keep-logs DIR]

What runs (each in its own process):

* the carrier's simulator (``bulkchange simulator [--carrier controlcenter]``) with fault injection switched
  on once the setup is done. ThingSpace (``_chaos_ts``, the default): 5% 503, 3% 429 with ``Retry-After``,
  2% answers slower than the workers' carrier timeout (the work is done, the answer comes too late), the
  session expired every 500 calls, 1% malformed bodies (work done, body cut in half), 2% of callbacks lost,
  2% duplicated, callbacks shuffled. Control Center (``_chaos_cc``): the same 503s, 429s (``40000029``),
  slow and malformed answers on every call, plus edits answered 200 without the ICCID (made) and edits
  answered 200 but not made (the audit trail records an error);
* for ThingSpace, a CarrierService callback receiver (``bench/_receiver.py``);
* ``--workers`` ``bulkchange worker`` processes on one fresh PostgreSQL database.

One bulk change of ``--changes`` changes (default 5,000 for ThingSpace, 600 for Control Center), spread over
every target status the carrier has (the devices a change starts from are seeded first, at the simulator
and locally). While changes are in flight, a worker is SIGKILLed ``--kills`` times (default 20; 10 for
Control Center) and restarted at once. Every other kill is *aimed*: it waits until the simulator's counters
show a provisioning request arriving (ThingSpace: an action; Control Center: an edit), then kills the worker
that holds SENDING rows at that instant — i.e. after the request left and before the answer is committed.
The others hit a random worker at a random moment.

It ends when every change is terminal (or the deadline passes), then compares the database with the
simulator. The last line printed is one JSON object::

    {"changes", "kills", "faults", "lost", "duplicate_provisioning", "state_mismatches", "unfinished",
     "wall_s", ...}

* ``lost`` — changes missing, or not terminal and not visibly waiting (no reason shown, or no pending
  wake-up / queue message for their bulk change);
* ``duplicate_provisioning`` — devices for which the simulator *performed* one action more than once
  (ThingSpace: add, activate, deactivate, suspend, restore — its ``actions`` counters count only what changed
  state; Control Center: one field change — status, rate plan — its ``changes`` counters);
* ``state_mismatches`` — PROCESSED changes whose local device disagrees with the simulator (ThingSpace:
  status; MSISDN and IP address when the device is active. Control Center: status, MSISDN and rate plan in
  ``Device`` and ``JasperDevice``), or whose device is not where the target says; for Control Center also
  ERROR changes whose device shows the target status at the simulator (made, but recorded as not made);
* ``unfinished`` — changes not terminal at the end.

All four must be 0 (exit status 1 otherwise). NEEDS_REVIEW, API_FAILED, ACTIVATION_UNVERIFIED and ERROR
are allowed outcomes under faults; their counts are in ``by_status``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import _chaos_cc
import _chaos_ts
import httpx
from _common import create_database, drop_database, free_port, wait_http
from sqlalchemy import func, select

from bulkchange.domain.statuses import ACTIVE_BULK_STATUSES, IN_FLIGHT_CHANGE_STATUSES, ChangeStatus
from bulkchange.engine.submit import create_bulk_change
from bulkchange.logging_setup import configure_logging
from bulkchange.runtime import Runtime, build_runtime
from bulkchange.settings import Settings
from bulkchange.store.tables import DeviceBulkChange, M2MDeviceChange, QueueMessage

CARRIERS: dict[str, ModuleType] = {kit.NAME: kit for kit in (_chaos_ts, _chaos_cc)}
DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"

WORKER_ENV = {
    "BULKCHANGE_BATCH_MAX_DEVICES": "50",
    "BULKCHANGE_CONTINUATION_DELAY_S": "0",
    "BULKCHANGE_SLICE_MAX_SECONDS": "10",
    "BULKCHANGE_LEASE_SECONDS": "10",  # a killed worker's SENDING rows are reconciled after 10 s
    "BULKCHANGE_QUEUE_VISIBILITY_TIMEOUT_S": "15",  # a killed worker's message comes back after 15 s
    "THINGSPACE_ACTIVATION_CHECK_DELAY_SECONDS": "2",
    "THINGSPACE_UPDATE_DEVICE_STATUS_RETRY_NUMBER": "20",
    "BULKCHANGE_RETRY_BASE_S": "0.2",
    "BULKCHANGE_RETRY_CAP_S": "2",
    "BULKCHANGE_MAX_ATTEMPTS": "10",
    "BULKCHANGE_CARRIER_TIMEOUT_S": "1.5",  # < the kits' SLOW_S: a slow answer is a timeout after the carrier acted
    "BULKCHANGE_CARRIER_CALL_ATTEMPTS": "3",
    # A killed worker's Control Center in-flight lease frees its account after 6 s (> the slow answers' 4 s)
    # instead of the default 120 s; ThingSpace has no in-flight limit.
    "BULKCHANGE_CARRIER_IN_FLIGHT_LEASE_S": "6",
    "BULKCHANGE_RECONCILE_WINDOW_S": "10",
    "BULKCHANGE_RECONCILE_RETRY_S": "1",
    "BULKCHANGE_RECONCILE_GIVEUP_S": "600",
    "BULKCHANGE_LOG_LEVEL": "WARNING",
}


def worker_command() -> list[str]:
    exe = shutil.which("bulkchange", path=str(Path(sys.executable).parent))
    return [exe, "worker"] if exe else [sys.executable, "-m", "bulkchange.cli.main", "worker"]


@dataclass
class Workers:
    """The worker processes; a killed one is replaced at once by a new process in its slot."""

    env: dict[str, str]
    logdir: Path
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    started: int = 0

    def start(self, slot: int) -> subprocess.Popen[bytes]:
        self.started += 1
        n = self.started
        proc = subprocess.Popen(
            worker_command(),
            env={**self.env, "BULKCHANGE_PROCESS_BY": f"chaos-w{slot}"},  # cwd: the bench's (relative paths)
            stdout=(self.logdir / f"worker{n}.out").open("wb"),
            stderr=(self.logdir / f"worker{n}.err").open("wb"),
        )
        if slot < len(self.procs):
            self.procs[slot] = proc
        else:
            self.procs.append(proc)
        return proc

    def kill(self, slot: int) -> None:
        proc = self.procs[slot]
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        self.start(slot)

    def slot_of_pid(self, pid: int) -> int | None:
        for slot, proc in enumerate(self.procs):
            if proc.pid == pid and proc.poll() is None:
                return slot
        return None

    def revive_dead(self) -> int:
        """A worker that exited by itself (it should not) is restarted and counted."""
        dead = [slot for slot, proc in enumerate(self.procs) if proc.poll() is not None]
        for slot in dead:
            self.start(slot)
        return len(dead)

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def in_flight(rt: Runtime, bulk_id: int) -> int:
    with rt.session_factory() as session:
        return int(
            session.execute(
                select(func.count()).where(
                    M2MDeviceChange.bulk_change_id == bulk_id,
                    M2MDeviceChange.status.in_([s.value for s in IN_FLIGHT_CHANGE_STATUSES]),
                )
            ).scalar_one()
        )


def wait_bulk_finished(rt: Runtime, bulk_id: int, *, within_s: float) -> float | None:
    """Once every change is terminal, the bulk change's own status must follow (its refresh is a transaction
    of its own, and a worker killed before it leaves the next worker to make it): seconds until it did, or
    None if it was still shown as active after ``within_s`` (the workers still running)."""
    start = time.monotonic()
    active = [s.value for s in ACTIVE_BULK_STATUSES]
    while True:
        with rt.session_factory() as session:
            bulk = session.get(DeviceBulkChange, bulk_id)
            if bulk is None or bulk.status not in active:
                return round(time.monotonic() - start, 1)
        if time.monotonic() - start >= within_s:
            return None
        time.sleep(0.2)


def sending_owners(rt: Runtime, bulk_id: int) -> Counter[int]:
    """PIDs of the workers that hold SENDING rows now (the lease owner is host:pid)."""
    with rt.session_factory() as session:
        owners = session.execute(
            select(M2MDeviceChange.lease_owner).where(
                M2MDeviceChange.bulk_change_id == bulk_id,
                M2MDeviceChange.status == ChangeStatus.SENDING.value,
                M2MDeviceChange.lease_owner.is_not(None),
            )
        ).scalars()
        pids: Counter[int] = Counter()
        for owner in owners:
            tail = str(owner).rsplit(":", 1)[-1]
            if tail.isdigit():
                pids[int(tail)] += 1
        return pids


def provisioning_requests(sim: httpx.Client, endpoints: tuple[str, ...]) -> int:
    counters = sim.get("/_sim/counters").json()
    return sum(v for k, v in counters["requests"].items() if k in endpoints)


def compare(
    kit: ModuleType, rt: Runtime, sim_url: str, bulk_id: int, provider_id: int, submitted: int
) -> dict[str, Any]:
    """The database against the simulator, after the run."""
    sim_devices = kit.sim_devices(sim_url)
    counters = httpx.get(f"{sim_url}/_sim/counters", timeout=60).json()
    with rt.session_factory() as session:
        changes = list(session.scalars(select(M2MDeviceChange).where(M2MDeviceChange.bulk_change_id == bulk_id)))
        local = kit.local_view(session, provider_id)
        bulk = session.get(DeviceBulkChange, bulk_id)
        queued = int(  # live messages of the embedded queue (not dead-lettered)
            session.execute(
                select(func.count()).select_from(QueueMessage).where(QueueMessage.dead_lettered_at.is_(None))
            ).scalar_one()
        )
    ours = {c.iccid for c in changes}
    applied = kit.applied(counters)
    dup = {iccid: done for iccid, done in applied.items() if any(n > 1 for n in done.values())}
    duplicate_provisioning = sorted(dup)
    mismatches: list[dict[str, Any]] = []
    unfinished: list[M2MDeviceChange] = []
    lost: list[str] = []
    for c in changes:
        status = ChangeStatus(c.status)
        if not status.is_terminal:
            unfinished.append(c)
            waiting = bool(c.status_details) and bulk is not None and (bulk.next_wake_at is not None or queued > 0)
            if not waiting:
                lost.append(c.iccid)
            continue
        problem = kit.mismatch(c, sim_devices.get(c.iccid), local.get(c.iccid))
        if problem:
            mismatches.append({"iccid": c.iccid, "change_id": c.id, "problem": problem})
    missing = submitted - len(changes)
    return {
        "lost": len(lost) + max(0, missing),
        "duplicate_provisioning": len(duplicate_provisioning),
        "state_mismatches": len(mismatches),
        "unfinished": len(unfinished),
        "by_status": dict(Counter(c.status for c in changes)),
        "bulk_status": bulk.status if bulk else None,
        "actions_outside_bulk": sorted(set(applied) - ours)[:5],
        "examples": {
            "duplicate_provisioning": {i: dup[i] for i in duplicate_provisioning[:5]},
            "state_mismatches": mismatches[:5],
            "unfinished": [(c.id, c.status, c.status_details) for c in unfinished[:5]],
            "not_processed": [(c.id, c.status, c.status_details) for c in changes if c.status != "PROCESSED"][:5],
        },
        "sim_faults": kit.faults(counters),
        "sim_requests": counters["requests"],
        "callbacks_sent": counters.get("callbacks_sent"),
        "sim_throttled": counters.get("throttled"),
        "carrier_details": kit.details(counters, changes),
    }


def chaos_loop(
    rt: Runtime,
    workers: Workers,
    sim: httpx.Client,
    bulk_id: int,
    *,
    provisioning: tuple[str, ...],
    kills: int,
    rng: random.Random,
    deadline: float,
    max_gap_s: float,
) -> dict[str, int]:
    """Kill and restart workers until ``kills`` are done, then wait for every change to be terminal."""
    done = aimed = mid_call = revived = 0
    while time.monotonic() < deadline:
        revived += workers.revive_dead()
        if in_flight(rt, bulk_id) == 0:
            break
        if done >= kills:
            time.sleep(0.5)
            continue
        time.sleep(rng.uniform(0.1, max_gap_s))
        victim: int | None = None
        if done % 2 == 0:
            # Aimed: the moment a provisioning request reaches the carrier, kill whoever holds SENDING rows.
            before = provisioning_requests(sim, provisioning)
            wait_until = time.monotonic() + 10
            while time.monotonic() < wait_until and provisioning_requests(sim, provisioning) == before:
                time.sleep(0.005)
            owners = sending_owners(rt, bulk_id)
            for pid, _n in owners.most_common():
                victim = workers.slot_of_pid(pid)
                if victim is not None:
                    mid_call += 1
                    break
            aimed += 1
        if victim is None:
            victim = rng.randrange(len(workers.procs))
        workers.kill(victim)
        done += 1
    return {"kills": done, "aimed_kills": aimed, "kills_holding_sending_rows": mid_call, "workers_revived": revived}


def start_simulator(kit: ModuleType, args: argparse.Namespace, logdir: Path, stack: ExitStack) -> str:
    """The carrier's simulator as its own process (faults off); its root URL."""
    port = free_port()
    command = [sys.executable, "-m", "bulkchange.cli.main", "simulator", "--host", "127.0.0.1", "--port", str(port)]
    return _start_server(command + kit.simulator_args(args), port, "/_sim/counters", logdir / "simulator.err", stack)


def start_receiver(db_url: str, logdir: Path, stack: ExitStack) -> str:
    """The CarrierService callback receiver as its own process; its root URL."""
    port = free_port()
    command = [sys.executable, str(Path(__file__).with_name("_receiver.py")), db_url, str(port)]
    return _start_server(command, port, "/docs", logdir / "receiver.err", stack)


def _start_server(command: list[str], port: int, probe: str, log: Path, stack: ExitStack) -> str:
    """``command`` as its own process, stopped when ``stack`` closes, once it answers ``probe``; its root URL."""
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log.open("wb"))
    stack.callback(lambda: (proc.terminate(), proc.wait(10)))
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}{probe}")
    return url


def fresh_database(args: argparse.Namespace, stack: ExitStack) -> str:
    if args.database_url:
        return str(args.database_url)
    server = os.environ.get("BULKCHANGE_CHAOS_PG", DEFAULT_PG)
    db_url, name = create_database(server, "chaos")
    if not args.keep_db:
        stack.callback(drop_database, server, name)
    return db_url


def run(args: argparse.Namespace) -> dict[str, Any]:
    kit = CARRIERS[args.carrier]
    rng = random.Random(args.seed)
    configure_logging("WARNING")
    with ExitStack() as stack:
        logdir = Path(args.keep_logs) if args.keep_logs else Path(stack.enter_context(tempfile.TemporaryDirectory()))
        logdir.mkdir(parents=True, exist_ok=True)
        db_url = fresh_database(args, stack)
        sim_url = start_simulator(kit, args, logdir, stack)
        rt = build_runtime(Settings(database_url=db_url))  # migrates the fresh database
        stack.callback(rt.close)
        receiver_url = start_receiver(db_url, logdir, stack) if kit.NEEDS_RECEIVER else None
        provider_id, rows = kit.setup(rt, sim_url, receiver_url, args.changes, rng)
        with rt.session_factory() as session:
            bulk_id = create_bulk_change(session, rt.transport, rows, status="active", service_provider_id=provider_id)
        sim = stack.enter_context(httpx.Client(base_url=sim_url, timeout=30))
        sim.post("/_sim/faults", json=kit.fault_config(args.seed)).raise_for_status()
        workers = Workers(env={**os.environ, **WORKER_ENV, "BULKCHANGE_DATABASE_URL": db_url}, logdir=logdir)
        stack.callback(workers.stop)
        started = time.monotonic()
        for slot in range(args.workers):
            workers.start(slot)
        kills = chaos_loop(
            rt,
            workers,
            sim,
            bulk_id,
            provisioning=kit.PROVISIONING,
            kills=args.kills,
            rng=rng,
            deadline=started + args.deadline_s,
            max_gap_s=args.max_gap_s,
        )
        wall = time.monotonic() - started
        bulk_settled_s = wait_bulk_finished(rt, bulk_id, within_s=30.0)
        workers.stop()
        result = compare(kit, rt, sim_url, bulk_id, provider_id, len(rows))
        result["bulk_settled_s"] = bulk_settled_s
        worker_errors = sum(
            (logdir / f"worker{n}.err").read_text(errors="replace").count("message processing failed")
            for n in range(1, workers.started + 1)
        )
    return summarise(kit, args, rows, kills, wall, result, worker_errors)


def summarise(
    kit: ModuleType,
    args: argparse.Namespace,
    rows: list[dict[str, Any]],
    kills: dict[str, int],
    wall: float,
    result: dict[str, Any],
    worker_errors: int,
) -> dict[str, Any]:
    requests = result["sim_requests"]
    return {
        "carrier": kit.NAME,
        "changes": len(rows),
        "workers": args.workers,
        "seed": args.seed,
        **kills,
        "faults": sum(int(v) for v in result["sim_faults"].values()),
        "lost": result["lost"],
        "duplicate_provisioning": result["duplicate_provisioning"],
        "state_mismatches": result["state_mismatches"],
        "unfinished": result["unfinished"],
        "wall_s": round(wall, 1),
        "by_status": result["by_status"],
        "bulk_status": result["bulk_status"],
        "bulk_settled_s": result["bulk_settled_s"],
        "faults_by_kind": result["sim_faults"],
        "callbacks_sent": result["callbacks_sent"],
        "throttled": result["sim_throttled"],
        "provisioning_requests": {k: v for k, v in requests.items() if k in kit.PROVISIONING},
        "read_requests": {k: v for k, v in requests.items() if k not in kit.PROVISIONING},
        "worker_message_failures": worker_errors,
        **result["carrier_details"],
        "examples": result["examples"],
        "logs": str(args.keep_logs) if args.keep_logs else None,
    }


def _exit_on_sigterm(_signum: int, _frame: object) -> None:
    raise SystemExit(143)  # unwinds the ExitStack: workers, receiver and simulator stopped, database dropped


def main() -> None:
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--carrier", choices=sorted(CARRIERS), default="thingspace")
    parser.add_argument("--changes", type=int, default=None, help="default: 5000 (ThingSpace), 600 (Control Center)")
    parser.add_argument("--kills", type=int, default=None, help="default: 20 (ThingSpace), 10 (Control Center)")
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--deadline-s", type=float, default=900.0, help="give up waiting after this long")
    parser.add_argument("--max-gap-s", type=float, default=3.0, help="longest pause between two kills")
    parser.add_argument("--latency-ms", type=float, default=20.0, help="added to every simulator answer")
    parser.add_argument(
        "--database-url", default=None, help="an empty PostgreSQL database to use (default: a fresh one, dropped)"
    )
    parser.add_argument("--keep-db", action="store_true", help="do not drop the fresh database afterwards")
    parser.add_argument("--keep-logs", default=None, help="directory for worker / simulator / receiver logs")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.changes is None:
        args.changes = CARRIERS[args.carrier].DEFAULT_CHANGES
    if args.kills is None:
        args.kills = CARRIERS[args.carrier].DEFAULT_KILLS
    summary = run(args)
    if not args.json:
        print(json.dumps(summary, indent=2), file=sys.stderr)
    headline = {
        k: summary[k]
        for k in (
            "carrier",
            "changes",
            "kills",
            "faults",
            "lost",
            "duplicate_provisioning",
            "state_mismatches",
            "unfinished",
            "wall_s",
        )
    }
    details = {k: v for k, v in summary.items() if k not in headline}
    print(json.dumps(details, default=str), file=sys.stderr)
    print(
        json.dumps({**headline, **{k: details[k] for k in ("by_status", "aimed_kills", "kills_holding_sending_rows")}})
    )
    bad = any(summary[k] for k in ("lost", "duplicate_provisioning", "state_mismatches", "unfinished"))
    bad = bad or (summary["unfinished"] == 0 and summary["bulk_settled_s"] is None)  # every change done, bulk not
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
