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

from sqlalchemy.orm import Session, sessionmaker

from bulkchange.database import Database, credential_resolver, open_database
from bulkchange.engine.context import EngineContext, ServicesHook
from bulkchange.engine.engine import Engine
from bulkchange.integrations.kinds import Integrations, integrations_for
from bulkchange.integrations.settings import IntegrationSettings
from bulkchange.jobs.embedded_queue import EmbeddedQueue
from bulkchange.queue.base import Transport
from bulkchange.queue.sqs import SqsQueue
from bulkchange.settings import Settings
from bulkchange.store.migrate import upgrade
from bulkchange.store.schema import require_head


@dataclass
class Runtime(Database):
    """What a command needs: the database (its sessions, ``reading()``, ``close()``), the queue, the engine and
    the integrations registered with it."""

    settings: Settings
    transport: Transport
    engine: Engine
    integrations: Integrations

    @property
    def ctx(self) -> EngineContext:
        return self.engine.ctx

    def use_integrations(self, integrations: Integrations) -> Integrations:
        """Run these integrations instead (other settings, a stand-in Rev.io): the engine is built again with
        them registered, as ``build_runtime`` does."""
        self.integrations = integrations
        self.engine = Engine(self.ctx, extra_sources=integrations.sources())
        return integrations


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
    sessions = database.session_factory
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
    return Runtime(database.db, sessions, settings, transport, engine, integrations)


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
