"""A service provider's carrier account: which carrier it speaks, its credentials read and decrypted.

Each carrier keeps its credentials in its own table (``ThingSpaceAuthentication``; ``JasperAuthentication``
for Control Center); this is the one place that knows which, and turns the row into the port's
``CarrierAccount``. Anything that stops the account from being used — no row, writes disabled, a secret
that cannot be decrypted or a reference (``ssm:``, ``secretsmanager:``) that cannot be resolved — is a
``BulkFailure`` with a one-line reason, shown on the bulk change.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.orm import Session

from bulkchange.carrier.catalogue import RatePlanOption, controlcenter_account, thingspace_account
from bulkchange.carrier.port import CarrierAccount
from bulkchange.domain.carriers import CarrierName
from bulkchange.domain.errors import BulkFailure
from bulkchange.security.crypto import SecretKeyError, reveal
from bulkchange.store.tables import (
    JasperAuthentication,
    JasperCarrierRatePlan,
    ServiceProvider,
    ThingSpaceAuthentication,
)

SecretResolver = Callable[[str], str]
"""Turns a stored credential field into its value (e.g. an ``ssm:/path`` reference; see bulkchange.aws)."""


def carrier_of(session: Session, provider_id: int) -> CarrierName:
    """The carrier a provider speaks; ``BulkFailure`` for an unknown provider or carrier."""
    integration = session.execute(
        select(ServiceProvider.integration_id).where(ServiceProvider.id == provider_id)
    ).scalar_one_or_none()
    if integration is None:
        raise BulkFailure(f"no service provider {provider_id}")
    try:
        return CarrierName.of_integration(integration)
    except ValueError as exc:
        raise BulkFailure(f"service provider {provider_id}: {exc}") from None


def load_account(
    session: Session, provider_id: int, resolve: SecretResolver | None = None, *, with_secrets: bool = True
) -> CarrierAccount:
    """The provider's usable carrier account (secrets decrypted and resolved), or ``BulkFailure`` saying why
    there is none. ``with_secrets=False`` leaves the secrets out (blank): enough to record outcomes, which
    never call the carrier."""
    carrier = carrier_of(session, provider_id)
    loader = _thingspace if carrier is CarrierName.THINGSPACE else _controlcenter
    return loader(session, provider_id, _Secrets(carrier, provider_id, resolve, with_secrets))


class _Secrets:
    """Decrypts (and resolves) one account's credential fields; a failure is a one-line BulkFailure."""

    def __init__(
        self, carrier: CarrierName, provider_id: int, resolve: SecretResolver | None, wanted: bool = True
    ) -> None:
        self.where = f"{carrier.display_name} credentials of service provider {provider_id}"
        self.resolve = resolve
        self.wanted = wanted

    def __call__(self, stored: str, *, secret: bool = True) -> str:
        if secret and not self.wanted:
            return ""
        try:
            plain = reveal(stored) if secret else stored
            if self.resolve is None:
                return plain
            resolved = self.resolve(plain)
            return reveal(resolved) if secret and resolved is not plain else resolved  # masked in logs too
        except SecretKeyError as exc:
            raise BulkFailure(f"{self.where} cannot be decrypted: {exc}") from None
        except Exception as exc:  # a reference, a region, a permission: whatever it is, the operator fixes it
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise BulkFailure(f"{self.where} cannot be read: {reason}") from None


def _writable(enabled: bool, where: str) -> None:
    if not enabled:
        raise BulkFailure(f"writes are disabled for {where} (WriteIsEnabled)")


def _thingspace(session: Session, provider_id: int, value: _Secrets) -> CarrierAccount:
    auth = session.execute(
        select(ThingSpaceAuthentication).where(
            ThingSpaceAuthentication.service_provider_id == provider_id,
            ThingSpaceAuthentication.is_deleted.is_(False),
            ThingSpaceAuthentication.is_active.is_(True),
        )
    ).scalar_one_or_none()
    if auth is None:
        raise BulkFailure(f"no ThingSpace authentication configured for service provider {provider_id}")
    _writable(auth.write_is_enabled, f"service provider {provider_id} (ThingSpaceAuthentication)")
    return thingspace_account(
        provider_id=provider_id,
        credential_id=auth.id,
        base_url=auth.base_url,
        account_number=auth.account_number,
        client_id=value(auth.client_id, secret=False),
        username=value(auth.username, secret=False),
        client_secret=value(auth.client_secret),
        password=value(auth.password),
        token_url=auth.auth_token_url,
        login_url=auth.auth_url,
        callback_url=auth.callback_url,
    )


def _controlcenter(session: Session, provider_id: int, value: _Secrets) -> CarrierAccount:
    auth = session.execute(
        select(JasperAuthentication).where(
            JasperAuthentication.service_provider_id == provider_id,
            JasperAuthentication.is_deleted.is_(False),
            JasperAuthentication.is_active.is_(True),
        )
    ).scalar_one_or_none()
    if auth is None:
        raise BulkFailure(f"no Control Center account configured for service provider {provider_id}")
    _writable(auth.write_is_enabled, f"service provider {provider_id} (JasperAuthentication)")
    plans = session.execute(
        select(JasperCarrierRatePlan).where(
            JasperCarrierRatePlan.service_provider_id == provider_id,
            JasperCarrierRatePlan.is_deleted.is_(False),
            JasperCarrierRatePlan.plan_mb.is_not(None),
            JasperCarrierRatePlan.base_rate.is_not(None),
        )
    ).scalars()
    return controlcenter_account(
        provider_id=provider_id,
        credential_id=auth.id,
        base_url=auth.base_url,
        username=value(auth.username, secret=False),
        api_key=value(auth.api_key),
        tps=auth.tps,
        burst=auth.tps_burst,
        pod19=auth.pod19,
        rate_plan_pre_step=auth.rate_plan_pre_step,
        write_is_enabled=auth.write_is_enabled,
        rate_plans=[RatePlanOption(p.rate_plan_code, float(p.plan_mb or 0), Decimal(p.base_rate or 0)) for p in plans],
    )
