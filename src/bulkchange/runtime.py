"""Wiring from settings: database engine, session factory, transport, engine context and processor."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from bulkchange.engine.context import ClientFactory, EngineContext
from bulkchange.engine.processor import Processor
from bulkchange.queue.base import Transport
from bulkchange.queue.embedded import EmbeddedQueue
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


def build_runtime(
    settings: Settings, *, migrate: bool = True, client_factory: ClientFactory | None = None
) -> Runtime:
    """Everything a command needs, on the configured database (migrated to head unless told not to)."""
    if migrate:
        upgrade(settings.database_url)
    engine = make_engine(settings.database_url)
    sessions = make_session_factory(engine)
    if settings.queue_url:
        raise NotImplementedError(
            "DEVICE_BULK_CHANGE_QUEUE_URL is set, but the AWS SQS transport is not part of this build yet; "
            "unset it to use the embedded queue"
        )
    transport = EmbeddedQueue(
        sessions, visibility_timeout_s=settings.queue_visibility_timeout_s, max_receives=settings.queue_max_receives
    )
    ctx = EngineContext(settings=settings, session_factory=sessions, transport=transport, client_factory=client_factory)
    return Runtime(settings, engine, sessions, transport, Processor(ctx))
