"""Credentials at rest: set them (encrypted), report how they are stored, re-encrypt them with the current key.

Used by ``bulkchange credentials …``. Nothing here returns or prints a secret.
"""

from __future__ import annotations

import secrets
from collections import Counter
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from bulkchange.security.crypto import is_reference, keyring, reveal
from bulkchange.security.transport import require_https
from bulkchange.store.tables import (
    Base,
    IntegrationAuthentication,
    JasperAuthentication,
    ThingSpaceAuthentication,
    WebhookDestination,
)

SECRET_COLUMNS: tuple[tuple[type[Base], tuple[str, ...]], ...] = (
    (ThingSpaceAuthentication, ("client_secret", "password", "callback_password")),
    (JasperAuthentication, ("api_key",)),
    (IntegrationAuthentication, ("password", "subscription_key")),
    (WebhookDestination, ("secret",)),
)


REFERENCE_COLUMNS: tuple[tuple[type[Base], tuple[str, ...]], ...] = (
    (ThingSpaceAuthentication, ("client_id", "client_secret", "username", "password")),
    (IntegrationAuthentication, ("username", "password", "subscription_key")),
    (WebhookDestination, ("secret",)),
)
"""Every stored credential field that is resolved when used, so may hold an ssm: / secretsmanager: reference."""


def stored_references(session: Session) -> list[tuple[str, str]]:
    """``(where, reference)`` for each ssm: / secretsmanager: reference stored in a credential row in use
    (ThingSpace and billing rows that are active and not deleted, every webhook destination)."""
    found: list[tuple[str, str]] = []
    for table, columns in REFERENCE_COLUMNS:
        query = select(table)
        if table is not WebhookDestination:
            query = query.where(table.is_active.is_(True), table.is_deleted.is_(False))  # type: ignore[attr-defined]
        for row in session.execute(query.order_by(table.id)).scalars():  # type: ignore[attr-defined]
            for column in columns:
                value = getattr(row, column)
                if value and is_reference(value):
                    found.append((f"{table.__tablename__} {row.id} {column}", value))  # type: ignore[attr-defined]
    return found


def classify(stored: str | None) -> str:
    """``empty``, ``reference``, ``plaintext``, ``current`` (first key) or ``old-key``."""
    if not stored:
        return "empty"
    if is_reference(stored):
        return "reference"
    if not stored.startswith("enc:"):
        return "plaintext"
    return "current" if keyring().is_current(stored) else "old-key"


def status(session: Session) -> dict[str, int]:
    """How many secret fields are stored each way (see ``classify``); fields not set (a provider without
    callback credentials yet) are not counted."""
    counts: Counter[str] = Counter()
    for table, columns in SECRET_COLUMNS:
        for row in session.execute(select(table)).scalars():
            for column in columns:
                kind = classify(getattr(row, column))
                if kind != "empty":
                    counts[kind] += 1
    return dict(sorted(counts.items()))


@dataclass(frozen=True)
class RotationResult:
    encrypted: int  # plaintext fields now encrypted
    reencrypted: int  # fields moved from an older key to the current one
    unchanged: int  # already current, or references (fields not set are not counted)


def rotate(session: Session) -> RotationResult:
    """Every secret field encrypted with the current (first) key; plaintext rows encrypted. One transaction.

    Raises ``SecretKeyError`` (and changes nothing) when a field was encrypted with a key no longer listed.
    """
    ring = keyring()
    encrypted = reencrypted = unchanged = 0
    for table, columns in SECRET_COLUMNS:
        for row in session.execute(select(table).with_for_update()).scalars():
            for column in columns:
                stored = getattr(row, column)
                kind = classify(stored)
                if kind == "empty":
                    continue
                if kind in ("reference", "current"):
                    unchanged += 1
                    continue
                plaintext = ring.decrypt(stored)
                # Assigning the plaintext makes the ORM write it; EncryptedSecret encrypts with the first key.
                setattr(row, column, plaintext)
                _touch(row, column)  # a plaintext row's value does not change: write it anyway
                if kind == "plaintext":
                    encrypted += 1
                else:
                    reencrypted += 1
    session.commit()
    return RotationResult(encrypted, reencrypted, unchanged)


