"""``bulkchange simulator``: run the ThingSpace simulator in the foreground.

Lets people (and out-of-process benchmarks) point a real client at a local,
fault-injectable ThingSpace without writing Python. Serves until Ctrl-C.
"""

from __future__ import annotations

from typing import Annotated

import typer

from bulkchange.simulator import FaultConfig, Simulator, SimulatorConfig


def register(app: typer.Typer) -> None:
    """Add the ``simulator`` command to the main CLI ``app``."""
    app.command("simulator")(simulator)


def simulator(  # nosec B107 # the stand-in's documented test credentials, not real ones
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to bind (0 = any free port).")] = 8765,
    client_id: Annotated[str, typer.Option(help="OAuth client id (Basic user).")] = "sim-client",
    client_secret: Annotated[str, typer.Option(help="OAuth client secret.")] = "sim-secret",  # noqa: S107
    username: Annotated[str, typer.Option(help="M2M session username.")] = "sim-user",
    password: Annotated[str, typer.Option(help="M2M session password.")] = "sim-pass",  # noqa: S107
    account: Annotated[str, typer.Option(help="Default account name.")] = "0000123456-00001",
    preload: Annotated[int, typer.Option(help="Create N preactive devices at start.")] = 0,
    preload_state: Annotated[str, typer.Option(help="State of preloaded devices.")] = "preactive",
    activation_delay: Annotated[float, typer.Option(help="Seconds until an activation completes.")] = 2.0,
    latency_ms: Annotated[float, typer.Option(help="Milliseconds added to every M2M answer.")] = 0.0,
    action_delay: Annotated[float, typer.Option(help="Seconds until other actions complete.")] = 0.0,
    activate_rpm: Annotated[int, typer.Option(help="Activate requests allowed per minute.")] = 100,
    daily_actions_per_line: Annotated[int, typer.Option(help="Provisioning actions per line per 24 h.")] = 5,
    callback_retry_interval: Annotated[float, typer.Option(help="Seconds between callback retries.")] = 300.0,
    callback_concurrency: Annotated[int, typer.Option(help="Callbacks POSTed at once.")] = 16,
    enforce_callback_ports: Annotated[bool, typer.Option(help="Only allow ThingSpace callback ports.")] = False,
    seed: Annotated[int | None, typer.Option(help="Seed for deterministic faults.")] = None,
    p_server_error: Annotated[float, typer.Option(help="Probability of a 503 before doing anything.")] = 0.0,
    p_rate_limited: Annotated[float, typer.Option(help="Probability of a 429 before doing anything.")] = 0.0,
    retry_after: Annotated[int, typer.Option(help="Retry-After seconds for injected 429s.")] = 1,
    p_slow: Annotated[float, typer.Option(help="Probability of doing the work, then answering late.")] = 0.0,
    slow_s: Annotated[float, typer.Option(help="Delay of a slow response, seconds.")] = 30.0,
    p_malformed: Annotated[float, typer.Option(help="Probability of doing the work, then a broken body.")] = 0.0,
    session_expire_every: Annotated[int, typer.Option(help="Invalidate the session every N calls.")] = 0,
    p_callback_lost: Annotated[float, typer.Option(help="Probability a callback is never sent.")] = 0.0,
    p_callback_duplicate: Annotated[float, typer.Option(help="Probability a callback is sent twice.")] = 0.0,
    p_callback_delayed: Annotated[float, typer.Option(help="Probability a callback is held back.")] = 0.0,
    callback_delay_s: Annotated[float, typer.Option(help="Hold-back of delayed callbacks, seconds.")] = 60.0,
    callback_out_of_order: Annotated[bool, typer.Option(help="Shuffle callbacks due together.")] = False,
) -> None:
    """Serve a ThingSpace M2M v1 simulator until interrupted."""
    import socket

    import uvicorn

    faults = FaultConfig(
        seed=seed,
        p_server_error=p_server_error,
        p_rate_limited=p_rate_limited,
        retry_after_s=retry_after,
        p_slow=p_slow,
        slow_s=slow_s,
        p_malformed=p_malformed,
        session_expire_every=session_expire_every,
        p_callback_lost=p_callback_lost,
        p_callback_duplicate=p_callback_duplicate,
        p_callback_delayed=p_callback_delayed,
        callback_delay_s=callback_delay_s,
        callback_out_of_order=callback_out_of_order,
    )
    config = SimulatorConfig(
        client_id=client_id,
        client_secret=client_secret,
        username=username,
        password=password,
        account=account,
        activation_delay_s=activation_delay,
        latency_s=latency_ms / 1000.0,
        action_delay_s=action_delay,
        activate_requests_per_minute=activate_rpm,
        daily_actions_per_line=daily_actions_per_line,
        callback_retry_interval_s=callback_retry_interval,
        callback_concurrency=callback_concurrency,
        enforce_callback_ports=enforce_callback_ports,
        faults=faults,
    )
    sim = Simulator(config)
    if preload:
        sim.preload(preload, preload_state)
        typer.echo(f"preloaded {preload} {preload_state} devices into account {account}")
    # Bind first so the printed URL is right even for --port 0.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    typer.echo(f"ThingSpace simulator listening on http://{host}:{sock.getsockname()[1]} (Ctrl-C to stop)")
    server = uvicorn.Server(uvicorn.Config(sim.app, log_level="warning", access_log=False))
    server.run(sockets=[sock])
