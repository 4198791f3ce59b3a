"""A tenant's billing objects: Rev.io credentials (``IntegrationAuthentication``) and customer rate plans.

What ``bulkchange billing …`` and ``bulkchange rate-plans …`` do, kept here so the CLI holds no SQL.
Credentials are stored encrypted by their column type; nothing here ever returns a secret.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bulkchange.store.tables import CustomerRatePlan, IntegrationAuthentication


class RatePlanExists(ValueError):
    """The tenant already has a customer rate plan (or pool) of that name (names are unique per tenant)."""


@dataclass(frozen=True)
class BillingAccount:
    """One Rev.io credential as listed: no password, no subscription key."""

    id: int
    tenant_id: int
    name: str | None
    base_url: str
    user: str
    active: bool


def add_billing_account(
    session: Session,
    *,
    tenant_id: int,
    base_url: str,
    username: str,
    client_code: str,
    password: str,
    subscription_key: str,
    name: str | None = None,
) -> int:
    """Store a tenant's Rev.io credentials; returns the ``IntegrationAuthenticationId`` changes name."""
    row = IntegrationAuthentication(
        tenant_id=tenant_id,
        name=name,
        base_url=base_url.rstrip("/"),
        username=username,
        client_code=client_code,
        password=password,
        subscription_key=subscription_key,
    )
    session.add(row)
    session.flush()
    return row.id


def list_billing_accounts(session: Session, tenant_id: int | None = None) -> list[BillingAccount]:
    """Every Rev.io credential (of one tenant, when given), oldest first."""
    query = select(IntegrationAuthentication).order_by(IntegrationAuthentication.id)
    if tenant_id is not None:
        query = query.where(IntegrationAuthentication.tenant_id == tenant_id)
    return [
        BillingAccount(
            id=a.id,
            tenant_id=a.tenant_id,
            name=a.name,
            base_url=a.base_url,
            user=f"{a.username}@{a.client_code}",
            active=bool(a.is_active and not a.is_deleted),
        )
        for a in session.execute(query).scalars()
    ]


def add_rate_plan(
    session: Session, *, tenant_id: int, name: str, pool: bool = False, display_name: str | None = None
) -> int:
    """Add a customer rate plan (or pool) a change of the tenant may name; ``RatePlanExists`` when taken.

    The unique key ``UQ_CustomerRatePlan_TenantId_Name`` decides, so two operators adding the same name at
    once get one plan and one refusal. Runs in a savepoint: the caller's transaction stays usable.
    """
    try:
        with session.begin_nested():
            row = CustomerRatePlan(tenant_id=tenant_id, name=name, is_pool=pool, display_name=display_name)
            session.add(row)
            session.flush()
    except IntegrityError as exc:
        raise RatePlanExists(f"tenant {tenant_id} already has a customer rate plan named {name!r}") from exc
    return row.id


def list_rate_plans(session: Session, tenant_id: int | None = None) -> Sequence[CustomerRatePlan]:
    """The customer rate plans and pools not deleted (of one tenant, when given), by tenant then id."""
    query = select(CustomerRatePlan).where(CustomerRatePlan.is_deleted.is_(False))
    if tenant_id is not None:
        query = query.where(CustomerRatePlan.tenant_id == tenant_id)
    return list(session.execute(query.order_by(CustomerRatePlan.tenant_id, CustomerRatePlan.id)).scalars())
