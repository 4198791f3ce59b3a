"""The commands for bulk changes already created: ``list``, ``status``, ``cancel``, ``pause``, ``resume``,
``export``. What the dashboard can do, from a terminal.

Each reads through ``bulkchange.services`` and acts through ``bulkchange.engine.controls`` (no SQL here). A
command that does not apply to the bulk change as it stands — cancel with nothing left to cancel, resume of a
finished one — says why in one line on stderr and exits 1; an unknown bulk change exits 2.
"""

import getpass
import json
import sys
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from bulkchange.domain.statuses import BulkStatus, ChangeStatus, TargetStatus

# Each command imports what it runs (the database, the engine) in its function: the readers (``list``,
# ``status``, ``export``) open the database alone — no queue, engine, carrier or secret — and ``--help``
# loads none of it (tests/cli/test_startup.py).
if TYPE_CHECKING:
    from bulkchange.database import Database
    from bulkchange.runtime import Runtime
    from bulkchange.services import bulk_changes as svc

console = Console()
err = Console(stderr=True, soft_wrap=True)

#: How a bulk status is shown in a terminal: a colour and always a sign, never the colour alone.
STATUS_STYLE = {
    BulkStatus.PROCESSED.value: ("green", "✓"),
    BulkStatus.PARTIAL.value: ("yellow", "!"),
    BulkStatus.ERROR.value: ("red", "✕"),
    BulkStatus.CANCELLED.value: ("dim", "–"),
    BulkStatus.PAUSED.value: ("yellow", "‖"),
}


def _who() -> str:
    """Who ran the command, for the audit rows."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


def _runtime() -> "Runtime":
    from bulkchange.runtime import command_runtime
    from bulkchange.settings import Settings

    return command_runtime(Settings())


def _database() -> "Database":
    from bulkchange.database import command_database
    from bulkchange.settings import Settings

    return command_database(Settings())


def _refuse(message: str, code: int = 1) -> typer.Exit:
    err.print(f"[red]refused:[/red] {escape(message)}")
    return typer.Exit(code)


def _styled(status: str) -> str:
    colour, sign = STATUS_STYLE.get(status, ("blue", "…"))
    return f"[{colour}]{sign} {status}[/{colour}]"


def list_command(
    status: Annotated[str | None, typer.Option(help="PROCESSED, PARTIAL, ERROR, CANCELLED, PAUSED …")] = None,
    target: Annotated[str | None, typer.Option(help="bulk changes with a change to this target status")] = None,
    service_provider: Annotated[int | None, typer.Option("--service-provider")] = None,
    created_from: Annotated[str | None, typer.Option("--from", help="created on or after (YYYY-MM-DD, UTC)")] = None,
    created_to: Annotated[str | None, typer.Option("--to", help="created on or before (YYYY-MM-DD, UTC)")] = None,
    file: Annotated[str | None, typer.Option(help="part of the uploaded file's name")] = None,
    by: Annotated[str | None, typer.Option(help="part of who created it")] = None,
    limit: Annotated[int, typer.Option(min=1, max=500)] = 50,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Bulk changes, newest first, with their outcome and counts."""
    from bulkchange.services import bulk_changes as svc

    try:
        filters = svc.BulkChangeFilter(
            status=BulkStatus(status.strip().upper()).value if status else None,
            target_status=TargetStatus.parse(target).value if target else None,
            service_provider_id=service_provider,
            created_from=date.fromisoformat(created_from) if created_from else None,
            created_to=date.fromisoformat(created_to) if created_to else None,
            file_name=file,
            created_by=by,
        )
    except ValueError as exc:
        raise _refuse(f"{exc} (statuses: {', '.join(s.value for s in BulkStatus)})", 2) from None
    rt = _database()
    try:
        with rt.reading() as session:
            page = svc.list_bulk_changes(session, filters, limit=limit, offset=0)
    finally:
        rt.close()
    if as_json:
        rows = [_summary_json(b) for b in page.items]
        typer.echo(json.dumps({"total": page.total, "items": rows}, default=str))
        return
    table = Table("id", "status", "errors", "finished", "provider", "created", "by", "file", "details")
    for b in page.items:
        table.add_row(
            str(b.id),
            _styled(b.status),
            "yes" if b.has_errors else "no",
            f"{b.finished}/{b.total}",
            str(b.service_provider_id),
            b.created_date.strftime("%Y-%m-%d %H:%M"),
            escape(b.created_by or ""),
            escape(b.file_name or ""),
            escape(b.details or ""),
        )
    console.print(table)
    console.print(f"{len(page.items)} of {page.total} bulk change(s)")


