"""The ``bulkchange`` command line (Typer + Rich)."""

import json
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from bulkchange.cli import aws_cmd, billing_cmd, bulk_cmd, credentials_cmd, serve_cmd, simulator_cmd
from bulkchange.cli import integrations_cmd as integrations_cli
from bulkchange.cli.errors import OneLineErrors
from bulkchange.domain.carriers import POD19_BASE_URL, CarrierName

# Only the command that runs imports the engine, the database and the carriers it needs (each in its
# function): `bulkchange --help` and a light command start without them (tests/cli/test_startup.py).
if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from bulkchange.engine.submit import SubmissionRefused
    from bulkchange.runtime import Runtime

app = typer.Typer(
    help="Device bulk status changes against Verizon ThingSpace and Cisco Control Center (AT&T POD 19).",
    no_args_is_help=True,
    cls=OneLineErrors,  # configuration errors as one line, never a traceback with the values (cli.errors)
    pretty_exceptions_show_locals=False,  # a frame's locals may hold a secret
)
db_app = typer.Typer(help="Database schema (Alembic migrations).", no_args_is_help=True)
providers_app = typer.Typer(
    help="Service providers and their carrier accounts (ThingSpace, Control Center).", no_args_is_help=True
)
app.add_typer(db_app, name="db")
app.add_typer(providers_app, name="providers")
simulator_cmd.register(app)
serve_cmd.register(app)
integrations_cli.register(app)  # billing, rate-plans, webhooks
credentials_cmd.register(app)  # credentials, apikeys
aws_cmd.register(app)  # aws check
billing_cmd.register(app)  # rerun-billing
bulk_cmd.register(app)  # list, status, cancel, pause, resume, export

console = Console()
err = Console(stderr=True, soft_wrap=True)  # a message is one line, however narrow the terminal


# Commands that read rows and print them, and log nothing: setting up logging would import structlog (and
# with it rich's pretty-printer and traceback modules) for no line. tests/cli/test_startup.py checks that
# each of them ends without structlog imported at all, so nothing one runs can log unconfigured.
_LOG_NOTHING = frozenset({"status", "list", "export"})


@app.callback()
def _configure(
    ctx: typer.Context,
    log_level: Annotated[str | None, typer.Option(help="DEBUG, INFO, WARNING … (default BULKCHANGE_LOG_LEVEL)")] = None,
) -> None:
    """Device bulk status changes against Verizon ThingSpace and Cisco Control Center (AT&T POD 19)."""
    import os

    if "--help" in sys.argv[1:]:
        return  # only help is printed: no logging to set up (structlog is a tenth of a second to import)
    if ctx.invoked_subcommand in _LOG_NOTHING:
        return
    from bulkchange.logging_setup import configure_logging

    chosen = log_level or os.environ.get("BULKCHANGE_LOG_LEVEL") or ("WARNING" if "demo" in sys.argv[1:2] else "INFO")
    configure_logging(chosen)


