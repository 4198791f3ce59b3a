"""Service providers and their carrier accounts (the original's per-provider config), and a ThingSpace
provider's CarrierService callback listener: the credentials ThingSpace must echo, and registering it.

A provider speaks one carrier API (``ServiceProvider.IntegrationId``, see ``bulkchange.domain.carriers``):
ThingSpace providers have a ``ThingSpaceAuthentication`` row, Control Center (AT&T POD 19) providers a
``JasperAuthentication`` row and, for the deactivation pre-step, their ``JasperCarrierRatePlan`` rows.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from urllib.parse import urlsplit

from sqlalchemy import and_, select, update
from sqlalchemy.orm import Session

from bulkchange.carrier.catalogue import POD19_BASE_URL, callback_registrar
from bulkchange.carrier.port import CallbackRegistration, CarrierAccount, RegistersCallbacks
from bulkchange.domain.carriers import CarrierName
from bulkchange.engine.accounts import load_account
from bulkchange.engine.context import EngineContext
from bulkchange.engine.sessions import operator_services
from bulkchange.security.crypto import reveal
from bulkchange.security.transport import require_https
from bulkchange.services.credentials import new_callback_credentials
from bulkchange.store.tables import (
    JasperAuthentication,
    ServiceProvider,
    ThingSpaceAuthentication,
)

CALLBACK_PATH = "/callbacks/thingspace/{service_provider_id}"
POD19_HOST = urlsplit(POD19_BASE_URL).hostname or ""
MAX_TPS = 100.0
"""The most calls per second a Control Center provider may be configured for (contracts sell a few; the
simulator and benchmarks go higher)."""
MAX_BURST = 100
"""The most calls a Control Center provider may be configured to send back to back (``burst``)."""


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
    _name_is_free(session, name)
    base = base_url.rstrip("/")
    callback_username, callback_password = new_callback_credentials()
    provider = ServiceProvider(
        name=name,
        integration_id=CarrierName.THINGSPACE.integration_id,
        tenant_id=tenant_id,
        register_carrier_service_callback=register_callback,
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


class NoCallbacks(ValueError):
    """The provider's carrier pushes no results (Control Center is read back): nothing to register."""


READ_BACK_NOTE = "Control Center is read back: it sends no callbacks, each change is confirmed by reading the device"
NOT_REGISTERED_NOTE = "not registered — every change waits for the deferred check"


def _registrar(session: Session, provider_id: int) -> RegistersCallbacks:
    """The provider's carrier adapter, when it registers callback listeners (``KeyError`` for an unknown
    provider, ``NoCallbacks`` for a carrier that is read back instead)."""
    carrier = carrier_of(session, provider_id)
    try:
        return callback_registrar(carrier)
    except ValueError as exc:
        raise NoCallbacks(f"service provider {provider_id}: {READ_BACK_NOTE}") from exc


def _callback_flags(session: Session, provider_id: int, url: str | None) -> None:
    """Remember what the carrier now has (``CallbackUrl`` and the provider's callback flag) and commit."""
    session.execute(
        update(ThingSpaceAuthentication)
        .where(ThingSpaceAuthentication.service_provider_id == provider_id)
        .values(callback_url=url)
    )
    session.execute(
        update(ServiceProvider)
        .where(ServiceProvider.id == provider_id)
        .values(register_carrier_service_callback=url is not None)
    )
    session.commit()


async def register_callback_listener(ctx: EngineContext, service_provider_id: int, public_base_url: str) -> str:
    """Register the provider's CarrierService listener with its carrier — our URL and the provider's callback
    credentials, so ThingSpace echoes them — and remember the URL (``CallbackUrl``). Returns the URL.

    The URL must be https (http only on loopback, for the simulator). Raises ``KeyError`` for an unknown
    provider, ``NoCallbacks`` for a Control Center one, ``ValueError`` when it has no callback credentials
    yet, ``CarrierError`` when the carrier refuses (``BulkFailure`` when its credentials cannot be read).
    """
    with ctx.session_factory() as session:
        registrar = _registrar(session, service_provider_id)
        listener = callback_listener(session, service_provider_id)
        if not listener.username or not listener.password:
            raise ValueError(
                f"service provider {service_provider_id} has no callback credentials: run "
                f"`bulkchange credentials set --provider {service_provider_id} --rotate-callback` first"
            )
        url = require_https(listener.url(public_base_url), "callback URL")
        account = load_account(session, service_provider_id, ctx.secret_resolver)
    services = operator_services(ctx, account)
    await registrar.register_callback(
        account, url, username=listener.username, password=listener.password, services=services
    )
    with ctx.session_factory() as session:
        _callback_flags(session, service_provider_id, url)
    return url


