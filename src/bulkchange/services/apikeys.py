"""API keys: ``bck_`` + 43 url-safe characters (256 random bits), shown once, stored as SHA-256.

A key is scoped to a tenant (``ServiceProvider.TenantId``) and, optionally, to some of its service
providers. ``authenticate`` finds the row by the key's first characters (not secret), compares the hash in
constant time and returns the ``Principal``: the service providers the key may read and change.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from bulkchange.store.db import read_only_session
from bulkchange.store.tables import ApiKey, DeviceBulkChange, ServiceProvider, utcnow

KEY_PREFIX = "bck_"
PREFIX_LENGTH = 12  # "bck_" + 8 characters: enough to find the row, far too little to guess the key


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key's id and tenant, and every service provider it may act on."""

    key_id: int
    tenant_id: int
    service_provider_ids: frozenset[int]

    def may_use(self, service_provider_id: int | None) -> bool:
        return service_provider_id is not None and service_provider_id in self.service_provider_ids


@dataclass(frozen=True)
class CreatedKey:
    id: int
    key: str
    """The key itself: shown once, never stored."""


def _ids_text(ids: Iterable[int]) -> str | None:
    unique = sorted({int(i) for i in ids})
    return ",".join(str(i) for i in unique) if unique else None


def create_key(
    session: Session, *, tenant_id: int, service_provider_ids: Iterable[int] = (), name: str | None = None
) -> CreatedKey:
    """A new key for ``tenant_id`` (every one of its providers, or only ``service_provider_ids``).

    The providers named must belong to the tenant. Commits.
    """
    ids = sorted({int(i) for i in service_provider_ids})
    if ids:
        owned = set(
            session.execute(
                select(ServiceProvider.id).where(ServiceProvider.id.in_(ids), ServiceProvider.tenant_id == tenant_id)
            ).scalars()
        )
        missing = [i for i in ids if i not in owned]
        if missing:
            raise ValueError(f"service provider(s) {missing} do not exist or do not belong to tenant {tenant_id}")
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    row = ApiKey(
        name=name,
        tenant_id=tenant_id,
        service_provider_ids=_ids_text(ids),
        key_prefix=key[:PREFIX_LENGTH],
        key_hash=hash_key(key),
    )
    session.add(row)
    session.commit()
    return CreatedKey(row.id, key)


def list_keys(session: Session) -> list[ApiKey]:
    """Every API key row, oldest first (their hashes only: a key is shown once, when it is created)."""
    return list(session.execute(select(ApiKey).order_by(ApiKey.id)).scalars())


def revoke_key(session: Session, key_id: int) -> bool:
    row = session.get(ApiKey, key_id)
    if row is None or row.revoked_date is not None:
        return False
    row.revoked_date = utcnow()
    session.commit()
    return True


def authenticate(session: Session, key: str | None) -> Principal | None:
    """The principal of a valid, unrevoked key; None otherwise (a wrong key and no key look the same)."""
    if not key or not key.startswith(KEY_PREFIX) or len(key) > 200:
        return None
    # Not registered with the redaction layer by value (an attacker's guesses would grow it): API keys are
    # masked by their shape (``bck_…``).
    presented = hash_key(key)
    match: ApiKey | None = None
    for row in session.execute(select(ApiKey).where(ApiKey.key_prefix == key[:PREFIX_LENGTH])).scalars():
        if hmac.compare_digest(row.key_hash, presented) and row.revoked_date is None:
            match = row
    if match is None:
        return None
    owned = set(
        session.execute(select(ServiceProvider.id).where(ServiceProvider.tenant_id == match.tenant_id)).scalars()
    )
    if match.service_provider_ids:
        owned &= {int(i) for i in match.service_provider_ids.split(",") if i.strip()}
    return Principal(match.id, match.tenant_id, frozenset(owned))


def principal_of(session_factory: sessionmaker[Session], key: str | None) -> Principal | None:
    """``authenticate`` in a session that only reads: every API request checks its key, and on SQLite an
    ordinary session would queue for the write lock behind the workers and the callback receiver."""
    with read_only_session(session_factory) as session:
        return authenticate(session, key)


def owned_bulk(session: Session, principal: Principal, bulk_change_id: int) -> DeviceBulkChange | None:
    """The bulk change, if the principal may see it (another tenant's is reported as not found)."""
    bulk = session.get(DeviceBulkChange, bulk_change_id)
    if bulk is None or not principal.may_use(bulk.service_provider_id):
        return None
    return bulk