def _runtime() -> "Runtime":
    """The configured database, which must exist at the schema head (``bulkchange db upgrade`` makes it so)."""
    from bulkchange.runtime import command_runtime
    from bulkchange.settings import Settings

    return command_runtime(Settings())


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply every migration to BULKCHANGE_DATABASE_URL."""
    from bulkchange.database import credential_resolver
    from bulkchange.settings import Settings
    from bulkchange.store.migrate import upgrade
    from bulkchange.store.schema import describe_url

    settings = Settings()
    url = credential_resolver(settings).resolve(settings.database_url)
    upgrade(url)
    console.print(f"database at head: {describe_url(url)}")


@db_app.command("sql")
def db_sql(dialect: Annotated[str, typer.Option(help="mssql, postgresql or sqlite")] = "postgresql") -> None:
    """Print the full DDL offline, for review (no connection made)."""
    if dialect not in ("mssql", "postgresql", "sqlite"):
        raise typer.BadParameter("dialect must be mssql, postgresql or sqlite")
    from bulkchange.store.migrate import render_sql

    sys.stdout.write(render_sql(dialect))  # type: ignore[arg-type]


@providers_app.command("add")
def providers_add(
    name: Annotated[str, typer.Option()],
    carrier: Annotated[
        str, typer.Option(help="thingspace (Verizon) or controlcenter (Cisco Control Center, AT&T POD 19)")
    ] = "thingspace",
    base_url: Annotated[
        str | None,
        typer.Option(help=f"the carrier's REST root (Control Center with --pod19: default {POD19_BASE_URL})"),
    ] = None,
    client_id: Annotated[str | None, typer.Option(help="ThingSpace")] = None,
    client_secret: Annotated[str | None, typer.Option(help="ThingSpace; value, reference or -")] = None,
    username: Annotated[str | None, typer.Option()] = None,
    password: Annotated[str | None, typer.Option(help="ThingSpace; value, reference or -")] = None,
    account: Annotated[str | None, typer.Option(help="ThingSpace account number")] = None,
    token_url: Annotated[str | None, typer.Option(help="ThingSpace")] = None,
    login_url: Annotated[str | None, typer.Option(help="ThingSpace")] = None,
    register_callback: Annotated[
        bool,
        typer.Option(
            help="only marks the provider as one that receives callbacks; the listener is registered with "
            "ThingSpace by `providers register-callback ID --url …`"
        ),
    ] = False,
    api_key: Annotated[str | None, typer.Option(help="Control Center API key; value, reference or -")] = None,
    tps: Annotated[float, typer.Option(help="Control Center: the account's calls per second (contract)")] = 1.0,
    burst: Annotated[
        int,
        typer.Option(
            help="Control Center: calls the account admits back to back (contract; 1 spaces every call by 1/TPS)"
        ),
    ] = 1,
    pod19: Annotated[
        bool | None,
        typer.Option(
            "--pod19/--no-pod19",
            help="Control Center: verify every change against the audit trail (default: on for POD 19's host)",
        ),
    ] = None,
    rate_plan_pre_step: Annotated[
        bool, typer.Option(help="Control Center: move a line to its cheapest covering rate plan before deactivating")
    ] = False,
    tenant: Annotated[int, typer.Option("--tenant", min=1, help="the tenant the provider belongs to")] = 1,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Add a service provider of a tenant and its carrier account; prints its id."""
    from bulkchange.providers import add_controlcenter_provider, add_provider

    try:
        chosen = CarrierName.parse(carrier)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--carrier") from None
    client_secret, password, api_key = (
        credentials_cmd.stdin_secret(client_secret),
        credentials_cmd.stdin_secret(password),
        credentials_cmd.stdin_secret(api_key),
    )
    if chosen is CarrierName.CONTROLCENTER:
        if pod19 and base_url is None:
            base_url = POD19_BASE_URL
        given = {"--base-url": base_url, "--username": username, "--api-key": api_key}
        add: Callable[[Session], int] = partial(
            add_controlcenter_provider,
            name=name,
            base_url=base_url or "",
            username=username or "",
            api_key=api_key or "",
            tps=tps,
            burst=burst,
            pod19=pod19,
            rate_plan_pre_step=rate_plan_pre_step,
            tenant_id=tenant,
        )
    else:
        given = {"--base-url": base_url, "--client-id": client_id, "--client-secret": client_secret}
        given |= {"--username": username, "--password": password, "--account": account}
        add = partial(
            add_provider,
            name=name,
            base_url=base_url or "",
            client_id=client_id or "",
            client_secret=client_secret or "",
            username=username or "",
            password=password or "",
            account=account or "",
            token_url=token_url,
            login_url=login_url,
            register_callback=register_callback,
            tenant_id=tenant,
        )
    missing = [option for option, value in given.items() if not value]
    if missing:
        raise typer.BadParameter(f"{chosen.display_name} needs {', '.join(missing)}")
    provider_id = _add_provider(add)
    if chosen is CarrierName.THINGSPACE and not as_json:
        err.print(
            f"callback credentials generated; see them with `bulkchange providers callback {provider_id}` and "
            f"register the listener with `bulkchange providers register-callback {provider_id} --public-url …`"
        )
    typer.echo(json.dumps({"service_provider_id": provider_id}) if as_json else str(provider_id))