async def callback_registrations(ctx: EngineContext, service_provider_id: int) -> list[CallbackRegistration]:
    """The listeners the carrier has registered for the provider's account, as the carrier says (asked now).
    Errors as ``register_callback_listener``."""
    with ctx.session_factory() as session:
        registrar = _registrar(session, service_provider_id)
        account = load_account(session, service_provider_id, ctx.secret_resolver)
    return await registrar.list_callbacks(account, operator_services(ctx, account))


async def delete_callback_listener(ctx: EngineContext, service_provider_id: int) -> None:
    """Delete the provider's CarrierService listener at the carrier and forget its URL: from now on every
    change of the provider waits for the deferred check. Errors as ``register_callback_listener``."""
    with ctx.session_factory() as session:
        registrar = _registrar(session, service_provider_id)
        account = load_account(session, service_provider_id, ctx.secret_resolver)
    await registrar.delete_callback(account, operator_services(ctx, account))
    with ctx.session_factory() as session:
        _callback_flags(session, service_provider_id, None)


@dataclass(frozen=True)
class CallbackState:
    """Whether a provider's changes are settled by callbacks, as last registered from here."""

    id: int
    name: str
    carrier: CarrierName
    registered_url: str | None
    listener_path: str | None

    @property
    def receives_callbacks(self) -> bool:
        return self.registered_url is not None

    @property
    def registrable(self) -> bool:
        """Whether its carrier has a callback listener to register (ThingSpace; not Control Center)."""
        return self.carrier is CarrierName.THINGSPACE

    @property
    def summary(self) -> str:
        if not self.registrable:
            return READ_BACK_NOTE
        return f"registered: {self.registered_url}" if self.registered_url else NOT_REGISTERED_NOTE


def callback_states(session: Session, scope: Collection[int] | None = None) -> list[CallbackState]:
    """Every provider that is not deleted (of ``scope``, when given), by id, with its registered listener."""
    query = (
        select(ServiceProvider.id, ServiceProvider.name, ServiceProvider.integration_id, ThingSpaceAuthentication)
        .outerjoin(
            ThingSpaceAuthentication,
            and_(
                ThingSpaceAuthentication.service_provider_id == ServiceProvider.id,
                ThingSpaceAuthentication.is_deleted.is_(False),
            ),
        )
        .where(ServiceProvider.is_deleted.is_(False))
        .order_by(ServiceProvider.id)
    )
    if scope is not None:
        query = query.where(ServiceProvider.id.in_(sorted(scope)))
    states: list[CallbackState] = []
    for pid, name, integration, auth in session.execute(query).all():
        carrier = CarrierName.of_integration(integration)
        ts = carrier is CarrierName.THINGSPACE and auth is not None
        states.append(
            CallbackState(
                id=int(pid),
                name=str(name),
                carrier=carrier,
                registered_url=auth.callback_url if ts else None,
                listener_path=CALLBACK_PATH.format(service_provider_id=pid) if ts else None,
            )
        )
    return states


def unlock_provider(session: Session, provider_id: int) -> bool:
    """Clear the login guard after the operator fixed the credentials; True when it was set.

    ``KeyError`` for a provider that does not exist (an operator's typo must not read as success)."""
    if session.get(ServiceProvider, provider_id) is None:
        raise KeyError(f"no service provider {provider_id}")
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


def _name_is_free(session: Session, name: str) -> None:
    if session.execute(select(ServiceProvider.id).where(ServiceProvider.name == name)).first():
        raise ValueError(f"a service provider named {name!r} already exists")


def is_pod19(base_url: str) -> bool:
    """Whether ``base_url`` is AT&T Control Center POD 19's REST host."""
    return (urlsplit(base_url.strip()).hostname or "").lower() == POD19_HOST


