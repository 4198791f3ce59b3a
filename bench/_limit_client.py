"""The minimal correct client of ``bench/limit.py``: ``python bench/_limit_client.py SIM_URL PORT DEVICES_JSON``.

Access token, session login, one Add request and one Activate request per 10,000 devices (the carrier's
most per request) of DEVICES_JSON (``[[iccid, imei], ...]``), a CarrierService listener on PORT (registered
beforehand) that only counts the callbacks, and once all have come, one list pass (pages of 2,000) for each
device's MSISDN and IP address.
Prints one JSON object: callbacks counted, devices found with an MSISDN and an IP address.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

ACCOUNT = "0000123456-00001"
MAX_PER_REQUEST = 10_000  # ThingSpace's most devices in one Add or Activate request


async def main(sim_url: str, port: int, devices: list[list[str]]) -> dict[str, Any]:
    wanted = {iccid for iccid, _ in devices}
    seen: set[str] = set()
    done = asyncio.Event()

    async def callback(request: web.Request) -> web.Response:
        body = json.loads(await request.read())
        for device_id in body.get("deviceIds", []):
            if device_id.get("kind", "").lower() == "iccid":
                seen.add(device_id["id"])
        if len(seen) >= len(wanted):
            done.set()
        return web.Response(text="{}", content_type="application/json")

    app = web.Application()
    app.router.add_post("/{tail:.*}", callback)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300)) as http:
        token = await _json(
            http.post(
                f"{sim_url}/api/ts/v1/oauth2/token",
                auth=aiohttp.BasicAuth("sim-client", "sim-secret"),
                data={"grant_type": "client_credentials"},
            )
        )
        bearer = {"Authorization": f"Bearer {token['access_token']}"}
        login = await _json(
            http.post(
                f"{sim_url}/api/m2m/v1/session/login",
                json={"username": "sim-user", "password": "sim-pass"},
                headers=bearer,
            )
        )
        headers = bearer | {"VZ-M2M-Token": login["sessionToken"]}
        m2m = f"{sim_url}/api/m2m/v1"
        ids = [[{"kind": "iccid", "id": iccid}, {"kind": "imei", "id": imei}] for iccid, imei in devices]
        # As few requests as the carrier allows: at most MAX_PER_REQUEST devices each (one of each below 10,000).
        chunks = [ids[i : i + MAX_PER_REQUEST] for i in range(0, len(ids), MAX_PER_REQUEST)]
        for chunk in chunks:
            added = await _json(
                http.post(
                    f"{m2m}/devices/actions/add",
                    json={
                        "accountName": ACCOUNT,
                        "state": "preactive",
                        "devicesToAdd": [{"deviceIds": d} for d in chunk],
                    },
                    headers=headers,
                )
            )
            assert all(a["response"] == "Success" for a in added), "add refused"
        for chunk in chunks:
            await _json(
                http.post(
                    f"{m2m}/devices/actions/activate",
                    json={
                        "accountName": ACCOUNT,
                        "servicePlan": "M2M_4G",
                        "mdnZipCode": "98801",
                        "devices": [{"deviceIds": d} for d in chunk],
                    },
                    headers=headers,
                )
            )
        await asyncio.wait_for(done.wait(), timeout=600)
        lines = await _list_pass(http, m2m, headers, wanted)
    await runner.cleanup()
    return {"callbacks": len(seen & wanted), "with_msisdn_and_ip": len(lines)}


async def _list_pass(
    http: aiohttp.ClientSession, m2m: str, headers: dict[str, str], wanted: set[str]
) -> dict[str, tuple[str, str]]:
    """Every device of the account, page by page: MSISDN and IP of the wanted ones."""
    lines: dict[str, tuple[str, str]] = {}
    largest = 0
    while True:
        page = await _json(
            http.post(
                f"{m2m}/devices/actions/list",
                json={"accountName": ACCOUNT, "largestDeviceIdSeen": largest},
                headers=headers,
            ),
            ok=(200, 202),
        )
        for device in page["devices"]:
            ids = {d["kind"]: d["id"] for d in device["deviceIds"]}
            if ids.get("iccid") in wanted and ids.get("msisdn") and device.get("ipAddress"):
                lines[ids["iccid"]] = (ids["msisdn"], device["ipAddress"])
            for attr in device["extendedAttributes"]:
                if attr["key"] == "DeviceId":
                    largest = max(largest, int(attr["value"]))
        if not page["hasMoreData"]:
            return lines


async def _json(request: Any, ok: tuple[int, ...] = (200,)) -> Any:
    async with request as r:
        if r.status not in ok:
            raise RuntimeError(f"{r.method} {r.url}: {r.status} {await r.text()}")
        return await r.json()


if __name__ == "__main__":
    url, port_text, path = sys.argv[1:4]
    print(json.dumps(asyncio.run(main(url, int(port_text), json.loads(Path(path).read_text())))))
