"""CLI commands of the integrations: ``bulkchange billing …``, ``bulkchange rate-plans …``,
``bulkchange webhooks …`` (registered by ``bulkchange.cli.main``)."""

import json
import sys
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

console = Console()
err = Console(stderr=True)

billing_app = typer.Typer(help="Rev.io billing credentials (IntegrationAuthentication).", no_args_is_help=True)
rate_plans_app = typer.Typer(help="Customer rate plans and pools a change may name.", no_args_is_help=True)
webhooks_app = typer.Typer(
    help="The status-update webhook: destinations per tenant or provider, events and delivery attempts.",
    no_args_is_help=True,
)

# Every credential, plan and destination belongs to one tenant (ServiceProvider.TenantId); 1 when not given,
# the tenant every provider had before tenants could be chosen.
Tenant = Annotated[int, typer.Option("--tenant", min=1, help="the tenant (ServiceProvider.TenantId) it belongs to")]
TenantFilter = Annotated[int | None, typer.Option("--tenant", min=1, help="only this tenant's")]


def register(app: typer.Typer) -> None:
    app.add_typer(billing_app, name="billing")
    app.add_typer(rate_plans_app, name="rate-plans")
    app.add_typer(webhooks_app, name="webhooks")


def _stdin_secret(value: str, option: str) -> str:
    """``value``, or one line of standard input when it is ``-`` (as ``credentials set`` reads secrets)."""
    if value != "-":
        return value
    line = sys.stdin.readline().rstrip("\r\n")
    if not line:
        raise typer.BadParameter(
            "a secret given as '-' must be one non-empty line on standard input", param_hint=option
        )
    return line


def _runtime() -> Any:
    from bulkchange.runtime import command_runtime
    from bulkchange.settings import Settings

    return command_runtime(Settings())


