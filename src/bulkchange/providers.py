"""Service providers and their ThingSpace authentication rows (the original's per-provider config), and
their CarrierService callback listener: the credentials ThingSpace must echo, and registering it."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from bulkchange.carrier.thingspace.client import ThingSpaceClient
from bulkchange.engine.context import SecretResolver, connection_for
from bulkchange.security.credentials import new_callback_credentials
from bulkchange.security.crypto import reveal
from bulkchange.security.transport import require_https
from bulkchange.store.tables import ServiceProvider, ThingSpaceAuthentication

CALLBACK_PATH = "/callbacks/thingspace/{service_provider_id}"


def add_provider(
    session: Session,
    *,
    name: str,
    base_url: str,
    client_id: str,
    client_secret: str,
    username: str,
    password: str,
    account: str,
    token_url: str | None = None,
    login_url: str | None = None,
    register_callback: bool = False,
    tenant_id: int = 1,
) -> int:
    """Create the provider and its authentication; token and login URLs default from the base URL.

    URLs must be https (http only on loopback); the secrets are stored encrypted (``EncryptedSecret``).
    The provider's callback credentials are generated here (``callback_listener`` shows them; register
    them with ThingSpace through ``register_callback_listener``).
    """
    require_https(base_url, "base URL")
    for extra, what in ((token_url, "token URL"), (login_url, "login URL")):
        if extra:
            require_https(extra, what)
    if session.execute(select(ServiceProvider.id).where(ServiceProvider.name == name)).first():
        raise ValueError(f"a service provider named {name!r} already exists")
    base = base_url.rstrip("/")
    callback_username, callback_password = new_callback_credentials()
    provider = ServiceProvider(
        name=name, integration_id=1, tenant_id=tenant_id, register_carrier_service_callback=register_callback
    )
    session.add(provider)
    session.flush()
    session.add(
        ThingSpaceAuthentication(
            service_provider_id=provider.id,
            base_url=base,
            auth_token_url=token_url or f"{base}/api/ts/v1/oauth2/token",
            auth_url=login_url or f"{base}/api/m2m/v1/session/login",
            client_id=client_id,
            client_secret=client_secret,
            username=username,
            password=password,
            account_number=account,
            write_is_enabled=True,
            callback_username=callback_username,
            callback_password=callback_password,
        )
    )
    session.commit()
    return provider.id


@dataclass(frozen=True)
class CallbackListener:
    """What to register with ThingSpace for one provider: our URL path and the credentials it must echo."""

    service_provider_id: int
    account: str
    path: str
    username: str | None
    password: str | None
    registered_url: str | None

    def url(self, public_base_url: str) -> str:
        return public_base_url.rstrip("/") + self.path


def callback_listener(session: Session, service_provider_id: int) -> CallbackListener:
    """The provider's listener details, the password decrypted (for the operator registering it)."""
    auth = session.execute(
        select(ThingSpaceAuthentication).where(
            ThingSpaceAuthentication.service_provider_id == service_provider_id,
            ThingSpaceAuthentication.is_deleted.is_(False),
        )
    ).scalar_one_or_none()
    if auth is None:
        raise KeyError(f"no ThingSpace authentication for service provider {service_provider_id}")
    return CallbackListener(
        service_provider_id=service_provider_id,
        account=auth.account_number,
        path=CALLBACK_PATH.format(service_provider_id=service_provider_id),
        username=auth.callback_username,
        password=reveal(auth.callback_password) if auth.callback_password else None,
        registered_url=auth.callback_url,
    )


async def register_callback_listener(
    session: Session, service_provider_id: int, public_base_url: str, *, resolve: SecretResolver | None = None
) -> str:
    """Register the provider's CarrierService listener with ThingSpace — our URL and the provider's callback
    credentials, so ThingSpace echoes them — and remember the URL (``CallbackUrl``). Returns the URL.

    The URL must be https (http only on loopback, for the simulator). Raises ``KeyError`` for an unknown
    provider, ``ValueError`` when it has no callback credentials yet, ``CarrierError`` when ThingSpace refuses.
    """
    listener = callback_listener(session, service_provider_id)
    if not listener.username or not listener.password:
        raise ValueError(
            f"service provider {service_provider_id} has no callback credentials: run "
            f"`bulkchange credentials set --provider {service_provider_id} --rotate-callback` first"
        )
    url = require_https(listener.url(public_base_url), "callback URL")
    auth = session.execute(
        select(ThingSpaceAuthentication).where(ThingSpaceAuthentication.service_provider_id == service_provider_id)
    ).scalar_one()
    async with ThingSpaceClient(connection_for(auth, resolve)) as client:
        await client.register_callback("CarrierService", url, username=listener.username, password=listener.password)
    auth.callback_url = url
    session.execute(
        update(ServiceProvider)
        .where(ServiceProvider.id == service_provider_id)
        .values(register_carrier_service_callback=True)
    )
    session.commit()
    return url


def unlock_provider(session: Session, provider_id: int) -> bool:
    """Clear the login guard after the operator fixed the credentials; True when it was set."""
    result = session.execute(
        update(ThingSpaceAuthentication)
        .where(
            ThingSpaceAuthentication.service_provider_id == provider_id,
            ThingSpaceAuthentication.login_failed_at.is_not(None),
        )
        .values(login_failed_at=None, login_failure_message=None)
    )
    session.commit()
    return bool(getattr(result, "rowcount", 0))


def list_providers(session: Session, tenant_id: int | None = None) -> list[ServiceProvider]:
    """Service providers (of one tenant, or of all), by id."""
    query = select(ServiceProvider).order_by(ServiceProvider.id)
    if tenant_id is not None:
        query = query.where(ServiceProvider.tenant_id == tenant_id)
    return list(session.execute(query).scalars())
