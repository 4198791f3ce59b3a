"""The composition root: from settings, the database, the queue, the engine and the integrations.

``DEVICE_BULK_CHANGE_QUEUE_URL`` set → the AWS SQS transport; unset → the embedded queue in the database.
Credential fields and the database URL may be ``ssm:``/``secretsmanager:`` references (bulkchange.aws).
Everything is handed over when it is built: the integrations' kinds of work are registered with the engine
here, not attached to it afterwards. A command that only reads rows opens the database alone
(``bulkchange.database``), without the queue, the engine or the carriers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine as SqlEngine
from sqlalchemy.orm import Session, sessionmaker

from bulkchange.database import credential_resolver, open_database
from bulkchange.engine.context import EngineContext, ServicesHook
from bulkchange.engine.engine import Engine
from bulkchange.integrations.kinds import Integrations, integrations_for
from bulkchange.integrations.settings import IntegrationSettings
from bulkchange.jobs.embedded_queue import EmbeddedQueue
from bulkchange.queue.base import Transport
from bulkchange.queue.sqs import SqsQueue
from bulkchange.settings import Settings
from bulkchange.store.db import read_only_session
from bulkchange.store.migrate import upgrade
from bulkchange.store.schema import require_head


@dataclass
class Runtime:
    """What a command needs: the database, the queue, the engine and the integrations registered with it."""

    settings: Settings
    db: SqlEngine
    session_factory: sessionmaker[Session]
    transport: Transport
    engine: Engine
    integrations: Integrations

    @property
    def ctx(self) -> EngineContext:
        return self.engine.ctx

    def reading(self) -> Session:
        """A session for a request that only reads (a page, a list, a status): on SQLite it neither waits for
        nor holds the write lock, so an operator watching a run never holds up the workers or the callback
        receiver's acknowledgements (``store.db.read_only_session``). Never write through it."""
        return read_only_session(self.session_factory)

    def use_integrations(self, integrations: Integrations) -> Integrations:
        """Run these integrations instead (other settings, a stand-in Rev.io): the engine is built again with
        them registered, as ``build_runtime`` does."""
        self.integrations = integrations
        self.engine = Engine(self.ctx, extra_sources=integrations.sources())
        return integrations

    def close(self) -> None:
        self.db.dispose()


def build_runtime(
    settings: Settings,
    *,
    migrate: bool = True,
    services_hook: ServicesHook | None = None,
    integration_settings: IntegrationSettings | None = None,
) -> Runtime:
    """Everything a command needs, on the configured database (migrated to head unless told not to).

    ``services_hook`` adjusts what every carrier session is lent (``metrics.observe_carrier_calls``).
    """
    resolver = credential_resolver(settings)
    database_url = resolver.resolve(settings.database_url)  # may be an ssm:/… or secretsmanager:… reference
    if migrate:
        upgrade(database_url)
    database = open_database(database_url)
    db, sessions = database.db, database.session_factory
    transport = _transport(settings, sessions)
    ctx = EngineContext(
        settings=settings,
        session_factory=sessions,
        transport=transport,
        secret_resolver=resolver,
        services_hook=services_hook,
    )
    integrations = integrations_for(ctx, integration_settings)  # billing, customer rate plans, webhooks
    engine = Engine(ctx, extra_sources=integrations.sources())
    return Runtime(settings, db, sessions, transport, engine, integrations)


def command_runtime(settings: Settings, *, migrate: bool = False, **kwargs: Any) -> Runtime:
    """What a command runs on: the database must exist at the schema head (``SchemaNotReady`` names it and
    says to run ``bulkchange db upgrade``) unless ``migrate`` (an explicit ``--migrate``) upgrades it. No
    command creates an empty database by itself."""
    if not migrate:
        require_head(credential_resolver(settings).resolve(settings.database_url))
    return build_runtime(settings, migrate=migrate, **kwargs)


def _transport(settings: Settings, sessions: sessionmaker[Session]) -> Transport:
    """SQS when a queue URL is configured, else the embedded queue in the database."""
    if settings.queue_url:
        return SqsQueue(
            settings.queue_url,
            region=settings.aws_region,
            endpoint_url=settings.aws_endpoint_url,
            visibility_timeout_s=settings.queue_visibility_timeout_s,
            wait_time_s=settings.sqs_wait_time_s,
        )
    return EmbeddedQueue(
        sessions, visibility_timeout_s=settings.queue_visibility_timeout_s, max_receives=settings.queue_max_receives
    )
