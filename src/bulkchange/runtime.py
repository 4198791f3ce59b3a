"""Wiring from settings: database engine, session factory, transport, engine context and processor.

``DEVICE_BULK_CHANGE_QUEUE_URL`` set → the AWS SQS transport; unset → the embedded queue in the database.
Credential fields and the database URL may be ``ssm:``/``secretsmanager:`` references (bulkchange.aws).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from bulkchange.aws.credentials import CredentialResolver
from bulkchange.engine.context import ClientFactory, EngineContext
from bulkchange.engine.processor import Processor
from bulkchange.integrations.wiring import install as install_integrations
from bulkchange.jobs.embedded_queue import EmbeddedQueue
from bulkchange.queue.base import Transport
from bulkchange.settings import Settings
from bulkchange.store.db import make_engine, make_session_factory
from bulkchange.store.migrate import upgrade


@dataclass
class Runtime:
    settings: Settings
    engine: Engine
    session_factory: sessionmaker[Session]
    transport: Transport
    processor: Processor

    @property
    def ctx(self) -> EngineContext:
        return self.processor.ctx

    def close(self) -> None:
        self.engine.dispose()


def build_runtime(settings: Settings, *, migrate: bool = True, client_factory: ClientFactory | None = None) -> Runtime:
    """Everything a command needs, on the configured database (migrated to head unless told not to)."""
    resolver = credential_resolver(settings)
    database_url = resolver.resolve(settings.database_url)  # may be an ssm:/… or secretsmanager:… reference
    if migrate:
        upgrade(database_url)
    engine = make_engine(database_url)
    sessions = make_session_factory(engine)
    transport: Transport
    if settings.queue_url:
        from bulkchange.queue.sqs import SqsQueue

        transport = SqsQueue(
            settings.queue_url,
            region=settings.aws_region,
            endpoint_url=settings.aws_endpoint_url,
            visibility_timeout_s=settings.queue_visibility_timeout_s,
            wait_time_s=settings.sqs_wait_time_s,
        )
    else:
        transport = EmbeddedQueue(
            sessions, visibility_timeout_s=settings.queue_visibility_timeout_s, max_receives=settings.queue_max_receives
        )
    ctx = EngineContext(
        settings=settings,
        session_factory=sessions,
        transport=transport,
        client_factory=client_factory,
        secret_resolver=resolver,
    )
    processor = Processor(ctx)
    install_integrations(processor)  # billing, customer rate plans, the status-update webhook
    return Runtime(settings, engine, sessions, transport, processor)


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
