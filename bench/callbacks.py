"""Callback ingestion benchmark: N CarrierService callbacks in one burst, until every change they settle is done.

    python bench/callbacks.py --json [--callbacks 10000] [--concurrency 16] [--database-url URL] [--intake-only]

ThingSpace answers a 10,000-device Suspend with 10,000 callbacks, one per device. Here N changes are put
in AWAITING_RESULT (submitted through the engine, then marked sent with a requestId per 2,000 devices, as
the worker would after the carrier accepted them), and the callback receiver (``bench/_receiver.py``, its
own process, as in production) is sent one success callback per change, ``--concurrency`` at a time.
Measured: how long until every callback was acknowledged (stored and committed), and until every change is
PROCESSED (applied); the receiver process's CPU. With ``--intake-only`` the receiver does not apply them
(nothing becomes PROCESSED), so its CPU is that of storing and answering alone. The last line printed is
one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import aiohttp
from _common import free_port, fresh_database, new_iccid, wait_http
from sqlalchemy import func, insert, select, update

from bulkchange.domain.statuses import ChangeStatus, DeviceStatusId
from bulkchange.engine.submit import create_bulk_change
from bulkchange.logging_setup import configure_logging
from bulkchange.providers import add_provider, callback_listener
from bulkchange.runtime import build_runtime
from bulkchange.settings import Settings
from bulkchange.store.tables import Device, M2MDeviceChange, utcnow

PER_REQUEST = 2000  # devices per carrier request, so callbacks share requestIds as they would


def _cpu_s(pid: int) -> float:
    """utime + stime of a process, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _awaiting_changes(
    db_url: str, n: int, rng: random.Random
) -> tuple[int, tuple[str, str], int, list[tuple[str, str]]]:
    """N suspend changes of active devices, AWAITING their callback: (provider, its callback credentials, bulk
    change, [(requestId, iccid)])."""
    rt = build_runtime(Settings(database_url=db_url))
    with rt.session_factory() as session:
        provider_id = add_provider(
            session,
            name=f"bench-{uuid.uuid4().hex[:6]}",
            base_url="http://127.0.0.1:9",  # never called: the callbacks are the only traffic
            client_id="c",
            client_secret="s",
            username="u",
            password="p",
            account="0000123456-00001",
        )
        listener = callback_listener(session, provider_id)
    assert listener.username and listener.password
    credentials = (listener.username, listener.password)
    iccids = [new_iccid(rng) for _ in range(n)]
    with rt.session_factory.begin() as session:
        for start in range(0, n, 1000):
            session.execute(
                insert(Device),
                [
                    {
                        "service_provider_id": provider_id,
                        "iccid": iccid,
                        "device_status_id": DeviceStatusId.ACTIVE,
                        "status": "active",
                        "is_deleted": False,
                        "is_active": True,
                    }
                    for iccid in iccids[start : start + 1000]
                ],
            )

    def rows() -> Iterator[dict[str, Any]]:
        for iccid in iccids:
            yield {"ICCID": iccid}

    with rt.session_factory() as session:
        bulk_id = create_bulk_change(session, rt.transport, rows(), status="suspend", service_provider_id=provider_id)
    sent: list[tuple[str, str]] = []
    with rt.session_factory.begin() as session:
        ids = list(
            session.execute(
                select(M2MDeviceChange.id, M2MDeviceChange.iccid)
                .where(M2MDeviceChange.bulk_change_id == bulk_id)
                .order_by(M2MDeviceChange.id)
            ).all()
        )
        for start in range(0, len(ids), PER_REQUEST):
            request_id = str(uuid.uuid4())
            chunk = ids[start : start + PER_REQUEST]
            session.execute(
                update(M2MDeviceChange)
                .where(M2MDeviceChange.id.in_([i for i, _ in chunk]))
                .values(
                    status=ChangeStatus.AWAITING_RESULT.value,
                    carrier_request_id=request_id,
                    sent_at=utcnow(),
                    attempt_count=1,
                    status_details="suspend accepted; awaiting the carrier's result",
                )
            )
            sent += [(request_id, iccid) for _, iccid in chunk]
    rt.close()
    return provider_id, credentials, bulk_id, sent