def _add_provider(add: Callable[["Session"], int]) -> int:
    rt = _runtime()
    try:
        with rt.session_factory() as session:
            return add(session)
    except ValueError as exc:
        err.print(f"[red]refused:[/red] {exc}")
        raise typer.Exit(2) from exc
    finally:
        rt.close()


@providers_app.command("list")
def providers_list(
    tenant: Annotated[int | None, typer.Option("--tenant", min=1, help="only this tenant's")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """List service providers: tenant, carrier, account, whether logins are paused, the callback listener."""
    from bulkchange.providers import provider_rows

    rt = _runtime()
    with rt.session_factory() as session:
        rows = provider_rows(session, tenant)
    rt.close()
    if as_json:
        typer.echo(json.dumps([{**p.__dict__, "carrier": p.carrier.value} for p in rows]))
        return
    table = Table("id", "tenant", "name", "carrier", "account", "base URL", "login", "callbacks", "TPS", "POD 19")
    for p in rows:
        table.add_row(
            str(p.id),
            str(p.tenant_id),
            escape(p.name),
            p.carrier.value,
            escape(p.account or ""),
            escape(p.base_url or ""),
            f"[red]paused {escape(p.login_paused)}[/red] (`providers unlock {p.id}`)" if p.login_paused else "ok",
            _callbacks_cell(p.carrier, p.callbacks, p.callback_url),
            _tps_cell(p.tps, p.burst),
            "" if p.pod19 is None else ("yes" if p.pod19 else "no"),
        )
    console.print(table)


def _tps_cell(tps: float | None, burst: int | None) -> str:
    """``5`` (calls spaced by 1/TPS) or ``5, burst 5``; empty for a carrier without a TPS."""
    if tps is None:
        return ""
    return f"{tps:g}" if not burst or burst == 1 else f"{tps:g}, burst {burst}"


def _callbacks_cell(carrier: CarrierName, wanted: bool, url: str | None) -> str:
    if carrier is CarrierName.CONTROLCENTER:
        return "read back"  # Control Center never calls back: every change is verified by reading it
    if url:
        return f"registered: {escape(url)}"
    return "wanted, not registered" if wanted else "no"


@providers_app.command("callback")
def providers_callback(provider_id: int, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Show what to register as the provider's CarrierService listener: the URL path and the username and
    password ThingSpace must echo (the password is printed: run it where nobody reads over your shoulder)."""
    from bulkchange.providers import READ_BACK_NOTE, NoCallbacks, callback_listener, carrier_of

    rt = _runtime()
    try:
        with rt.session_factory() as session:
            if carrier_of(session, provider_id) is CarrierName.CONTROLCENTER:
                raise NoCallbacks(f"service provider {provider_id}: {READ_BACK_NOTE}")
            listener = callback_listener(session, provider_id)
    except NoCallbacks as exc:
        err.print(str(exc))
        raise typer.Exit(2) from None
    except KeyError as exc:
        err.print(f"[red]{exc.args[0]}[/red]")
        raise typer.Exit(2) from None
    finally:
        rt.close()
    shown = {
        "service_provider_id": provider_id,
        "account": listener.account,
        "path": listener.path,
        "username": listener.username,
        "password": listener.password,
        "registered_url": listener.registered_url,
    }
    if as_json:
        typer.echo(json.dumps(shown))
        return
    for name, value in shown.items():
        typer.echo(f"{name}: {value if value is not None else ''}")
    if not listener.username:
        err.print(f"no callback credentials: `bulkchange credentials set --provider {provider_id} --rotate-callback`")


def _carrier_call(provider_id: int, call: Callable[["Runtime"], Any]) -> Any:
    """Run one operator call to the provider's carrier; a refusal is one line and exit 2."""
    from bulkchange.carrier.errors import CarrierError
    from bulkchange.domain.errors import BulkFailure

    rt = _runtime()
    try:
        return call(rt)
    except KeyError as exc:
        err.print(f"[red]refused:[/red] {escape(str(exc.args[0]))}")
        raise typer.Exit(2) from None
    except (ValueError, CarrierError, BulkFailure) as exc:  # NoCallbacks is a ValueError
        err.print(f"[red]refused:[/red] {escape(str(exc))}")
        raise typer.Exit(2) from None
    finally:
        rt.close()


@providers_app.command("register-callback")
def providers_register_callback(
    provider_id: int,
    public_url: Annotated[
        str,
        typer.Option(
            "--url",
            "--public-url",
            help="where ThingSpace reaches `bulkchange serve` (https://host[:port]), without the path",
        ),
    ],
) -> None:
    """Register the provider's CarrierService listener with ThingSpace: our URL and the provider's callback
    credentials (which ThingSpace then echoes in every callback). Run it again after a rotation.
    Control Center providers are read back and have nothing to register."""
    import asyncio

    from bulkchange.providers import register_callback_listener

    url = _carrier_call(
        provider_id, lambda rt: asyncio.run(register_callback_listener(rt.ctx, provider_id, public_url))
    )
    console.print(f"CarrierService listener of service provider {provider_id} registered: {url}")


@providers_app.command("callbacks")
def providers_callbacks(provider_id: int, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """List the callback listeners the carrier has registered for the provider's account (asked now)."""
    import asyncio

    from bulkchange.providers import callback_registrations

    found = _carrier_call(provider_id, lambda rt: asyncio.run(callback_registrations(rt.ctx, provider_id)))
    if as_json:
        typer.echo(json.dumps([{"service": r.service, "url": r.url, "username": r.username} for r in found]))
        return
    if not found:
        console.print(
            f"no callback listener registered for service provider {provider_id}: every change waits for the "
            f"deferred check (`bulkchange providers register-callback {provider_id} --url …`)"
        )
        return
    table = Table("service", "URL", "username")
    for r in found:
        table.add_row(r.service, r.url or "", r.username or "")
    console.print(table)


@providers_app.command("unregister-callback")
def providers_unregister_callback(provider_id: int) -> None:
    """Delete the provider's CarrierService listener at ThingSpace: its changes then wait for the deferred
    check (tens of minutes) instead of being settled by callbacks."""
    import asyncio

    from bulkchange.providers import delete_callback_listener

    _carrier_call(provider_id, lambda rt: asyncio.run(delete_callback_listener(rt.ctx, provider_id)))
    console.print(
        f"CarrierService listener of service provider {provider_id} deleted: every change now waits for the "
        "deferred check"
    )


@providers_app.command("unlock")
def providers_unlock(provider_id: int) -> None:
    """Allow ThingSpace logins again after a refused login (fix the credentials first)."""
    from bulkchange.providers import unlock_provider

    rt = _runtime()
    try:
        with rt.session_factory() as session:
            cleared = unlock_provider(session, provider_id)
    except KeyError as exc:
        err.print(f"[red]refused:[/red] {exc.args[0]}")
        raise typer.Exit(2) from None
    finally:
        rt.close()
    console.print("login guard cleared" if cleared else "no login failure was recorded")


@app.command()
def submit(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True)],
    status: Annotated[str, typer.Option(help="target status for every row (a row's Status column overrides)")],
    service_provider: Annotated[int, typer.Option("--service-provider")],
    ignore_current_status: Annotated[bool, typer.Option("--ignore-current-status")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Validate every row of FILE (CSV, JSON or xlsx); create the bulk change only if all are valid.

    Row numbers in the report are the spreadsheet's line numbers (the header is line 1).
    """
    from bulkchange.engine.outbox import WAKEUP_PENDING_WARNING, wakeup_pending
    from bulkchange.engine.submit import SubmissionRefused, create_bulk_change, input_carrier, open_input
    from bulkchange.input import InputRefused
    from bulkchange.runtime import command_runtime
    from bulkchange.settings import Settings

    settings = Settings()
    rt = command_runtime(settings)
    with rt.session_factory() as session:
        carrier = input_carrier(session, service_provider)
    try:
        table = open_input(file, settings=settings, filename=file.name, carrier=carrier)
    except InputRefused as exc:
        rt.close()
        err.print(f"[red]cannot read {escape(str(file))}:[/red] {escape(str(exc))}")
        raise typer.Exit(2) from exc
    try:
        with table, rt.session_factory() as session:
            bulk_id = create_bulk_change(
                session,
                rt.transport,
                table,
                status=status,
                service_provider_id=service_provider,
                ignore_current_status=ignore_current_status,
            )
    except SubmissionRefused as exc:
        _print_refusal(exc, as_json=as_json)
        raise typer.Exit(1) from exc
    except InputRefused as exc:  # met while reading the rows: nothing was created
        err.print(f"[red]cannot read {escape(str(file))}:[/red] {escape(str(exc))}")
        raise typer.Exit(2) from exc
    else:
        with rt.session_factory() as session:
            pending = wakeup_pending(session, bulk_id)
    finally:
        rt.close()
    if pending:  # created all the same; the running workers send the wake-up once the queue answers
        err.print(f"[yellow]warning:[/yellow] {WAKEUP_PENDING_WARNING}")
    result: dict[str, Any] = {"bulk_change_id": bulk_id, "devices": table.rows_read}
    if pending:
        result["warnings"] = [WAKEUP_PENDING_WARNING]
    typer.echo(json.dumps(result) if as_json else str(bulk_id))


@app.command()
def template(
    status: Annotated[str, typer.Option(help="the target status the file is for (e.g. active, deactive)")],
    carrier: Annotated[
        str, typer.Option(help=f"the carrier whose columns to use: {', '.join(sorted(CarrierName))}")
    ] = CarrierName.THINGSPACE.value,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="write here instead of stdout")] = None,
) -> None:
    """Print a CSV with exactly the columns STATUS needs and one example row: fill it in, then submit it."""
    from bulkchange.domain.statuses import TargetStatus
    from bulkchange.engine import row_rules

    try:
        rules = row_rules.rules_for(carrier)
    except ValueError as exc:
        err.print(f"[red]{escape(str(exc))}[/red]")
        raise typer.Exit(2) from exc
    try:
        target = TargetStatus.parse(status)
    except ValueError as exc:
        err.print(f"[red]{escape(str(exc))}[/red]")
        raise typer.Exit(2) from exc
    text = rules.template(target)
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text, encoding="utf-8", newline="")
        console.print(f"wrote {output}: the columns {target.value} needs and one example row")


def _print_refusal(exc: "SubmissionRefused", *, as_json: bool) -> None:
    """The per-row report: the problems kept in full, and how many more there were."""
    report = exc.report
    if as_json:
        problems = [p.__dict__ for p in report.problems]
        typer.echo(
            json.dumps({"refused": True, "rows": report.rows, "problems": problems, "problems_omitted": report.omitted})
        )
        return
    table = Table("line", "ICCID", "field", "problem", title=f"refused: nothing was created ({escape(str(exc))})")
    for p in report.problems:
        table.add_row(str(p.row), escape(p.iccid or ""), escape(p.field), escape(p.message))
    if report.omitted:
        table.add_row("…", "", "", f"{report.omitted:,} more problem(s) not shown")
    err.print(table)


@app.command()
def worker(
    until_idle: Annotated[bool, typer.Option("--until-idle", help="return once no message is left")] = False,
    queue_url: Annotated[
        str | None,
        typer.Option("--queue-url", help="an SQS queue to long-poll (default DEVICE_BULK_CHANGE_QUEUE_URL)"),
    ] = None,
    migrate: Annotated[bool, typer.Option("--migrate", help="upgrade the database schema first")] = False,
) -> None:
    """Process messages, with a progress bar per bulk change."""
    import asyncio

    from rich.progress import BarColumn, Progress, TaskID, TextColumn

    from bulkchange.engine.worker import run_worker
    from bulkchange.heap import settle_startup_objects
    from bulkchange.runtime import command_runtime
    from bulkchange.services.bulk_changes import recent_progress
    from bulkchange.settings import Settings

    rt = command_runtime(Settings(queue_url=queue_url) if queue_url else Settings(), migrate=migrate)
    settle_startup_objects()
    bars: dict[int, TaskID] = {}
    with Progress(
        TextColumn("bulk change {task.fields[bulk]}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        console=console,
        transient=False,
        # Redrawn ten times a second only where someone watches: to a file, a pipe or a service's log the bars
        # are written once, at the end, and a thread rendering them meanwhile would only take CPU (and the
        # interpreter's lock) from the work.
        auto_refresh=console.is_terminal,
    ) as progress:

        def refresh(_visible: int) -> None:
            # A snapshot read after each message: on SQLite it must not take the write lock that the
            # receiver's commits of callbacks wait for.
            with rt.reading() as session:
                recent = recent_progress(session)
            for p in recent:
                if p.bulk_change_id not in bars:
                    if p.finished == p.total:
                        continue  # finished before this worker saw it: no bar
                    bars[p.bulk_change_id] = progress.add_task("", total=p.total, bulk=p.bulk_change_id)
                progress.update(bars[p.bulk_change_id], completed=p.finished, total=p.total)

        processed = asyncio.run(run_worker(rt.engine, until_idle=until_idle, on_message=refresh))
        refresh(0)
    rt.close()
    console.print(f"{processed} messages processed")


@app.command()
def demo(
    devices: Annotated[int, typer.Option(min=1)] = 200,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """The main job end to end against local simulators (ThingSpace, then Control Center); exit 0 only if every
    change of both carriers ended as expected."""
    from bulkchange.demo import run_demo
    from bulkchange.heap import collect_older_as_usual

    collect_older_as_usual()  # started: the demo runs for seconds to minutes, at the collector's usual pace
    result, _sim = run_demo(devices, on_progress=lambda msg: None if as_json else console.print(msg))
    if not as_json:
        table = Table(
            "status",
            "devices",
            title=f"bulk change {result.bulk_change_id}: {result.devices} devices in {result.wall_s:.1f}s",
        )
        for s, n in sorted(result.by_status.items()):
            table.add_row(s, str(n))
        console.print(table)
        for line in (result.errors + result.mismatches)[:20]:
            console.print(f"[red]{line}[/red]")
        cc = result.controlcenter
        if cc is not None:
            title = f"Control Center bulk change {cc.bulk_change_id}: {cc.devices} devices"
            cc_table = Table("status", "devices", title=title)
            for s, n in sorted(cc.by_status.items()):
                cc_table.add_row(s, str(n))
            console.print(cc_table)
            for line in (cc.errors + cc.mismatches)[:20]:
                console.print(f"[red]{line}[/red]")
        console.print(
            "[green]every change of both carriers reached its expected terminal state; the database agrees with "
            "both simulators[/green]"
            if result.ok
            else "[red]the demo did not end as expected[/red]"
        )
    print(json.dumps(result.as_json()) if as_json else "", end="\n" if as_json else "")
    raise typer.Exit(0 if result.ok else 1)


if __name__ == "__main__":  # pragma: no cover
    app()
