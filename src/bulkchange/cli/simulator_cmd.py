"""``bulkchange simulator``: run a carrier simulator in the foreground.

Lets people (and out-of-process benchmarks) point a real client at a local, fault-injectable carrier
without writing Python: Verizon ThingSpace (the default) or Cisco Control Center / AT&T POD 19
(``--carrier controlcenter``). Serves until Ctrl-C.
"""

import socket
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any

import typer

# The simulators (FastAPI, aiohttp) and uvicorn are imported by the command that serves them, not by every
# `bulkchange` invocation: they were most of the CLI's start-up time.


class Carrier(StrEnum):
    thingspace = "thingspace"
    controlcenter = "controlcenter"


def register(app: typer.Typer) -> None:
    """Add the ``simulator`` command to the main CLI ``app``."""
    app.command("simulator")(simulator)


def simulator(  # nosec B107 # the stand-in's documented test credentials, not real ones
    carrier: Annotated[Carrier, typer.Option(help="Which carrier API to simulate.")] = Carrier.thingspace,
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to bind (0 = any free port).")] = 8765,
    client_id: Annotated[str, typer.Option(help="ThingSpace: OAuth client id (Basic user).")] = "sim-client",
    client_secret: Annotated[str, typer.Option(help="ThingSpace: OAuth client secret.")] = "sim-secret",  # noqa: S107
    username: Annotated[str, typer.Option(help="M2M session username / Control Center user name.")] = "sim-user",
    password: Annotated[str, typer.Option(help="ThingSpace: M2M session password.")] = "sim-pass",  # noqa: S107
    api_key: Annotated[str, typer.Option(help="Control Center: the user's API key.")] = "sim-api-key",
    account: Annotated[str, typer.Option(help="ThingSpace: default account name.")] = "0000123456-00001",
    account_id: Annotated[str, typer.Option(help="Control Center: the user's account id.")] = "100020620",
    tps: Annotated[float, typer.Option(help="Control Center: calls per second per account.")] = 1.0,
    tps_burst: Annotated[float, typer.Option(help="Control Center: calls allowed back to back.")] = 1.0,
    max_in_flight: Annotated[int, typer.Option(help="Control Center: open calls per account.")] = 1,
    preload: Annotated[int, typer.Option(help="Create N devices at start.")] = 0,
    preload_state: Annotated[
        str | None, typer.Option(help="State of preloaded devices (default preactive / INVENTORY).")
    ] = None,
    activation_delay: Annotated[float, typer.Option(help="ThingSpace: seconds until an activation completes.")] = 2.0,
    latency_ms: Annotated[float, typer.Option(help="Milliseconds added to every API answer.")] = 0.0,
    action_delay: Annotated[float, typer.Option(help="ThingSpace: seconds until other actions complete.")] = 0.0,
    activate_rpm: Annotated[int, typer.Option(help="ThingSpace: activate requests allowed per minute.")] = 100,
    daily_actions_per_line: Annotated[int, typer.Option(help="ThingSpace: actions per line per 24 h.")] = 5,
    callback_retry_interval: Annotated[float, typer.Option(help="ThingSpace: seconds between retries.")] = 300.0,
    callback_concurrency: Annotated[int, typer.Option(help="ThingSpace: callbacks POSTed at once.")] = 16,
    enforce_callback_ports: Annotated[bool, typer.Option(help="ThingSpace: only its callback ports.")] = False,
    seed: Annotated[int | None, typer.Option(help="Seed for deterministic faults.")] = None,
    p_server_error: Annotated[float, typer.Option(help="Probability of a 5xx before doing anything.")] = 0.0,
    p_rate_limited: Annotated[float, typer.Option(help="Probability of a 429 before doing anything.")] = 0.0,
    retry_after: Annotated[
        int | None, typer.Option(help="Retry-After seconds of injected 429s (ThingSpace default 1, else none).")
    ] = None,
    p_slow: Annotated[float, typer.Option(help="Probability of doing the work, then answering late.")] = 0.0,
    slow_s: Annotated[float, typer.Option(help="Delay of a slow response, seconds.")] = 30.0,
    p_malformed: Annotated[float, typer.Option(help="Probability of doing the work, then a broken body.")] = 0.0,
    p_not_applied: Annotated[
        float, typer.Option(help="Control Center: probability an edit answers 200 but is not made.")
    ] = 0.0,
    p_missing_iccid: Annotated[
        float, typer.Option(help="Control Center: probability an edit answers 2xx without its iccid.")
    ] = 0.0,
    session_expire_every: Annotated[int, typer.Option(help="ThingSpace: end the session every N calls.")] = 0,
    p_callback_lost: Annotated[float, typer.Option(help="ThingSpace: probability a callback is lost.")] = 0.0,
    p_callback_duplicate: Annotated[float, typer.Option(help="ThingSpace: probability of a callback twice.")] = 0.0,
    p_callback_delayed: Annotated[float, typer.Option(help="ThingSpace: probability a callback is late.")] = 0.0,
    callback_delay_s: Annotated[float, typer.Option(help="ThingSpace: hold-back of late callbacks, s.")] = 60.0,
    callback_out_of_order: Annotated[bool, typer.Option(help="ThingSpace: shuffle callbacks due together.")] = False,
) -> None:
    """Serve a carrier simulator (ThingSpace M2M v1, or Control Center REST v1) until interrupted."""
    options = dict(locals())
    if carrier is Carrier.controlcenter:
        _serve_controlcenter(options)
    else:
        _serve_thingspace(options)


