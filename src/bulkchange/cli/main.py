"""The ``bulkchange`` command line (Typer + Rich)."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskID, TextColumn
from rich.table import Table
from sqlalchemy import select

from bulkchange.cli import credentials_cmd, serve_cmd, simulator_cmd
from bulkchange.domain.statuses import BulkStatus, ChangeStatus, TargetStatus
from bulkchange.engine import changes as ch
from bulkchange.engine import row_rules
from bulkchange.engine.submit import SubmissionRefused, create_bulk_change, open_input
from bulkchange.engine.worker import run_worker
from bulkchange.heap import settle_startup_objects
from bulkchange.input import InputRefused
from bulkchange.integrations import cli as integrations_cli
from bulkchange.logging_setup import configure_logging
from bulkchange.providers import add_provider, unlock_provider
from bulkchange.runtime import Runtime, build_runtime
from bulkchange.settings import Settings
from bulkchange.store.migrate import render_sql, upgrade
from bulkchange.store.tables import DeviceBulkChange, M2MDeviceChange, ServiceProvider

app = typer.Typer(help="Device bulk status changes against Verizon ThingSpace.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema (Alembic migrations).", no_args_is_help=True)
providers_app = typer.Typer(help="Service providers and their ThingSpace credentials.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(providers_app, name="providers")
simulator_cmd.register(app)
serve_cmd.register(app)
integrations_cli.register(app)  # billing, rate-plans, webhooks
credentials_cmd.register(app)  # credentials, apikeys

console = Console()
err = Console(stderr=True)


@app.callback()
def _configure(
    log_level: Annotated[str | None, typer.Option(help="DEBUG, INFO, WARNING … (default BULKCHANGE_LOG_LEVEL)")] = None,
) -> None:
    """Device bulk status changes against Verizon ThingSpace."""
    import os

    chosen = log_level or os.environ.get("BULKCHANGE_LOG_LEVEL") or ("WARNING" if "demo" in sys.argv[1:2] else "INFO")
    configure_logging(chosen)


def _runtime() -> Runtime:
    return build_runtime(Settings())


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply every migration to BULKCHANGE_DATABASE_URL."""
    settings = Settings()
    upgrade(settings.database_url)
    console.print(f"database at head: {settings.database_url}")


@db_app.command("sql")
def db_sql(dialect: Annotated[str, typer.Option(help="mssql, postgresql or sqlite")] = "postgresql") -> None:
    """Print the full DDL offline, for review (no connection made)."""
    if dialect not in ("mssql", "postgresql", "sqlite"):
        raise typer.BadParameter("dialect must be mssql, postgresql or sqlite")
    sys.stdout.write(render_sql(dialect))  # type: ignore[arg-type]


