"""CLI commands of the integrations: ``bulkchange billing …``, ``bulkchange rate-plans …``,
``bulkchange webhooks …`` (registered by ``bulkchange.cli.main``)."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy import select

from bulkchange.store.tables import CustomerRatePlan, IntegrationAuthentication, WebhookDeliveryAttempt, WebhookOutbox

console = Console()
err = Console(stderr=True)

billing_app = typer.Typer(help="Rev.io billing credentials (IntegrationAuthentication).", no_args_is_help=True)
rate_plans_app = typer.Typer(help="Customer rate plans and pools a change may name.", no_args_is_help=True)
webhooks_app = typer.Typer(help="The status-update webhook: events and delivery attempts.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(billing_app, name="billing")
    app.add_typer(rate_plans_app, name="rate-plans")
    app.add_typer(webhooks_app, name="webhooks")


def _runtime() -> Any:
    from bulkchange.runtime import build_runtime
    from bulkchange.settings import Settings

    return build_runtime(Settings())


@billing_app.command("add")
def billing_add(
    base_url: Annotated[str, typer.Option(help="e.g. https://api.revioapi.com/v1")],
    username: Annotated[str, typer.Option()],
    client_code: Annotated[str, typer.Option()],
    password: Annotated[str, typer.Option()],
    subscription_key: Annotated[str, typer.Option()],
    name: Annotated[str | None, typer.Option()] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Add Rev.io credentials (stored encrypted); prints the IntegrationAuthenticationId changes refer to."""
    from bulkchange.security.transport import InsecureUrlError, require_https

    try:
        require_https(base_url, "base URL")
    except InsecureUrlError as exc:
        err.print(f"[red]refused:[/red] {exc}")
        raise typer.Exit(2) from exc
    rt = _runtime()
    with rt.session_factory.begin() as session:
        row = IntegrationAuthentication(
            name=name,
            base_url=base_url.rstrip("/"),
            username=username,
            client_code=client_code,
            password=password,
            subscription_key=subscription_key,
        )
        session.add(row)
        session.flush()
        auth_id = row.id
    rt.close()
    typer.echo(json.dumps({"integration_authentication_id": auth_id}) if as_json else str(auth_id))


@billing_app.command("list")
def billing_list() -> None:
    """List Rev.io credentials (secrets never shown)."""
    rt = _runtime()
    table = Table("id", "name", "base URL", "user", "active")
    with rt.session_factory() as session:
        for a in session.execute(select(IntegrationAuthentication).order_by(IntegrationAuthentication.id)).scalars():
            table.add_row(
                str(a.id),
                a.name or "",
                a.base_url,
                f"{a.username}@{a.client_code}",
                "yes" if a.is_active and not a.is_deleted else "no",
            )
    rt.close()
    console.print(table)


@rate_plans_app.command("add")
def rate_plans_add(
    name: str,
    pool: Annotated[bool, typer.Option("--pool", help="a customer rate pool rather than a plan")] = False,
    display_name: Annotated[str | None, typer.Option()] = None,
) -> None:
    """Add a customer rate plan (or pool) that changes may name in their CustomerRatePlan column."""
    rt = _runtime()
    with rt.session_factory.begin() as session:
        if session.execute(select(CustomerRatePlan.id).where(CustomerRatePlan.name == name)).first():
            err.print(f"[red]a customer rate plan named {name!r} already exists[/red]")
            raise typer.Exit(2)
        row = CustomerRatePlan(name=name, is_pool=pool, display_name=display_name)
        session.add(row)
        session.flush()
        plan_id = row.id
    rt.close()
    typer.echo(str(plan_id))


@rate_plans_app.command("list")
def rate_plans_list() -> None:
    rt = _runtime()
    table = Table("id", "name", "kind", "display name")
    with rt.session_factory() as session:
        for p in session.execute(
            select(CustomerRatePlan).where(CustomerRatePlan.is_deleted.is_(False)).order_by(CustomerRatePlan.id)
        ).scalars():
            table.add_row(str(p.id), p.name, "pool" if p.is_pool else "plan", p.display_name or "")
    rt.close()
    console.print(table)


def webhook_events(session: Any, bulk_change_id: int | None = None, attempts: int = 10) -> list[dict[str, Any]]:
    """Events with their latest delivery attempts (what ``webhooks list`` shows)."""
    query = select(WebhookOutbox).order_by(WebhookOutbox.id.desc()).limit(50)
    if bulk_change_id is not None:
        query = query.where(WebhookOutbox.bulk_change_id == bulk_change_id)
    events = []
    for e in session.execute(query).scalars():
        rows = session.execute(
            select(WebhookDeliveryAttempt)
            .where(WebhookDeliveryAttempt.outbox_id == e.id)
            .order_by(WebhookDeliveryAttempt.id.desc())
            .limit(attempts)
        ).scalars()
        events.append(
            {
                "event_id": e.event_id,
                "bulk_change_id": e.bulk_change_id,
                "status": e.status,
                "pages": f"{e.pages_delivered}/{e.page_count if e.page_count is not None else '?'}",
                "failed_attempts": e.attempt_count,
                "next_attempt_at": e.next_attempt_at,
                "last_error": e.last_error,
                "created": e.created_date,
                "delivered": e.delivered_date,
                "attempts": [
                    {
                        "at": a.attempted_date,
                        "page": a.page_number,
                        "attempt": a.attempt_number,
                        "status": a.response_status,
                        "error": a.error,
                        "ms": a.duration_ms,
                    }
                    for a in rows
                ],
            }
        )
    return events


@webhooks_app.command("list")
def webhooks_list(
    bulk_change: Annotated[int | None, typer.Option("--bulk-change")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Webhook events (newest first) and their latest delivery attempts."""
    rt = _runtime()
    with rt.session_factory() as session:
        events = webhook_events(session, bulk_change)
    rt.close()
    if as_json:
        typer.echo(json.dumps(events, default=str, indent=2))
        return
    if not events:
        console.print("no webhook events")
        return
    for e in events:
        console.print(
            f"[bold]{e['event_id']}[/bold] bulk change {e['bulk_change_id']}: {e['status']} — pages {e['pages']}, "
            f"{e['failed_attempts']} failed attempt(s)"
            + (f", next at {e['next_attempt_at']}" if e["next_attempt_at"] else "")
            + (f"\n  last error: {e['last_error']}" if e["last_error"] and e["status"] != "DELIVERED" else "")
        )
        table = Table("at", "page", "attempt", "HTTP", "ms", "error")
        for a in e["attempts"]:
            table.add_row(
                str(a["at"]),
                str(a["page"]),
                str(a["attempt"]),
                str(a["status"] or "-"),
                str(a["ms"]),
                (a["error"] or "")[:80],
            )
        console.print(table)


@webhooks_app.command("retry")
def webhooks_retry(event_id: str) -> None:
    """Deliver a FAILED (or waiting) event again now, with fresh attempts."""
    from bulkchange.integrations.webhooks import rearm

    rt = _runtime()
    with rt.session_factory() as session:
        done = rearm(session, event_id)
    rt.close()
    if not done:
        err.print(f"[red]no failed or waiting event {event_id}[/red]")
        raise typer.Exit(2)
    console.print(f"event {event_id} re-armed; run `bulkchange worker`")
