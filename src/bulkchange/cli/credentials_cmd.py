"""``bulkchange credentials …`` (secrets at rest) and ``bulkchange apikeys …`` (REST API / dashboard keys).

Registered by ``bulkchange.cli.main``. A secret given as ``-`` is read from standard input (one line per
``-`` option, in the order of the options), so it does not end up in the shell history or ``ps``.
"""

import json
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from bulkchange.domain.carriers import CarrierName

# Each command imports the database and the services it runs in its function (so do the helpers below):
# the other commands of `bulkchange` start without them.
if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from bulkchange.runtime import Runtime

console = Console()
err = Console(stderr=True)

credentials_app = typer.Typer(
    help="Credentials at rest: set them (stored encrypted), see how they are stored, rotate the key.",
    no_args_is_help=True,
)
apikeys_app = typer.Typer(help="API keys of the REST API and the dashboard (tenant-scoped).", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(credentials_app, name="credentials")
    app.add_typer(apikeys_app, name="apikeys")


def _runtime() -> "Runtime":
    from bulkchange.runtime import command_runtime
    from bulkchange.settings import Settings

    return command_runtime(Settings())


def stdin_secret(value: str | None) -> str | None:
    """``value``, or one line read from standard input when it is ``-``."""
    if value != "-":
        return value
    line = sys.stdin.readline().rstrip("\r\n")
    if not line:
        raise typer.BadParameter("a secret given as '-' must be one non-empty line on standard input")
    return line


@credentials_app.command("generate-key")
def generate() -> None:
    """Print a new Fernet key (for BULKCHANGE_SECRET_KEYS; put it first, then run `credentials rotate`)."""
    from bulkchange.security.crypto import generate_key

    typer.echo(generate_key())


@credentials_app.command("status")
def status(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """How the secret fields are stored: current key, an older key, plaintext, reference (never the values)."""
    from bulkchange.security.crypto import keyring
    from bulkchange.services import credentials as creds

    rt = _runtime()
    try:
        with rt.session_factory() as session:
            counts = creds.status(session)
    finally:
        rt.close()
    ring = keyring()
    if as_json:
        typer.echo(json.dumps({"keys": len(ring.keys), "key_source": ring.source, "fields": counts}))
        return
    console.print(f"{len(ring.keys)} key(s) from {ring.source}")
    table = Table("stored as", "fields")
    for kind, n in counts.items():
        table.add_row(kind, str(n))
    console.print(table)


@credentials_app.command("rotate")
def rotate(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Re-encrypt every secret with the first key of BULKCHANGE_SECRET_KEYS; encrypt plaintext rows."""
    from bulkchange.security.crypto import SecretKeyError
    from bulkchange.services import credentials as creds

    rt = _runtime()
    try:
        with rt.session_factory() as session:
            result = creds.rotate(session)
    except SecretKeyError as exc:
        err.print(f"[red]nothing changed:[/red] {exc}")
        raise typer.Exit(2) from None
    finally:
        rt.close()
    payload = {"encrypted": result.encrypted, "reencrypted": result.reencrypted, "unchanged": result.unchanged}
    if as_json:
        typer.echo(json.dumps(payload))
    else:
        console.print(
            f"{result.encrypted} plaintext field(s) encrypted, {result.reencrypted} re-encrypted with the current "
            f"key, {result.unchanged} unchanged; older keys can now be removed from BULKCHANGE_SECRET_KEYS"
        )


@credentials_app.command("set")
def set_credentials(
    provider: Annotated[int | None, typer.Option("--provider", help="a service provider's carrier credentials")] = None,
    billing: Annotated[int | None, typer.Option("--billing", help="an IntegrationAuthentication (Rev.io) id")] = None,
    client_id: Annotated[str | None, typer.Option()] = None,
    client_secret: Annotated[str | None, typer.Option(help="value, ssm:/path, secretsmanager:id[#key] or -")] = None,
    username: Annotated[str | None, typer.Option()] = None,
    password: Annotated[str | None, typer.Option(help="value, ssm:/path, secretsmanager:id[#key] or -")] = None,
    subscription_key: Annotated[str | None, typer.Option(help="Rev.io only; value, reference or -")] = None,
    base_url: Annotated[str | None, typer.Option(help="Rev.io only")] = None,
    api_key: Annotated[
        str | None, typer.Option(help="a Control Center provider's API key; value, reference or -")
    ] = None,
    callback_username: Annotated[
        str | None, typer.Option(help="--provider only: what ThingSpace echoes in its callbacks")
    ] = None,
    callback_password: Annotated[
        str | None, typer.Option(help="--provider only: value, reference or - (the listener's registered password)")
    ] = None,
    rotate_callback: Annotated[
        bool,
        typer.Option(
            "--rotate-callback", help="--provider only: generate new callback credentials (register them afterwards)"
        ),
    ] = False,
) -> None:
    """Write credentials (secrets encrypted with the current key, or kept as an SSM / Secrets Manager reference).

    A provider's callback credentials are what ThingSpace echoes in every callback: after --rotate-callback
    (new random ones, printed once here) register them with `bulkchange providers register-callback`.
    """
    if (provider is None) == (billing is None):
        raise typer.BadParameter("give exactly one of --provider and --billing")
    given = _Given(
        client_id=client_id,
        client_secret=stdin_secret(client_secret),
        username=username,
        password=stdin_secret(password),
        subscription_key=stdin_secret(subscription_key),
        base_url=base_url,
        api_key=stdin_secret(api_key),
        callback_username=callback_username,
        callback_password=stdin_secret(callback_password),
        rotate_callback=rotate_callback,
    )
    if billing is not None and given.callback_change:
        raise typer.BadParameter("--callback-username, --callback-password and --rotate-callback are for --provider")
    from bulkchange.security.crypto import SecretKeyError
    from bulkchange.security.transport import InsecureUrlError

    rt = _runtime()
    stored_callback: tuple[str, str] | None = None
    try:
        with rt.session_factory() as session:
            if provider is not None:
                stored_callback = _set_provider(session, provider, given)
            else:
                assert billing is not None  # narrowed by the check above (for type checkers)
                _set_billing(session, billing, given)
    except KeyError as exc:
        err.print(f"[red]{exc.args[0]}[/red]")
        raise typer.Exit(2) from None
    except (SecretKeyError, InsecureUrlError, ValueError) as exc:
        err.print(f"[red]refused:[/red] {exc}")
        raise typer.Exit(2) from None
    finally:
        rt.close()
    console.print("credentials stored (secrets encrypted)")
    if stored_callback is not None and rotate_callback:
        _print_rotated(provider, stored_callback)


@dataclass(frozen=True)
class _Given:
    """The values given to ``credentials set`` (secrets already read from stdin where ``-`` was given)."""

    client_id: str | None
    client_secret: str | None
    username: str | None
    password: str | None
    subscription_key: str | None
    base_url: str | None
    api_key: str | None
    callback_username: str | None
    callback_password: str | None
    rotate_callback: bool

    @property
    def callback_change(self) -> bool:
        return self.rotate_callback or self.callback_username is not None or self.callback_password is not None


def _set_provider(session: "Session", provider: int, given: _Given) -> tuple[str, str] | None:
    """A provider's carrier credentials (and callback credentials); the callback pair stored, if changed."""
    from bulkchange.providers import carrier_of
    from bulkchange.services import credentials as creds

    if given.subscription_key is not None or given.base_url is not None:
        raise typer.BadParameter("--subscription-key and --base-url are for --billing")
    if carrier_of(session, provider) is CarrierName.CONTROLCENTER:
        if given.client_id is not None or given.client_secret is not None or given.password is not None:
            raise typer.BadParameter("a Control Center provider has a --username and an --api-key")
        if given.callback_change:
            raise typer.BadParameter("callback credentials are for ThingSpace providers")
        creds.set_controlcenter(session, provider, username=given.username, api_key=given.api_key)
        return None
    if given.api_key is not None:
        raise typer.BadParameter("--api-key is for Control Center providers")
    creds.set_thingspace(
        session,
        provider,
        client_id=given.client_id,
        client_secret=given.client_secret,
        username=given.username,
        password=given.password,
    )
    if not given.callback_change:
        return None
    return creds.set_callback(
        session,
        provider,
        username=given.callback_username,
        password=given.callback_password,
        rotate=given.rotate_callback,
    )


def _set_billing(session: "Session", billing: int, given: _Given) -> None:
    """Rev.io credentials; the billing steps that waited for them run again."""
    from bulkchange.services import credentials as creds
    from bulkchange.services.billing_steps import release_credential_waits

    if given.client_id is not None or given.client_secret is not None or given.api_key is not None:
        raise typer.BadParameter("--client-id, --client-secret and --api-key are for --provider")
    creds.set_billing(
        session,
        billing,
        base_url=given.base_url,
        username=given.username,
        password=given.password,
        subscription_key=given.subscription_key,
    )
    released = release_credential_waits(session, billing, by="cli")
    if released:
        err.print(f"{released} billing step(s) waiting for this credential will run again")


def _print_rotated(provider: int | None, stored: tuple[str, str]) -> None:
    err.print(
        f"new callback credentials of service provider {provider}; callbacks echoing the old ones are refused "
        f"within seconds — register these: `bulkchange providers register-callback {provider} --url …`"
    )
    typer.echo(f"callback username: {stored[0]}")
    typer.echo(f"callback password: {stored[1]}")


@apikeys_app.command("create")
def apikeys_create(
    tenant: Annotated[int, typer.Option("--tenant", min=1, help="ServiceProvider.TenantId the key acts for")],
    service_provider: Annotated[
        list[int] | None,
        typer.Option("--service-provider", help="limit the key to these providers of the tenant (repeatable)"),
    ] = None,
    name: Annotated[str | None, typer.Option(help="a label for `apikeys list`")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Create an API key and print it — once: only its hash is stored."""
    from bulkchange.services.apikeys import create_key

    rt = _runtime()
    try:
        with rt.session_factory() as session:
            created = create_key(session, tenant_id=tenant, service_provider_ids=service_provider or (), name=name)
    except ValueError as exc:
        err.print(f"[red]refused:[/red] {exc}")
        raise typer.Exit(2) from None
    finally:
        rt.close()
    if as_json:
        typer.echo(json.dumps({"id": created.id, "key": created.key}))
    else:
        err.print(f"API key {created.id} for tenant {tenant} (shown once; store it now):")
        typer.echo(created.key)


@apikeys_app.command("list")
def apikeys_list() -> None:
    """API keys (their id, tenant, scope and prefix; never the key)."""
    from bulkchange.services.apikeys import list_keys

    rt = _runtime()
    table = Table("id", "name", "tenant", "service providers", "prefix", "created", "revoked")
    with rt.session_factory() as session:
        for k in list_keys(session):
            table.add_row(
                str(k.id),
                k.name or "",
                str(k.tenant_id),
                k.service_provider_ids or "all of the tenant's",
                k.key_prefix + "…",
                k.created_date.strftime("%Y-%m-%d %H:%M"),
                k.revoked_date.strftime("%Y-%m-%d %H:%M") if k.revoked_date else "",
            )
    rt.close()
    console.print(table)


@apikeys_app.command("revoke")
def apikeys_revoke(key_id: int) -> None:
    """Revoke an API key (refused from the next request on)."""
    from bulkchange.services.apikeys import revoke_key

    rt = _runtime()
    with rt.session_factory() as session:
        revoked = revoke_key(session, key_id)
    rt.close()
    if not revoked:
        err.print(f"[red]refused:[/red] no active API key {key_id}")
        raise typer.Exit(2)
    console.print(f"API key {key_id} revoked")
    if not revoked:
        raise typer.Exit(2)
