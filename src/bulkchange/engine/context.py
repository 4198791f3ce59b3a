"""What the engine needs to process a message: settings, database, transport, the carriers it speaks.

Everything is given when the context is built (``bulkchange.runtime`` does it); nothing is attached later.
"""

from __future__ import annotations

import os
import random
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from bulkchange.carrier import catalogue
from bulkchange.carrier.port import Carrier, SessionServices
from bulkchange.domain.retry import RetryPolicy
from bulkchange.engine.accounts import SecretResolver
from bulkchange.jobs.outage import Outage
from bulkchange.queue.base import Transport
from bulkchange.settings import Settings
from bulkchange.store.tables import utcnow

ServicesHook = Callable[[SessionServices], SessionServices]
"""Adjusts what every carrier session is lent (the metrics wrap its limiter and HTTP transport)."""


def default_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def default_carriers() -> dict[str, Carrier]:
    """Every carrier API bulkchange speaks, by name (``ServiceProvider.IntegrationId`` names one)."""
    return catalogue.carriers()


@dataclass
class EngineContext:
    settings: Settings
    session_factory: sessionmaker[Session]
    transport: Transport
    carriers: Mapping[str, Carrier] = field(default_factory=default_carriers)
    clock: Callable[[], datetime] = utcnow
    worker_id: str = field(default_factory=default_worker_id)
    rng: random.Random = field(default_factory=random.Random)
    secret_resolver: SecretResolver | None = None
    services_hook: ServicesHook | None = None
    # One view per process of whether the database / the queue answers, shared by every loop that uses
    # this context (jobs.outage): one warning per outage, and what /readyz reports.
    db_outage: Outage = field(init=False)
    queue_outage: Outage = field(init=False)
    # What carrier sessions keep between messages in this process (engine.sessions: access and session
    # tokens, by account and credentials), so a worker logs in once per provider, not once per slice.
    carrier_memory: dict[str, dict[str, Any]] = field(init=False, default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.db_outage = Outage("database", self.outage_policy, rng=self.rng)
        self.queue_outage = Outage("queue", self.outage_policy, rng=self.rng)

    def carrier(self, name: str) -> Carrier:
        return self.carriers[name]

    @property
    def retry_policy(self) -> RetryPolicy:
        s = self.settings
        return RetryPolicy(max_attempts=s.max_attempts, base_s=s.retry_base_s, cap_s=s.retry_cap_s)

    @property
    def outage_policy(self) -> RetryPolicy:
        """How soon an unreachable database or queue is tried again (never given up: attempts unbounded)."""
        s = self.settings
        return RetryPolicy(max_attempts=2**31, base_s=s.outage_retry_base_s, cap_s=s.outage_retry_cap_s)