@providers_app.command("add")
def providers_add(
    name: Annotated[str, typer.Option()],
    base_url: Annotated[str, typer.Option()],
    client_id: Annotated[str, typer.Option()],
    client_secret: Annotated[str, typer.Option()],
    username: Annotated[str, typer.Option()],
    password: Annotated[str, typer.Option()],
    account: Annotated[str, typer.Option()],
    token_url: Annotated[str | None, typer.Option()] = None,
    login_url: Annotated[str | None, typer.Option()] = None,
    register_callback: Annotated[bool, typer.Option(help="ThingSpace will POST callbacks to us")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Add a service provider and its ThingSpace authentication; prints its id."""
    rt = _runtime()
    with rt.session_factory() as session:
        try:
            provider_id = add_provider(
                session,
                name=name,
                base_url=base_url,
                client_id=client_id,
                client_secret=client_secret,
                username=username,
                password=password,
                account=account,
                token_url=token_url,
                login_url=login_url,
                register_callback=register_callback,
            )
        except ValueError as exc:
            err.print(f"[red]refused:[/red] {exc}")
            raise typer.Exit(2) from exc
    rt.close()
    typer.echo(json.dumps({"service_provider_id": provider_id}) if as_json else str(provider_id))


@providers_app.command("list")
def providers_list() -> None:
    """List service providers."""
    rt = _runtime()
    table = Table("id", "name", "callbacks")
    with rt.session_factory() as session:
        for p in session.execute(select(ServiceProvider).order_by(ServiceProvider.id)).scalars():
            table.add_row(str(p.id), p.name, "yes" if p.register_carrier_service_callback else "no")
    rt.close()
    console.print(table)


@providers_app.command("unlock")
def providers_unlock(provider_id: int) -> None:
    """Allow ThingSpace logins again after a refused login (fix the credentials first)."""
    rt = _runtime()
    with rt.session_factory() as session:
        cleared = unlock_provider(session, provider_id)
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
    settings = Settings()
    try:
        table = open_input(file, settings=settings, filename=file.name)
    except InputRefused as exc:
        err.print(f"[red]cannot read {escape(str(file))}:[/red] {escape(str(exc))}")
        raise typer.Exit(2) from exc
    rt = build_runtime(settings)
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
    finally:
        rt.close()
    typer.echo(json.dumps({"bulk_change_id": bulk_id, "devices": table.rows_read}) if as_json else str(bulk_id))


@app.command()
def template(
    status: Annotated[str, typer.Option(help="the target status the file is for (e.g. active, deactive)")],
    carrier: Annotated[str, typer.Option(help="the carrier whose columns to use")] = row_rules.CARRIER,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="write here instead of stdout")] = None,
) -> None:
    """Print a CSV with exactly the columns STATUS needs and one example row: fill it in, then submit it."""
    if carrier.strip().lower() != row_rules.CARRIER:
        err.print(f"[red]unknown carrier {carrier!r}[/red]; accepted: {row_rules.CARRIER}")
        raise typer.Exit(2)
    try:
        target = TargetStatus.parse(status)
    except ValueError as exc:
        err.print(f"[red]{escape(str(exc))}[/red]")
        raise typer.Exit(2) from exc
    text = row_rules.template(target)
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text, encoding="utf-8", newline="")
        console.print(f"wrote {output}: the columns {target.value} needs and one example row")


def _print_refusal(exc: SubmissionRefused, *, as_json: bool) -> None:
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
) -> None:
    """Process messages, with a progress bar per bulk change."""
    rt = build_runtime(Settings(queue_url=queue_url)) if queue_url else _runtime()
    settle_startup_objects()
    bars: dict[int, TaskID] = {}
    with Progress(
        TextColumn("bulk change {task.fields[bulk]}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        console=console,
        transient=False,
    ) as progress:

        def refresh(_visible: int) -> None:
            with rt.session_factory() as session:
                for bulk in session.execute(
                    select(DeviceBulkChange)
                    .where(DeviceBulkChange.status.in_(["NEW", "PROCESSING", "PROCESSED"]))
                    .order_by(DeviceBulkChange.id.desc())
                    .limit(10)
                ).scalars():
                    counts = ch.counts_by_status(session, bulk.id)
                    total = sum(counts.values())
                    done = sum(n for s, n in counts.items() if s.is_terminal)
                    if bulk.id not in bars:
                        if done == total:
                            continue
                        bars[bulk.id] = progress.add_task("", total=total, bulk=bulk.id)
                    progress.update(bars[bulk.id], completed=done, total=total)

        processed = asyncio.run(run_worker(rt.processor, until_idle=until_idle, on_message=refresh))
        refresh(0)
    rt.close()
    console.print(f"{processed} messages processed")


def _status_payload(rt: Runtime, bulk_id: int) -> dict[str, Any]:
    with rt.session_factory() as session:
        bulk = session.get(DeviceBulkChange, bulk_id)
        if bulk is None:
            raise KeyError(bulk_id)
        counts = ch.counts_by_status(session, bulk_id)
        devices = [
            {
                "id": c.id,
                "iccid": c.iccid,
                "target": c.target_status,
                "status": c.status,
                "msisdn": c.msisdn,
                "ip_address": c.ip_address,
                "details": c.status_details,
                "additional_step_status": c.additional_step_status,
                "additional_step_details": c.additional_step_details,
            }
            for c in session.execute(
                select(M2MDeviceChange).where(M2MDeviceChange.bulk_change_id == bulk_id).order_by(M2MDeviceChange.id)
            ).scalars()
        ]
        return {
            "bulk_change_id": bulk_id,
            "status": bulk.status,
            "has_errors": bulk.has_errors,
            "details": bulk.status_details,
            "by_status": {s.value: n for s, n in counts.items()},
            "devices": devices,
        }


@app.command()
def status(bulk_change_id: int, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Counts by status and a per-device table."""
    rt = _runtime()
    try:
        payload = _status_payload(rt, bulk_change_id)
    except KeyError:
        err.print(f"[red]no bulk change {bulk_change_id}[/red]")
        raise typer.Exit(2) from None
    finally:
        rt.close()
    if as_json:
        typer.echo(json.dumps(payload, default=str, indent=2))
        return
    console.print(f"bulk change {bulk_change_id}: [bold]{payload['status']}[/bold] — {payload['details'] or ''}")
    counts = Table("status", "devices")
    for s, n in sorted(payload["by_status"].items()):
        counts.add_row(s, str(n))
    console.print(counts)
    table = Table()
    for name in ("ICCID", "target", "status", "MSISDN", "IP"):
        table.add_column(name, no_wrap=True)
    table.add_column("details", overflow="fold")
    for d in payload["devices"]:
        color = (
            "green"
            if d["status"] == ChangeStatus.PROCESSED.value
            else "yellow"
            if not ChangeStatus(d["status"]).is_terminal
            else "red"
        )
        table.add_row(
            d["iccid"],
            d["target"],
            f"[{color}]{d['status']}[/{color}]",
            d["msisdn"] or "",
            d["ip_address"] or "",
            "; ".join(x for x in (d["details"], _additional_step(d)) if x),
        )
    console.print(table)


def _additional_step(device: dict[str, Any]) -> str:
    """The additional step (billing, rate plan) of a device row, when it has one."""
    if not device["additional_step_status"]:
        return ""
    return f"additional step {device['additional_step_status']}: {device['additional_step_details'] or ''}".strip()


@app.command()
def resume(bulk_change_id: int) -> None:
    """Resume a bulk change that failed at bulk level (e.g. after fixing credentials)."""
    rt = _runtime()
    with rt.session_factory.begin() as session:
        bulk = session.get(DeviceBulkChange, bulk_change_id)
        if bulk is None:
            err.print(f"[red]no bulk change {bulk_change_id}[/red]")
            raise typer.Exit(2)
        bulk.status = BulkStatus.PROCESSING.value
    rt.processor.wake(bulk_change_id, delay_s=0, force=True)
    rt.processor.refresh_status(bulk_change_id)
    rt.close()
    console.print(f"bulk change {bulk_change_id} resumed; run `bulkchange worker`")


@app.command()
def demo(
    devices: Annotated[int, typer.Option(min=1)] = 200,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """The main job end to end against a local simulator; exit 0 only if every change ended as expected."""
    from bulkchange.demo import run_demo

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
        console.print(
            "[green]every change reached its expected terminal state; database agrees with the carrier[/green]"
            if result.ok
            else "[red]the demo did not end as expected[/red]"
        )
    print(json.dumps(result.as_json()) if as_json else "", end="\n" if as_json else "")
    raise typer.Exit(0 if result.ok else 1)


if __name__ == "__main__":  # pragma: no cover
    app()
