"""Service providers and their ThingSpace authentication rows (the original's per-provider config)."""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from bulkchange.security.transport import require_https
from bulkchange.store.tables import ServiceProvider, ThingSpaceAuthentication


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
    """
    require_https(base_url, "base URL")
    for extra, what in ((token_url, "token URL"), (login_url, "login URL")):
        if extra:
            require_https(extra, what)
    if session.execute(select(ServiceProvider.id).where(ServiceProvider.name == name)).first():
        raise ValueError(f"a service provider named {name!r} already exists")
    base = base_url.rstrip("/")
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
        )
    )
    session.commit()
    return provider.id


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
