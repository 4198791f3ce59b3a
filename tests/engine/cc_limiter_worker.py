"""One worker process of the in-flight limiter test: reads devices from a Control Center account through the
shared database limiter, and prints what happened as one JSON line.

    python cc_limiter_worker.py DB_URL BASE_URL SCOPE TPS IN_FLIGHT(0|1) ICCID...
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sys

from bulkchange.carrier.controlcenter import ControlCenterClient, ControlCenterConnection
from bulkchange.carrier.controlcenter.adapter import ControlCenterCarrier, controlcenter_account
from bulkchange.carrier.errors import CarrierError, RateLimited
from bulkchange.engine.ratelimit import DbRateLimiter
from bulkchange.store.db import make_engine, make_session_factory


async def main(
    db_url: str, base_url: str, scope: str, tps: float, in_flight: bool, iccids: list[str]
) -> dict[str, int]:
    engine = make_engine(db_url)
    account = controlcenter_account(
        provider_id=1, credential_id=1, base_url=base_url, username="sim-user", api_key="sim-api-key", tps=tps
    )
    rules = ControlCenterCarrier().rate_rules(account, "")  # every call spaced by 1/TPS, one in flight
    if not in_flight:
        rules = dataclasses.replace(rules, max_in_flight=None)
    limiter = DbRateLimiter.for_account(make_session_factory(engine), scope=scope, rules=rules, lease_s=30.0)
    conn = ControlCenterConnection(base_url=base_url, username="sim-user", api_key="sim-api-key")
    done = {"ok": 0, "rate_limited": 0, "other": 0}
    async with ControlCenterClient(conn, limiter=limiter, max_attempts=1, timeout=10.0) as client:
        for iccid in iccids:
            try:
                await client.get_device(iccid)
                done["ok"] += 1
            except RateLimited:
                done["rate_limited"] += 1
            except CarrierError:
                done["other"] += 1
    engine.dispose()
    return done


if __name__ == "__main__":
    db, url, scope, tps, flag, *devices = sys.argv[1:]
    print(json.dumps(asyncio.run(main(db, url, scope, float(tps), flag == "1", devices))))