@billing_app.command("add")
def billing_add(
    base_url: Annotated[str, typer.Option(help="e.g. https://api.revioapi.com/v1")],
    username: Annotated[str, typer.Option()],
    client_code: Annotated[str, typer.Option()],
    password: Annotated[str, typer.Option(help="the value, or '-' to read it from stdin (one line)")],
    subscription_key: Annotated[
        str, typer.Option(help="the value, or '-' to read it from stdin (the line after the password's)")
    ],
    name: Annotated[str | None, typer.Option()] = None,
    tenant: Tenant = 1,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Add Rev.io credentials of a tenant (stored encrypted); prints the IntegrationAuthenticationId.

    Only changes of that tenant's service providers may name them (or get them by default, when they are
    the tenant's only ones). Secrets given as ``-`` are read from standard input, one line each (the
    password's first), so they stay out of the shell history and the process list.
    """
    from bulkchange.integrations.billing_accounts import add_billing_account

    password = _stdin_secret(password, "--password")
    subscription_key = _stdin_secret(subscription_key, "--subscription-key")
    from bulkchange.security.transport import InsecureUrlError, require_https

    try:
        require_https(base_url, "base URL")
    except InsecureUrlError as exc:
        err.print(f"[red]refused:[/red] {exc}")
        raise typer.Exit(2) from exc
    rt = _runtime()
    with rt.session_factory.begin() as session:
        auth_id = add_billing_account(
            session,
            tenant_id=tenant,
            name=name,
            base_url=base_url,
            username=username,
            client_code=client_code,
            password=password,
            subscription_key=subscription_key,
        )
    rt.close()
    typer.echo(json.dumps({"integration_authentication_id": auth_id}) if as_json else str(auth_id))


@billing_app.command("list")
def billing_list(tenant: TenantFilter = None) -> None:
    """List Rev.io credentials and their tenant (secrets never shown)."""
    from bulkchange.integrations.billing_accounts import list_billing_accounts

    rt = _runtime()
    table = Table("id", "tenant", "name", "base URL", "user", "active")
    with rt.session_factory() as session:
        accounts = list_billing_accounts(session, tenant)
    rt.close()
    for a in accounts:
        table.add_row(str(a.id), str(a.tenant_id), a.name or "", a.base_url, a.user, "yes" if a.active else "no")
    console.print(table)


@rate_plans_app.command("add")
def rate_plans_add(
    name: str,
    pool: Annotated[bool, typer.Option("--pool", help="a customer rate pool rather than a plan")] = False,
    display_name: Annotated[str | None, typer.Option()] = None,
    tenant: Tenant = 1,
) -> None:
    """Add a tenant's customer rate plan (or pool) that its changes may name in their CustomerRatePlan column.

    Names are unique per tenant (``UQ_CustomerRatePlan_TenantId_Name``); two tenants may use the same name.
    """
    from bulkchange.integrations.billing_accounts import RatePlanExists, add_rate_plan

    rt = _runtime()
    try:
        with rt.session_factory.begin() as session:
            plan_id = add_rate_plan(session, tenant_id=tenant, name=name, pool=pool, display_name=display_name)
    except RatePlanExists as exc:
        err.print(f"[red]refused:[/red] {exc}")
        raise typer.Exit(2) from exc
    finally:
        rt.close()
    typer.echo(str(plan_id))


@rate_plans_app.command("list")
def rate_plans_list(tenant: TenantFilter = None) -> None:
    """List customer rate plans and pools with their tenant."""
    from bulkchange.integrations.billing_accounts import list_rate_plans

    rt = _runtime()
    table = Table("id", "tenant", "name", "kind", "display name")
    with rt.session_factory() as session:
        for p in list_rate_plans(session, tenant):
            table.add_row(str(p.id), str(p.tenant_id), p.name, "pool" if p.is_pool else "plan", p.display_name or "")
    rt.close()
    console.print(table)


@webhooks_app.command("list")
def webhooks_list(
    bulk_change: Annotated[int | None, typer.Option("--bulk-change")] = None,
    tenant: TenantFilter = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Webhook events (newest first) and their latest delivery attempts."""
    from bulkchange.integrations.webhook_events import webhook_events

    rt = _runtime()
    with rt.session_factory() as session:
        events = webhook_events(session, bulk_change, tenant_id=tenant)
    rt.close()
    if as_json:
        typer.echo(json.dumps(events, default=str, indent=2))
        return
    if not events:
        console.print("no webhook events")
        return
    for e in events:
        console.print(
            f"[bold]{e['event_id']}[/bold] bulk change {e['bulk_change_id']} (tenant {e['tenant_id']}): "
            f"{e['status']} — pages {e['pages']}, "
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


@webhooks_app.command("set-destination")
def webhooks_set_destination(
    tenant: Annotated[int, typer.Option("--tenant", min=1, help="the tenant whose bulk changes go there")],
    url: Annotated[str, typer.Option(help="the receiver (https; http only on loopback)")],
    given: Annotated[
        str | None,
        typer.Option("--secret", help="the signing secret; '-' reads it from stdin; asked for (hidden) when omitted"),
    ] = None,
    service_provider: Annotated[
        int | None,
        typer.Option("--service-provider", min=1, help="only this provider of the tenant (overrides the tenant's)"),
    ] = None,
) -> None:
    """Send a tenant's (or one of its providers') webhooks to its own receiver, signed with its own secret.

    Without one, a bulk change's webhook goes to BULKCHANGE_WEBHOOK_URL (signed with BULKCHANGE_WEBHOOK_SECRET).
    """
    from bulkchange.integrations.webhooks import DestinationRefused, set_destination

    if given is None:
        secret: str = typer.prompt("signing secret", hide_input=True, confirmation_prompt=True)
    else:
        secret = sys.stdin.readline().rstrip("\r\n") if given == "-" else given
    rt = _runtime()
    try:
        with rt.session_factory() as session:
            destination_id = set_destination(
                session, tenant_id=tenant, url=url, secret=secret, service_provider_id=service_provider
            )
    except DestinationRefused as exc:
        err.print(f"[red]refused:[/red] {exc}")
        raise typer.Exit(2) from exc
    finally:
        rt.close()
    scope = f"service provider {service_provider}" if service_provider else f"tenant {tenant}"
    console.print(f"webhook destination {destination_id}: {scope} → {url}")


@webhooks_app.command("remove-destination")
def webhooks_remove_destination(
    tenant: Annotated[int, typer.Option("--tenant", min=1)],
    service_provider: Annotated[int | None, typer.Option("--service-provider", min=1)] = None,
) -> None:
    """Remove a tenant's (or provider's) destination: its webhooks go to the next one (tenant, then default)."""
    from bulkchange.integrations.webhooks import remove_destination

    rt = _runtime()
    with rt.session_factory() as session:
        removed = remove_destination(session, tenant_id=tenant, service_provider_id=service_provider)
    rt.close()
    if not removed:
        err.print("[red]no such destination[/red]")
        raise typer.Exit(2)
    console.print("destination removed")


@webhooks_app.command("destinations")
def webhooks_destinations(
    tenant: TenantFilter = None, as_json: Annotated[bool, typer.Option("--json")] = False
) -> None:
    """Webhook destinations per tenant and provider (secrets never shown)."""
    from bulkchange.integrations.webhooks import list_destinations

    rt = _runtime()
    with rt.session_factory() as session:
        rows = list_destinations(session, tenant)
    rt.close()
    if as_json:
        typer.echo(json.dumps(rows, default=str, indent=2))
        return
    table = Table("id", "tenant", "service provider", "URL", "modified")
    for r in rows:
        table.add_row(
            str(r["id"]),
            str(r["tenant_id"]),
            str(r["service_provider_id"] or "all of the tenant's"),
            r["url"],
            str(r["modified"]),
        )
    console.print(table)