def _summary_json(b: "svc.BulkChangeSummary") -> dict[str, Any]:
    return {
        "id": b.id,
        "status": b.status,
        "has_errors": b.has_errors,
        "details": b.details,
        "total": b.total,
        "finished": b.finished,
        "counts": b.counts,
        "service_provider_id": b.service_provider_id,
        "created_by": b.created_by,
        "created_date": b.created_date,
        "file_name": b.file_name,
        "paused_by": b.paused_by,
        "paused_at": b.paused_at,
        "next_check_at": b.next_check_at,
    }


def status_command(bulk_change_id: int, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """The bulk change's outcome, counts by status and a per-device table."""
    from bulkchange.services import bulk_changes as svc

    rt = _database()
    try:
        with rt.reading() as session:
            bulk = svc.get_bulk_change(session, bulk_change_id)
            devices = svc.device_results(session, bulk_change_id) if bulk is not None else []
    finally:
        rt.close()
    if bulk is None:
        raise _refuse(f"no bulk change {bulk_change_id}", 2)
    payload = {
        "bulk_change_id": bulk_change_id,
        "status": bulk.status,
        "has_errors": bulk.has_errors,
        "details": bulk.details,
        "paused_by": bulk.paused_by,
        "next_check_at": bulk.next_check_at,
        "by_status": bulk.counts,
        "devices": devices,
    }
    if as_json:
        typer.echo(json.dumps(payload, default=str, indent=2))
        return
    _print_status(bulk, devices)


def _print_status(bulk: "svc.BulkChangeSummary", devices: list[dict[str, Any]]) -> None:
    console.print(f"bulk change {bulk.id}: [bold]{_styled(bulk.status)}[/bold] — {escape(bulk.details or '')}")
    if bulk.paused_at is not None and bulk.status == BulkStatus.PAUSED.value:
        console.print(f"paused by {escape(bulk.paused_by or '?')} at {bulk.paused_at:%Y-%m-%d %H:%M} UTC")
    if bulk.next_check_at is not None:
        awaiting = bulk.counts.get(ChangeStatus.AWAITING_RESULT.value, 0)
        console.print(
            f"{awaiting} change(s) await the carrier's result: next check at {bulk.next_check_at:%Y-%m-%d %H:%M:%S} UTC"
        )
    contradicted = [d for d in devices if d["status"] == ChangeStatus.PROCESSED.value and d["has_errors"]]
    if contradicted:
        console.print(
            f"[red]{len(contradicted)} PROCESSED change(s) were later refused by the carrier[/red] (a callback that "
            "arrived after the change was settled; see their details and logs)"
        )
    counts = Table("status", "devices")
    for s, n in sorted(bulk.counts.items()):
        counts.add_row(s, str(n))
    console.print(counts)
    table = Table()
    for name in ("ICCID", "target", "status", "MSISDN", "IP"):
        table.add_column(name, no_wrap=True)
    table.add_column("details", overflow="fold")
    for d in devices:
        failed = d["has_errors"] or d["additional_step_status"] == "ERROR"
        colour = "red" if failed else "green" if d["status"] == ChangeStatus.PROCESSED.value else "yellow"
        table.add_row(
            d["iccid"],
            d["target"],
            f"[{colour}]{d['status']}[/{colour}]",
            d["msisdn"] or "",
            d["ip_address"] or "",
            escape("; ".join(x for x in (d["details"], _additional_step(d)) if x)),
        )
    console.print(table)


def _additional_step(device: dict[str, Any]) -> str:
    if not device["additional_step_status"]:
        return ""
    return f"additional step {device['additional_step_status']}: {device['additional_step_details'] or ''}".strip()


def cancel_command(bulk_change_id: int, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Cancel every change the carrier has not accepted (READY, a retry waiting in backoff); count the rest."""
    from bulkchange.engine import controls

    rt = _runtime()
    try:
        result = controls.cancel(rt.ctx, bulk_change_id, by=_who())
    except controls.NoSuchBulkChange as exc:
        raise _refuse(str(exc), 2) from None
    finally:
        rt.close()
    if as_json:
        typer.echo(
            json.dumps(
                {"cancelled": len(result.cancelled), "at_carrier": result.at_carrier, "finished": result.finished}
            )
        )
    if not result.cancelled:
        raise _refuse(f"bulk change {bulk_change_id}: nothing to cancel — {result.summary()}")
    if not as_json:
        console.print(f"bulk change {bulk_change_id}: {result.summary()}")


def pause_command(bulk_change_id: int) -> None:
    """Stop workers sending the bulk change's remaining changes; those already at the carrier finish."""
    from bulkchange.engine import controls

    _control(controls.pause, bulk_change_id, f"resume with `bulkchange resume {bulk_change_id}`")


def resume_command(bulk_change_id: int) -> None:
    """Resume a paused bulk change, or one that failed at bulk level (e.g. after fixing credentials)."""
    from bulkchange.engine import controls

    _control(controls.resume, bulk_change_id, "running workers pick it up (`bulkchange worker`)")


def _control(action: Callable[..., str], bulk_change_id: int, hint: str) -> None:
    from bulkchange.engine import controls

    rt = _runtime()
    try:
        done = action(rt.ctx, bulk_change_id, by=_who())
    except controls.NoSuchBulkChange as exc:
        raise _refuse(str(exc), 2) from None
    except controls.NotApplicable as exc:
        raise _refuse(str(exc)) from None
    finally:
        rt.close()
    console.print(f"{done}; {hint}")


def export_command(
    bulk_change_id: int,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="write here instead of stdout")] = None,
) -> None:
    """Every device change's result as CSV (the same file as the dashboard's and the API's export)."""
    from bulkchange.services.exports import export_csv

    rt = _database()
    try:
        chunks = export_csv(rt.session_factory, bulk_change_id)
        if output is None:
            for chunk in chunks:
                sys.stdout.write(chunk)
        else:
            with output.open("w", encoding="utf-8", newline="") as f:
                for chunk in chunks:
                    f.write(chunk)
    except KeyError:
        raise _refuse(f"no bulk change {bulk_change_id}", 2) from None
    finally:
        rt.close()
    if output is not None:
        console.print(f"wrote {output}")