def add_controlcenter_provider(
    session: Session,
    *,
    name: str,
    base_url: str,
    username: str,
    api_key: str,
    tps: float = 1.0,
    burst: int = 1,
    pod19: bool | None = None,
    rate_plan_pre_step: bool = False,
    tenant_id: int = 1,
) -> int:
    """Create a Control Center provider and its account; returns the provider id.

    ``base_url`` is the pod's REST root (https; http only on loopback); ``pod19`` defaults to whether it is
    POD 19's host (every edit then verified against the audit trail); ``tps`` is the contract's calls per
    second (0 < tps <= ``MAX_TPS``) and ``burst`` how many of them it admits back to back (1: every call a full
    1/TPS after the previous one; only raise it when the contract says so). The API key is stored encrypted
    (or as an ssm: / secretsmanager: reference).
    """
    require_https(base_url, "base URL")
    if not 0 < tps <= MAX_TPS:
        raise ValueError(f"tps must be more than 0 and at most {MAX_TPS:g} (the account's contract)")
    if not 1 <= burst <= MAX_BURST:
        raise ValueError(f"burst must be from 1 to {MAX_BURST} calls (the account's contract)")
    if not username.strip() or not api_key:
        raise ValueError("a Control Center provider needs a user name and an API key")
    _name_is_free(session, name)
    provider = ServiceProvider(name=name, integration_id=CarrierName.CONTROLCENTER.integration_id, tenant_id=tenant_id)
    session.add(provider)
    session.flush()
    session.add(
        JasperAuthentication(
            service_provider_id=provider.id,
            base_url=base_url.strip().rstrip("/"),
            username=username.strip(),
            api_key=api_key,
            tps=float(tps),
            tps_burst=int(burst),
            pod19=is_pod19(base_url) if pod19 is None else pod19,
            rate_plan_pre_step=rate_plan_pre_step,
            write_is_enabled=True,
        )
    )
    session.commit()
    return provider.id


def carrier_of(session: Session, provider_id: int) -> CarrierName:
    """The carrier a provider speaks; ``KeyError`` for an unknown provider."""
    integration = session.execute(
        select(ServiceProvider.integration_id).where(ServiceProvider.id == provider_id)
    ).scalar_one_or_none()
    if integration is None:
        raise KeyError(f"no service provider {provider_id}")
    return CarrierName.of_integration(integration)


@dataclass(frozen=True)
class ProviderRow:
    """One line of ``providers list``."""

    id: int
    tenant_id: int
    name: str
    carrier: CarrierName
    callbacks: bool
    base_url: str | None
    tps: float | None
    pod19: bool | None
    account: str | None = None
    """ThingSpace's account number; Control Center's API user."""
    burst: int | None = None
    """Control Center: the calls its account admits back to back."""
    login_paused: str | None = None
    """Why logins are paused after a refused one (``providers unlock`` clears it); None when they are not."""
    callback_url: str | None = None
    """The CarrierService listener registered with the carrier (``providers register-callback``)."""


def provider_rows(session: Session, tenant_id: int | None = None) -> list[ProviderRow]:
    """Every provider (of one tenant, or of all) with its carrier and where its account is."""
    query = (
        select(ServiceProvider, JasperAuthentication, ThingSpaceAuthentication)
        .outerjoin(
            JasperAuthentication,
            and_(
                JasperAuthentication.service_provider_id == ServiceProvider.id,
                JasperAuthentication.is_deleted.is_(False),
            ),
        )
        .outerjoin(ThingSpaceAuthentication, ThingSpaceAuthentication.service_provider_id == ServiceProvider.id)
        .order_by(ServiceProvider.id)
    )
    if tenant_id is not None:
        query = query.where(ServiceProvider.tenant_id == tenant_id)
    rows: list[ProviderRow] = []
    for provider, jasper, ts in session.execute(query).all():
        rows.append(
            ProviderRow(
                id=provider.id,
                tenant_id=provider.tenant_id,
                name=provider.name,
                carrier=CarrierName.of_integration(provider.integration_id),
                callbacks=provider.register_carrier_service_callback,
                base_url=jasper.base_url if jasper is not None else (ts.base_url if ts is not None else None),
                tps=jasper.tps if jasper is not None else None,
                burst=jasper.tps_burst if jasper is not None else None,
                pod19=jasper.pod19 if jasper is not None else None,
                account=jasper.username if jasper is not None else (ts.account_number if ts is not None else None),
                login_paused=_login_paused(ts),
                callback_url=ts.callback_url if ts is not None else None,
            )
        )
    return rows


def _login_paused(ts: ThingSpaceAuthentication | None) -> str | None:
    if ts is None or ts.login_failed_at is None:
        return None
    why = (ts.login_failure_message or "login refused").splitlines()[0][:120]
    return f"since {ts.login_failed_at:%Y-%m-%d %H:%M} UTC: {why}"


def controlcenter_carrier_account(
    session: Session, provider_id: int, resolve: Callable[[str], str] | None = None
) -> CarrierAccount:
    """The port's ``CarrierAccount`` of a Control Center provider (``engine.accounts.load_account``): its
    settings, its decrypted API key and the carrier rate plans the deactivation pre-step may choose from.
    ``BulkFailure`` when the provider has no usable Control Center account."""
    return load_account(session, provider_id, resolve)
