"""Carrier rate limits shared by every worker in every process, counted in the database.

ThingSpace allows 100 Activate requests per minute per account (thingspace-api.md §6.3). An in-memory
limiter would multiply with the number of workers and Lambda instances; this one keeps a sliding window
of request slots per (account, endpoint) in ``CarrierRateSlot``, taken under the limit row's lock, and the
carrier's own ``Retry-After`` in ``CarrierRateLimit.BlockedUntil`` so every worker honours a 429.

It plugs into the client's ``limiter`` hook: awaited before each request with the endpoint's name.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping

import structlog
from sqlalchemy import delete, func, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from bulkchange.carrier.port import RateRule
from bulkchange.carrier.rate_rules import parse_rate_rules
from bulkchange.store.tables import CarrierRateLimit, CarrierRateSlot

log = structlog.get_logger("bulkchange.ratelimit")

Rule = RateRule
"""At most ``limit`` requests in any ``period_s`` seconds (the port's ``RateRule``)."""
parse_rules = parse_rate_rules


class DbRateLimiter:
    """The limits of one carrier account (``scope``), shared through the database."""

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        *,
        scope: str,
        rules: Mapping[str, Rule],
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        max_sleep_s: float = 5.0,
    ) -> None:
        self._sessions = session_factory
        self._scope = scope
        self._rules = dict(rules)
        self._clock = clock
        self._sleep = sleep
        self._max_sleep_s = max_sleep_s
        self.waited_s = 0.0

    def key(self, endpoint: str) -> str:
        return f"{self._scope}|{endpoint}"[:200]

    async def __call__(self, endpoint: str) -> None:
        rule = self._rules.get(endpoint)
        if rule is None:
            return
        while True:
            wait = self.try_acquire(endpoint, rule)
            if wait <= 0:
                return
            log.info("rate limit: waiting", endpoint=endpoint, scope=self._scope, wait_s=round(wait, 3))
            self.waited_s += wait
            await self._sleep(min(wait, self._max_sleep_s))

    def try_acquire(self, endpoint: str, rule: Rule) -> float:
        """Take a slot now (returns 0) or say how long until one frees (seconds)."""
        key = self.key(endpoint)
        self._ensure(key)
        with self._sessions.begin() as session:
            limit = session.get(CarrierRateLimit, key, with_for_update=True)  # serialises this key's takers
            now = self._clock()
            if limit is not None and limit.blocked_until is not None and limit.blocked_until > now:
                return limit.blocked_until - now
            window_start = now - rule.period_s
            session.execute(
                delete(CarrierRateSlot).where(
                    CarrierRateSlot.limit_key == key, CarrierRateSlot.called_at <= window_start
                )
            )
            used, oldest = session.execute(
                select(func.count(), func.min(CarrierRateSlot.called_at)).where(CarrierRateSlot.limit_key == key)
            ).one()
            if int(used) < rule.limit:
                session.execute(insert(CarrierRateSlot).values(limit_key=key, called_at=now))
                return 0.0
            return max(0.001, float(oldest) + rule.period_s - now)

    def block(self, endpoint: str, seconds: float) -> None:
        """The carrier answered 429 with ``Retry-After``: every worker waits that long on this endpoint."""
        key = self.key(endpoint)
        self._ensure(key)
        until = self._clock() + seconds
        with self._sessions.begin() as session:
            limit = session.get(CarrierRateLimit, key, with_for_update=True)
            if limit is not None and (limit.blocked_until is None or limit.blocked_until < until):
                limit.blocked_until = until

    def _ensure(self, key: str) -> None:
        with self._sessions() as session:
            if session.get(CarrierRateLimit, key) is not None:
                return
        try:
            with self._sessions.begin() as session:
                session.add(CarrierRateLimit(limit_key=key))
        except IntegrityError:
            pass  # another worker created it first