def retry_failed_command(
    bulk_change_id: int,
    status: Annotated[
        list[str] | None,
        typer.Option("--status", help="only changes that ended in this status (repeat it); default: every failure"),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """The failed changes of a bulk change again, every field of their rows, as a new bulk change linked to
    it; prints the new bulk change's id (run `bulkchange worker` to process it)."""
    from bulkchange.engine import operator_actions as ops
    from bulkchange.engine.submit import SubmissionRefused

    try:
        statuses = frozenset(ChangeStatus(s.strip().upper()) for s in status) if status else ops.FAILED_STATUSES
    except ValueError:
        failed = ", ".join(sorted(s.value for s in ops.FAILED_STATUSES))
        raise _refuse(f"--status takes a failed status: {failed}", 2) from None
    rt = _runtime()
    try:
        with rt.session_factory() as session:
            new_id = ops.retry_failed(session, rt.transport, bulk_change_id, statuses=statuses, created_by=_who())
    except KeyError:
        raise _refuse(f"no bulk change {bulk_change_id}", 2) from None
    except ops.NothingToRetry as exc:
        raise _refuse(str(exc)) from None
    except ValueError as exc:  # a status that is not a failure
        raise _refuse(str(exc), 2) from None
    except SubmissionRefused as exc:
        why = exc.first_problem()
        raise _refuse(f"the retry was refused{': ' + why if why else ''}") from None
    finally:
        rt.close()
    typer.echo(json.dumps({"bulk_change_id": new_id, "retry_of": bulk_change_id}) if as_json else str(new_id))


def register(app: typer.Typer) -> None:
    app.command("list")(list_command)
    app.command("retry-failed")(retry_failed_command)
    app.command("status")(status_command)
    app.command("cancel")(cancel_command)
    app.command("pause")(pause_command)
    app.command("resume")(resume_command)
    app.command("export")(export_command)
