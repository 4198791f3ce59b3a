"""What a worker needs to process a message: settings, database, transport, carrier client factory."""

from __future__ import annotations

import os
import random
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.orm import Session, sessionmaker

from bulkchange.carrier.thingspace.client import ThingSpaceClient
from bulkchange.carrier.thingspace.models import ThingSpaceConnection
from bulkchange.domain.retry import RetryPolicy
from bulkchange.engine.outage import Outage
from bulkchange.engine.ratelimit import DbRateLimiter, parse_rules
from bulkchange.queue.base import Transport
from bulkchange.settings import Settings
from bulkchange.store.tables import ThingSpaceAuthentication, utcnow

ClientFactory = Callable[[ThingSpaceAuthentication, "EngineContext"], ThingSpaceClient]
SecretResolver = Callable[[str], str]
"""Turns a stored credential field into its value (e.g. an ``ssm:/path`` reference; see bulkchange.aws)."""


def default_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass
class EngineContext:
    settings: Settings
    session_factory: sessionmaker[Session]
    transport: Transport
    client_factory: ClientFactory | None = None
    clock: Callable[[], datetime] = utcnow
    worker_id: str = field(default_factory=default_worker_id)
    rng: random.Random = field(default_factory=random.Random)
    secret_resolver: SecretResolver | None = None
    # One view per process of whether the database / the queue answers, shared by every loop that uses
    # this context (engine.outage): one warning per outage, and what /readyz reports.
    db_outage: Outage = field(init=False)
    queue_outage: Outage = field(init=False)

    def __post_init__(self) -> None:
        self.db_outage = Outage("database", self.outage_policy, rng=self.rng)
        self.queue_outage = Outage("queue", self.outage_policy, rng=self.rng)

    @property
    def retry_policy(self) -> RetryPolicy:
        s = self.settings
        return RetryPolicy(max_attempts=s.max_attempts, base_s=s.retry_base_s, cap_s=s.retry_cap_s)

    @property
    def outage_policy(self) -> RetryPolicy:
        """How soon an unreachable database or queue is tried again (never given up: attempts unbounded)."""
        s = self.settings
        return RetryPolicy(max_attempts=2**31, base_s=s.outage_retry_base_s, cap_s=s.outage_retry_cap_s)

    def make_client(self, auth: ThingSpaceAuthentication) -> ThingSpaceClient:
        if self.client_factory is not None:
            return self.client_factory(auth, self)
        return default_client(auth, self)


def connection_for(auth: ThingSpaceAuthentication, resolve: SecretResolver | None = None) -> ThingSpaceConnection:
    """The client's connection settings from the provider's ThingSpaceAuthentication row.

    Secrets stored encrypted (``enc:v1:…``) are decrypted here, the only place they are needed; ``resolve``
    (when given) maps each credential field to its value, so a row may hold references (``ssm:/path``,
    ``secretsmanager:name#key``) instead of the secrets themselves.
    """
    from bulkchange.security.crypto import SecretKeyError, reveal

    def value(raw: str, secret: bool = True) -> str:
        try:
            plain = reveal(raw) if secret else raw
        except SecretKeyError as exc:
            from bulkchange.engine.processor import BulkFailure

            raise BulkFailure(f"ThingSpace credentials cannot be decrypted: {exc}") from None
        if resolve is None:
            return plain
        resolved = resolve(plain)
        if secret and resolved is not plain:
            reveal(resolved)  # a value read from SSM / Secrets Manager is masked in logs too
        return resolved

    return ThingSpaceConnection(
        base_url=auth.base_url,
        token_url=auth.auth_token_url,
        login_url=auth.auth_url,
        client_id=value(auth.client_id, secret=False),
        client_secret=value(auth.client_secret),
        username=value(auth.username, secret=False),
        password=value(auth.password),
        account_name=auth.account_number,
    )


def default_client(auth: ThingSpaceAuthentication, ctx: EngineContext) -> ThingSpaceClient:
    from bulkchange.engine.login_guard import DbLoginGuard

    return ThingSpaceClient(
        connection_for(auth, ctx.secret_resolver),
        timeout=ctx.settings.carrier_timeout_s,
        max_attempts=ctx.settings.carrier_call_attempts,
        limiter=rate_limiter_for(auth, ctx),
        login_guard=DbLoginGuard(ctx.session_factory, auth.id),
    )


def rate_limiter_for(auth: ThingSpaceAuthentication, ctx: EngineContext) -> DbRateLimiter:
    """The shared limits of this provider's carrier account (the same account shares one budget)."""
    return DbRateLimiter(
        ctx.session_factory,
        scope=f"thingspace:{auth.base_url}:{auth.account_number}",
        rules=parse_rules(ctx.settings.carrier_rate_limits),
    )