def _body(request_id: str, iccid: str, credentials: tuple[str, str]) -> dict[str, Any]:
    return {
        "username": credentials[0],
        "password": credentials[1],
        "requestId": request_id,
        "deviceIds": [{"id": iccid, "kind": "Iccid"}],
        "deviceResponse": {"suspendResponse": {"deviceIds": [{"id": iccid, "kind": "iccid"}], "state": "suspend"}},
        "status": "Success",
        "callbackCount": 1,
        "maxCallbackThreshold": 4,
    }


async def _burst(
    url: str, sent: list[tuple[str, str]], concurrency: int, credentials: tuple[str, str]
) -> dict[str, int]:
    """Every callback POSTed by ``concurrency`` senders, each on its own connection; answers counted by result.

    The senders use aiohttp, as the simulator does: this side plays the carrier, and on a two-core machine
    its CPU is taken from the receiver being measured (httpx cost ~2 ms per callback here, docs/benchmarks.md).
    """
    results: dict[str, int] = {}
    pending = iter(sent)

    async def sender() -> None:
        timeout = aiohttp.ClientTimeout(total=60)
        async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=1)) as session:
            for request_id, iccid in pending:  # one shared iterator: each callback is sent once
                async with session.post(url, json=_body(request_id, iccid, credentials)) as r:
                    answer = await r.json() if r.status == 200 else {}
                key = answer.get("result", str(r.status)) if r.status == 200 else str(r.status)
                results[key] = results.get(key, 0) + 1

    await asyncio.gather(*(sender() for _ in range(concurrency)))
    return results


def _processed(db_url: str, bulk_id: int) -> int:
    rt = build_runtime(Settings(database_url=db_url), migrate=False)
    try:
        with rt.session_factory() as session:
            return int(
                session.execute(
                    select(func.count()).where(
                        M2MDeviceChange.bulk_change_id == bulk_id,
                        M2MDeviceChange.status == ChangeStatus.PROCESSED.value,
                    )
                ).scalar_one()
            )
    finally:
        rt.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--callbacks", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=16, help="callbacks in flight (the simulator sends 16)")
    parser.add_argument("--database-url", default=None, help="default: a fresh SQLite file")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--intake-only", action="store_true", help="the receiver stores and answers, applies nothing")
    args = parser.parse_args()
    configure_logging("WARNING")
    with ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
        db_url = fresh_database(args.database_url, Path(tmp), stack)
        provider_id, credentials, bulk_id, sent = _awaiting_changes(db_url, args.callbacks, random.Random(7))
        port = free_port()
        receiver = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("_receiver.py")), db_url, str(port)]
            + (["intake-only"] if args.intake_only else []),
            stdout=subprocess.DEVNULL,
            stderr=None if os.environ.get("BENCH_RECEIVER_STDERR") else subprocess.DEVNULL,
        )
        try:
            wait_http(f"http://127.0.0.1:{port}/docs")
            cpu0, sender0 = _cpu_s(receiver.pid), time.process_time()
            started = time.monotonic()
            results = asyncio.run(
                _burst(
                    f"http://127.0.0.1:{port}/callbacks/thingspace/{provider_id}", sent, args.concurrency, credentials
                )
            )
            acknowledged = time.monotonic() - started
            sender_cpu = time.process_time() - sender0
            limit_s = 0 if args.intake_only else 600
            while (done := _processed(db_url, bulk_id)) < len(sent) and time.monotonic() - started < limit_s:
                time.sleep(0.1)
            applied = time.monotonic() - started
            cpu = _cpu_s(receiver.pid) - cpu0
        finally:
            receiver.terminate()
            receiver.wait(30)
    summary = {
        "callbacks": len(sent),
        "concurrency": args.concurrency,
        "intake_only": args.intake_only,
        "results": results,
        "acknowledged_s": round(acknowledged, 3),
        "acknowledged_per_s": round(len(sent) / acknowledged, 1),
        "all_applied_s": round(applied, 3),
        "changes_processed": done,
        "applied_per_s": round(done / applied, 1),
        "receiver_cpu_ms_per_callback": round(1000 * cpu / max(1, len(sent)), 3),
        # The sending side (this process, aiohttp) is not ours to tune, but on a 2-core machine it competes
        # with the receiver for CPU: shown so a slow figure can be attributed.
        "sender_cpu_ms_per_callback": round(1000 * sender_cpu / max(1, len(sent)), 3),
    }
    if not args.json:
        print(json.dumps(summary, indent=2), file=sys.stderr)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
