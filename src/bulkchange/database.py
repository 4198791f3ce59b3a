"""The configured database alone, for what only reads and writes rows: ``bulkchange status``, ``list``,
``export``.

``bulkchange.runtime`` composes everything a worker or the service runs (the queue, the engine, the carrier
adapters, the integrations); a command that only reads bulk changes needs none of it, and importing it was
most of such a command's start-up. This is the part of the composition both share: the database URL
resolved (it may be an ``ssm:``/``secretsmanager:`` reference), the schema head checked, an engine and a
session factory.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from bulkchange.security.references import CredentialResolver
from bulkchange.settings import Settings
from bulkchange.store.db import make_engine, make_session_factory, read_only_session
from bulkchange.store.schema import require_head


@dataclass
class Database:
    """An engine on the configured database and its sessions; ``close`` releases its connections."""

    db: Engine
    session_factory: sessionmaker[Session]

    def reading(self) -> Session:
        """A session for a command that only reads (``list``, ``status``): on SQLite it neither waits for nor
        holds the write lock a running worker and receiver take turns on. Never write through it."""
        return read_only_session(self.session_factory)

    def close(self) -> None:
        self.db.dispose()


def database_url(settings: Settings) -> str:
    """``BULKCHANGE_DATABASE_URL``, a credential reference resolved."""
    return credential_resolver(settings).resolve(settings.database_url)


def command_database(settings: Settings) -> Database:
    """The configured database, which must exist at the schema head (``SchemaNotReady`` names it and says to
    run ``bulkchange db upgrade``); nothing is created or migrated."""
    url = database_url(settings)
    require_head(url)
    return open_database(url)


def open_database(url: str) -> Database:
    """An engine and session factory on ``url`` (resolved already); the schema is not checked."""
    db = make_engine(url)
    return Database(db, make_session_factory(db))


_resolvers: dict[tuple[float, str | None, str | None], CredentialResolver] = {}


def credential_resolver(settings: Settings) -> CredentialResolver:
    """The process-wide resolver for these settings, so its TTL cache outlives one runtime (a warm Lambda)."""
    key = (settings.credentials_cache_ttl_s, settings.aws_region, settings.aws_endpoint_url)
    resolver = _resolvers.get(key)
    if resolver is None:
        resolver = _resolvers.setdefault(
            key,
            CredentialResolver(
                ttl_s=settings.credentials_cache_ttl_s,
                region=settings.aws_region,
                endpoint_url=settings.aws_endpoint_url,
            ),
        )
    return resolver