def set_thingspace(
    session: Session,
    service_provider_id: int,
    *,
    client_id: str | None = None,
    client_secret: str | None = None,
    username: str | None = None,
    password: str | None = None,
) -> None:
    """Replace some of a provider's ThingSpace credentials (secrets stored encrypted); clears the login guard."""
    auth = session.execute(
        select(ThingSpaceAuthentication).where(ThingSpaceAuthentication.service_provider_id == service_provider_id)
    ).scalar_one_or_none()
    if auth is None:
        raise KeyError(f"no ThingSpace authentication for service provider {service_provider_id}")
    if client_id is not None:
        auth.client_id = client_id
    if username is not None:
        auth.username = username
    if client_secret is not None:
        auth.client_secret = client_secret
    if password is not None:
        auth.password = password
    if any(v is not None for v in (client_id, client_secret, username, password)):
        auth.login_failed_at = None
        auth.login_failure_message = None
    for column in ("client_secret", "password"):
        value = getattr(auth, column)
        if classify(value) == "plaintext":
            setattr(auth, column, value)  # a legacy plaintext field left as is: encrypt it too
            _touch(auth, column)
    session.commit()


def set_controlcenter(
    session: Session,
    service_provider_id: int,
    *,
    username: str | None = None,
    api_key: str | None = None,
) -> None:
    """Replace a provider's Control Center user name and / or API key (the key stored encrypted)."""
    auth = session.execute(
        select(JasperAuthentication).where(
            JasperAuthentication.service_provider_id == service_provider_id, JasperAuthentication.is_deleted.is_(False)
        )
    ).scalar_one_or_none()
    if auth is None:
        raise KeyError(f"no Control Center account for service provider {service_provider_id}")
    if username is not None:
        if not username.strip():
            raise ValueError("the user name cannot be empty")
        auth.username = username.strip()
    if api_key is not None:
        auth.api_key = api_key
    elif classify(auth.api_key) == "plaintext":
        _touch(auth, "api_key")  # a legacy plaintext key left as is: encrypt it too
    session.commit()


def new_callback_credentials() -> tuple[str, str]:
    """A fresh random username and password for a provider's callback listener.

    ThingSpace echoes both in plain text in every callback body; neither is a human password, so both are
    random: the username (12 hex digits after a fixed prefix, so it reads as ours in ThingSpace's listing)
    and a 43-character password (256 bits). Only URL-safe characters, as a carrier form may be picky.
    """
    return f"bulkchange-{secrets.token_hex(6)}", secrets.token_urlsafe(32)


def set_callback(
    session: Session,
    service_provider_id: int,
    *,
    username: str | None = None,
    password: str | None = None,
    rotate: bool = False,
) -> tuple[str, str]:
    """Store a provider's callback credentials (the password encrypted); returns the pair now stored.

    ``rotate`` generates a new pair (to be registered with ThingSpace); otherwise ``username`` and/or
    ``password`` replace what is stored — e.g. the values a listener was already registered with. The
    result must be complete (both set): a half-configured pair is refused with ``ValueError``.
    """
    auth = session.execute(
        select(ThingSpaceAuthentication).where(ThingSpaceAuthentication.service_provider_id == service_provider_id)
    ).scalar_one_or_none()
    if auth is None:
        raise KeyError(f"no ThingSpace authentication for service provider {service_provider_id}")
    if rotate and (username is not None or password is not None):
        raise ValueError("give either a new callback username/password or --rotate-callback, not both")
    if rotate:
        username, password = new_callback_credentials()
    user = username if username is not None else auth.callback_username
    secret = password if password is not None else (reveal(auth.callback_password) if auth.callback_password else None)
    if not user or not secret:
        raise ValueError(
            f"service provider {service_provider_id} would have only half of its callback credentials: give both "
            "--callback-username and --callback-password (or --rotate-callback)"
        )
    auth.callback_username = user
    if password is not None:
        auth.callback_password = password
    session.commit()
    return user, secret


def set_billing(
    session: Session,
    integration_authentication_id: int,
    *,
    base_url: str | None = None,
    username: str | None = None,
    password: str | None = None,
    subscription_key: str | None = None,
) -> None:
    """Replace some of a Rev.io authentication's fields (secrets stored encrypted)."""
    auth = session.get(IntegrationAuthentication, integration_authentication_id)
    if auth is None:
        raise KeyError(f"no integration authentication {integration_authentication_id}")
    if base_url is not None:
        auth.base_url = require_https(base_url, "base URL").rstrip("/")
    if username is not None:
        auth.username = username
    if password is not None:
        auth.password = password
    if subscription_key is not None:
        auth.subscription_key = subscription_key
    for column in ("password", "subscription_key"):
        value = getattr(auth, column)
        if classify(value) == "plaintext":
            _touch(auth, column)
    session.commit()


def _touch(row: Base, column: str) -> None:
    """Make the ORM write ``column`` even though its value did not change (so EncryptedSecret encrypts it)."""
    from sqlalchemy.orm.attributes import flag_modified

    flag_modified(row, column)
