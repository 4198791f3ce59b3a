"""``bulkchange serve``: the REST API, the ThingSpace callback receiver, the dashboard and /metrics in one
FastAPI application; ``--with-worker`` also runs the worker loop inside it.

It refuses to start (one line on stderr, exit 2) when a service provider's callback credentials are
missing or half-configured, or a retired callback setting is still set; ``--insecure-callbacks`` admits
callbacks of providers that have no credentials, and only while serving on a loopback address.
"""

import os
from typing import Annotated

import typer
from rich.console import Console

err = Console(stderr=True)


def register(app: typer.Typer) -> None:
    """Add the ``serve`` command to the main CLI ``app``."""
    app.command("serve")(serve)


def serve(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to bind.")] = 8000,
    with_worker: Annotated[
        bool, typer.Option("--with-worker", help="Also process bulk changes in this process.")
    ] = False,
    forwarded_allow_ips: Annotated[
        str | None,
        typer.Option(help="Proxies trusted for X-Forwarded-For (the callback source allow-list sees the client)."),
    ] = None,
    insecure_callbacks: Annotated[
        bool,
        typer.Option(
            "--insecure-callbacks",
            help="Development on loopback only: admit callbacks of providers that have no callback credentials.",
        ),
    ] = False,
    migrate: Annotated[bool, typer.Option("--migrate", help="upgrade the database schema first")] = False,
) -> None:
    """Serve the API (/api/v1, /openapi.json), callbacks (/callbacks/thingspace/{provider}), the dashboard
    (/ui/), /metrics, /healthz and /readyz."""
    import uvicorn

    from bulkchange.api.access_log import uvicorn_log_config
    from bulkchange.api.app import create_app
    from bulkchange.engine.callbacks.gate import CallbackConfigError
    from bulkchange.heap import settle_startup_objects
    from bulkchange.metrics import observe_carrier_calls
    from bulkchange.runtime import command_runtime
    from bulkchange.security.transport import is_loopback
    from bulkchange.settings import Settings

    if insecure_callbacks and not is_loopback(host):
        err.print(
            f"[red]refused:[/red] --insecure-callbacks is for loopback development only; --host {host} is not",
            soft_wrap=True,
        )
        raise typer.Exit(2)
    settings = Settings()
    rt = command_runtime(settings, migrate=migrate, services_hook=observe_carrier_calls)
    try:
        app = create_app(rt, with_worker=with_worker, insecure_callbacks=insecure_callbacks)
        app.state.callback_receiver.check()  # also run at start-up; here it refuses with one readable line
    except CallbackConfigError as exc:
        rt.close()
        err.print(f"[red]refused to start:[/red] {exc}", soft_wrap=True)
        raise typer.Exit(2) from None
    settle_startup_objects()  # the runtime and the application live as long as the process
    level = (os.environ.get("BULKCHANGE_LOG_LEVEL") or settings.log_level or "INFO").lower()
    try:
        uvicorn.run(
            app,
            host=host,
            port=port,
            log_config=uvicorn_log_config(),
            log_level=level if level in {"critical", "error", "warning", "info", "debug", "trace"} else "info",
            proxy_headers=forwarded_allow_ips is not None,
            forwarded_allow_ips=forwarded_allow_ips,
        )
    finally:
        rt.close()