def _bind(host: str, port: int) -> socket.socket:
    """Bind (and listen) first: the printed URL is right even for ``--port 0``, and a connection made as soon
    as it is printed waits in the backlog until the server accepts it instead of being refused."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    return sock


def _run(app: Any, sock: socket.socket) -> None:
    import uvicorn

    from bulkchange.heap import collect_older_as_usual

    collect_older_as_usual()  # started: it serves until interrupted, at the collector's usual pace
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    server.run(sockets=[sock])


def _serve_thingspace(o: dict[str, Any]) -> None:
    from bulkchange.simulator import FaultConfig, Simulator, SimulatorConfig

    faults = FaultConfig(
        seed=o["seed"],
        p_server_error=o["p_server_error"],
        p_rate_limited=o["p_rate_limited"],
        retry_after_s=o["retry_after"] or 1,
        p_slow=o["p_slow"],
        slow_s=o["slow_s"],
        p_malformed=o["p_malformed"],
        session_expire_every=o["session_expire_every"],
        p_callback_lost=o["p_callback_lost"],
        p_callback_duplicate=o["p_callback_duplicate"],
        p_callback_delayed=o["p_callback_delayed"],
        callback_delay_s=o["callback_delay_s"],
        callback_out_of_order=o["callback_out_of_order"],
    )
    config = SimulatorConfig(
        client_id=o["client_id"],
        client_secret=o["client_secret"],
        username=o["username"],
        password=o["password"],
        account=o["account"],
        activation_delay_s=o["activation_delay"],
        latency_s=o["latency_ms"] / 1000.0,
        action_delay_s=o["action_delay"],
        activate_requests_per_minute=o["activate_rpm"],
        daily_actions_per_line=o["daily_actions_per_line"],
        callback_retry_interval_s=o["callback_retry_interval"],
        callback_concurrency=o["callback_concurrency"],
        enforce_callback_ports=o["enforce_callback_ports"],
        faults=faults,
    )
    sim = Simulator(config)
    state = o["preload_state"] or "preactive"
    devices = sim.preload(o["preload"], state) if o["preload"] else []
    sock = _bind(o["host"], o["port"])
    root = f"http://{o['host']}:{sock.getsockname()[1]}"
    # Everything `bulkchange providers add` needs, in its option names, so a first run can be pasted; the
    # "listening on" line comes last, once everything else is said.
    typer.echo("ThingSpace simulator; bulkchange providers add options:")
    typer.echo(f"  --base-url {root}")
    typer.echo(f"  --client-id {config.client_id} --client-secret {config.client_secret}")
    typer.echo(f"  --username {config.username} --password {config.password} --account {config.account}")
    if devices:
        typer.echo(f"{len(devices)} {state} device(s) preloaded (ICCID, IMEI):")
        for d in devices[:20]:
            typer.echo(f"  {d.iccid} {d.imei}")
        if len(devices) > 20:
            typer.echo(f"  … {len(devices) - 20} more")
    typer.echo(f"every device and its state: curl {root}/_sim/devices")
    typer.echo(f"ThingSpace simulator listening on {root} (Ctrl-C to stop)")
    _run(sim.app, sock)


def _serve_controlcenter(o: dict[str, Any]) -> None:
    from bulkchange.simulator.controlcenter import (
        API_ROOT,
        STATUSES,
        ControlCenterConfig,
        ControlCenterFaults,
        ControlCenterSimulator,
    )

    status = (o["preload_state"] or "INVENTORY").upper()
    if status not in STATUSES:
        raise typer.BadParameter(f"--preload-state must be one of {', '.join(STATUSES)}")
    faults = ControlCenterFaults(
        seed=o["seed"],
        p_server_error=o["p_server_error"],
        p_rate_limited=o["p_rate_limited"],
        retry_after_s=o["retry_after"],
        p_slow=o["p_slow"],
        slow_s=o["slow_s"],
        p_malformed=o["p_malformed"],
        p_not_applied=o["p_not_applied"],
        p_missing_iccid=o["p_missing_iccid"],
    )
    config = ControlCenterConfig(
        username=o["username"],
        api_key=o["api_key"],
        account_id=o["account_id"],
        tps=o["tps"],
        tps_burst=o["tps_burst"],
        max_in_flight=o["max_in_flight"],
        latency_s=o["latency_ms"] / 1000.0,
        faults=faults,
    )
    sim = ControlCenterSimulator(config)
    if o["preload"]:
        sim.preload(o["preload"], status)
        typer.echo(f"preloaded {o['preload']} {status} devices into account {config.account_id}")
    sock = _bind(o["host"], o["port"])
    root = f"http://{o['host']}:{sock.getsockname()[1]}"
    since = (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    user = f"{config.username}:{config.api_key}"
    typer.echo(f"Control Center simulator listening on {root} (Ctrl-C to stop)")
    typer.echo(f"  base URL:   {root}{API_ROOT}")
    typer.echo(f"  username:   {config.username}")
    typer.echo(f"  API key:    {config.api_key}")
    typer.echo(f"  account id: {config.account_id}, {config.tps:g} TPS, {config.max_in_flight} call(s) in flight")
    typer.echo(f"  list devices: curl -u {user} '{root}{API_ROOT}/v1/devices?modifiedSince={since}'")
    typer.echo(f"  simulator view (no auth, no rate limit): curl {root}/_sim/devices")
    _run(sim.app, sock)
