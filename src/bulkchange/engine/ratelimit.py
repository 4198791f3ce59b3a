"""Carrier rate limits shared by every worker in every process, counted in the database.

ThingSpace allows 100 Activate requests per minute per account; Control Center a few calls per second per
account, one at a time. An in-memory limiter would multiply with the number of workers and Lambda
instances; this one keeps, per carrier account (``scope``):

* a sliding window of request slots per endpoint in ``CarrierRateSlot``, taken under the limit row's lock
  (``"*"``: a rule on every call of the account, whatever its endpoint);
* the carrier's own ``Retry-After`` in ``CarrierRateLimit.BlockedUntil``, so every worker honours a 429
  (``block("*", s)`` pauses the whole account);
* with a ``TokenBucket``, the account's bucket as one number on the ``"*"`` row, ``BucketFullAt``: the moment
  the bucket would be full again given the calls counted so far. A call may go once the bucket holds a
  token, i.e. ``now >= BucketFullAt - (burst - 1) / rate``; counting a call at ``t`` sets
  ``BucketFullAt = max(BucketFullAt, t) + 1 / rate`` (the "virtual scheduling" form of a token bucket);
* with ``max_in_flight``, "call in flight" leases in ``CarrierInFlight``: one row per allowed concurrent call,
  taken with one conditional UPDATE before the request and given back after its answer. A lease has an
  expiry (``lease_s``), so a worker that died holding one blocks the account for that long at most. The
  tasks of one process first pass an in-memory gate of the same size (``_local_gate``): only the tasks that
  could hold a lease look for one in the database, the others wait without a query (a worker sends several
  batches at once, and each polling the database for the account's one lease cost more than the calls).

It plugs into the client's ``limiter`` hook: awaited before each request with the endpoint's name; a client
that knows ``release`` (Control Center's, ``ReleasingLimiter``) awaits it once the request is over.

Without an in-flight limit a window slot is written (and committed) before the request leaves. With one, the
lease is taken first, the window is only *checked* before the request, and the call is counted when the lease
is given back, stamped with the moment its answer was in. The carrier counts a call when it arrives, which is
somewhere between the moment it left and the moment its answer came back; on a busy machine the request can
leave a database commit or a scheduler delay later than planned and arrive well after it "left". The answer
is the only moment known to follow the carrier's count, so spacing each call from the previous call's answer
keeps them at least one period apart at the carrier whatever the delays (nobody else calls meanwhile: the
lease is still held until the count is written).

The same holds for the token bucket: checked against the moment a call leaves (no later than the carrier
counts it) and counted at its answer (no earlier), the bucket kept here is never fuller than the carrier's.
With a burst of 1 each call waits a whole period after the previous answer, so every call costs its round
trip on top of the period; with a burst of 2 or more the round trip is absorbed and calls follow each other
one period apart, the account's full rate.
"""

from __future__ import annotations

import asyncio
import functools
import os
import socket
import time
import uuid
import weakref
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

import structlog
from sqlalchemy import case, delete, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from bulkchange.carrier.port import RateRule, RateRules, TokenBucket
from bulkchange.carrier.rate_rules import parse_rate_rules
from bulkchange.store.db import read_only_session
from bulkchange.store.tables import CarrierInFlight, CarrierRateLimit, CarrierRateSlot

log = structlog.get_logger("bulkchange.ratelimit")

Rule = RateRule
"""At most ``limit`` requests in any ``period_s`` seconds (the port's ``RateRule``)."""
parse_rules = parse_rate_rules


EVERY_CALL = "*"
"""The endpoint name of a rule (and a block) on every call of the account."""
IN_FLIGHT = "in-flight"


@dataclass
class _Lease:
    """An in-flight lease this task holds, the endpoint of the request it let go ("": none left), and the
    process's gate this task passed to take it (given back with the lease)."""

    slot: int
    token: str
    endpoint: str = ""
    gate: asyncio.Semaphore | None = None


_GATES: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, asyncio.Semaphore]] = weakref.WeakKeyDictionary()


def _local_gate(key: str, size: int) -> asyncio.Semaphore:
    """The in-memory gate of an account's in-flight leases in this process and event loop: every limiter of
    the account here (one per carrier session) shares it."""
    gates = _GATES.setdefault(asyncio.get_running_loop(), {})
    gate = gates.get(key)
    if gate is None:
        gate = gates[key] = asyncio.Semaphore(size)
    return gate


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
        max_in_flight: int | None = None,
        bucket: TokenBucket | None = None,
        lease_s: float = 120.0,
        poll_s: float = 0.01,
    ) -> None:
        if max_in_flight is not None and max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1 (or None: no limit)")
        self._sessions = session_factory
        self._scope = scope
        self._rules = dict(rules)
        self._clock = clock
        self._sleep = sleep
        self._max_sleep_s = max_sleep_s
        self._max_in_flight = max_in_flight
        self._bucket = bucket
        self._lease_s = lease_s
        self._poll_s = poll_s
        self._owner = f"{socket.gethostname()}:{os.getpid()}"[:60]
        self._held: dict[object, list[_Lease]] = {}
        self._leases_ready = False
        self._present: set[str] = set()
        self.waited_s = 0.0

    @classmethod
    def for_account(
        cls,
        session_factory: sessionmaker[Session],
        *,
        scope: str,
        rules: RateRules,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        lease_s: float = 120.0,
        poll_s: float = 0.01,
    ) -> DbRateLimiter:
        """The limiter of an account's ``RateRules`` (per-endpoint windows, the token bucket, the in-flight
        limit).

        ``lease_s`` must be longer than the longest call (the client's timeout) plus the longest wait for the
        window: a lease that expires while its call is still open lets a second call in.
        """
        return cls(
            session_factory,
            scope=scope,
            rules=rules.per_endpoint,
            clock=clock,
            sleep=sleep,
            max_in_flight=rules.max_in_flight,
            bucket=rules.bucket,
            lease_s=lease_s,
            poll_s=poll_s,
        )

    def key(self, endpoint: str) -> str:
        return f"{self._scope}|{endpoint}"[:200]

    async def __call__(self, endpoint: str) -> None:
        """Return when a request to ``endpoint`` may go: an in-flight lease held (with ``max_in_flight``; give
        it back with ``release``), then a slot of the endpoint's rule and of the ``"*"`` rule, and a token of
        the account's bucket."""
        if self._max_in_flight is None:
            await self._take_slots(endpoint)
            return
        gate = _local_gate(self.key(IN_FLIGHT), self._max_in_flight)
        await gate.acquire()
        try:
            while True:
                await self._take_lease()
                leased_at = self._clock()
                await self._wait_for_slots(endpoint)
                # Only a wait long enough to endanger the lease (a long Retry-After) makes sure it is still
                # ours before the request leaves.
                if self._clock() - leased_at < self._lease_s / 2 or self._renew():
                    lease = self._held[_task_key()][-1]
                    lease.endpoint, lease.gate = endpoint, gate  # the request leaves now
                    return
        except BaseException:
            try:
                await self.release(endpoint)  # a lease taken, if any (the gate is not on it yet)
            finally:
                gate.release()
            raise

    async def release(self, endpoint: str) -> None:
        """The request this task started after ``__call__`` is over: count it in the window (now: its answer,
        if any, is in) and give its in-flight lease back, in one transaction, so the next holder sees both."""
        held = self._held.get(_task_key())
        if not held:
            return
        lease = held.pop()
        if not held:
            self._held.pop(_task_key(), None)
        try:
            self._give_back(lease)
        finally:
            if lease.gate is not None:
                lease.gate.release()

    def _give_back(self, lease: _Lease) -> None:
        with self._sessions.begin() as session:
            if lease.endpoint:
                answered_at = self._clock()
                self._record_slots(session, lease.endpoint, answered_at)
                self._record_token(session, answered_at)
            session.execute(
                update(CarrierInFlight)
                .where(
                    CarrierInFlight.limit_key == self.key(IN_FLIGHT),
                    CarrierInFlight.slot == lease.slot,
                    CarrierInFlight.owner == lease.token,
                )
                .values(owner=None, expires_at=None)
                .execution_options(synchronize_session=False)
            )

    def _record_slots(self, session: Session, endpoint: str, at: float) -> None:
        """The slots of a request counted ``at`` (its endpoint's rule and the ``"*"`` rule), and the window's
        expired slots removed."""
        for name, rule in self._rules_of(endpoint):
            key = self.key(name)
            session.execute(
                delete(CarrierRateSlot).where(
                    CarrierRateSlot.limit_key == key, CarrierRateSlot.called_at <= at - rule.period_s
                )
            )
            session.execute(insert(CarrierRateSlot).values(limit_key=key, called_at=at))

    def _record_token(self, session: Session, at: float) -> None:
        """A call counted ``at`` took a token of the account's bucket (one UPDATE: safe without the lease)."""
        if self._bucket is None:
            return
        full_at = CarrierRateLimit.bucket_full_at
        later = case((or_(full_at.is_(None), full_at < at), at), else_=full_at)
        session.execute(
            update(CarrierRateLimit)
            .where(CarrierRateLimit.limit_key == self.key(EVERY_CALL))
            .values(bucket_full_at=later + 1.0 / self._bucket.rate_per_s)
            .execution_options(synchronize_session=False)
        )

    async def _wait_for_slots(self, endpoint: str) -> None:
        """With the lease held: wait until the endpoint's rule and the ``"*"`` rule would each allow a call
        now, and the account's bucket holds a token (nothing is written; ``release`` counts the call)."""
        for name, rule in self._rules_of(endpoint):
            await self._wait_for(name, functools.partial(self.slot_wait, name, rule))
        await self._wait_for(EVERY_CALL, self.token_wait)

    async def _take_slots(self, endpoint: str) -> None:
        """Take a slot of the endpoint's rule and of the ``"*"`` rule, then a token of the account's bucket."""
        for name, rule in self._rules_of(endpoint):
            await self._wait_for(name, functools.partial(self.try_acquire, name, rule))
        await self._wait_for(EVERY_CALL, self.try_take_token)

    def _rules_of(self, endpoint: str) -> list[tuple[str, Rule]]:
        """The window rules a call to ``endpoint`` is under: its own, then the account's ``"*"``."""
        names = dict.fromkeys((endpoint, EVERY_CALL))
        return [(name, self._rules[name]) for name in names if name in self._rules]

    async def _wait_for(self, name: str, wait_now: Callable[[], float]) -> None:
        """Sleep until ``wait_now()`` answers 0 (it says how long to wait, or 0 when the call may go)."""
        while True:
            wait = wait_now()
            if wait <= 0:
                return
            log.info("rate limit: waiting", endpoint=name, scope=self._scope, wait_s=round(wait, 3))
            self.waited_s += wait
            await self._sleep(min(wait, self._max_sleep_s))

    async def _take_lease(self) -> None:
        while not self.try_lease():
            self.waited_s += self._poll_s
            await self._sleep(self._poll_s)

    def try_lease(self) -> bool:
        """Take a free in-flight lease of the account now (True), or say there is none (False)."""
        assert self._max_in_flight is not None
        key = self._ensure_leases()
        now = self._clock()
        free = or_(CarrierInFlight.owner.is_(None), CarrierInFlight.expires_at <= now)
        with self._sessions() as session:  # a read first: a waiting process polls without the write lock
            seen_free = session.execute(select(CarrierInFlight.slot).where(CarrierInFlight.limit_key == key, free))
            if seen_free.first() is None:
                return False
        token = f"{self._owner}:{uuid.uuid4().hex[:16]}"
        with self._sessions.begin() as session:
            for slot in range(self._max_in_flight):
                taken = session.execute(
                    update(CarrierInFlight)
                    .where(CarrierInFlight.limit_key == key, CarrierInFlight.slot == slot, free)
                    .values(owner=token, expires_at=now + self._lease_s)
                    .execution_options(synchronize_session=False)
                )
                if getattr(taken, "rowcount", 0) == 1:
                    self._held.setdefault(_task_key(), []).append(_Lease(slot, token))
                    return True
        return False

    def _renew(self) -> bool:
        """Extend this task's newest lease from now; False (and forgotten) when it expired and was taken."""
        held = self._held.get(_task_key())
        if not held:
            return False
        lease = held[-1]
        with self._sessions.begin() as session:
            renewed = session.execute(
                update(CarrierInFlight)
                .where(
                    CarrierInFlight.limit_key == self.key(IN_FLIGHT),
                    CarrierInFlight.slot == lease.slot,
                    CarrierInFlight.owner == lease.token,
                )
                .values(expires_at=self._clock() + self._lease_s)
                .execution_options(synchronize_session=False)
            )
        if getattr(renewed, "rowcount", 0) == 1:
            return True
        held.pop()
        return False

    def _ensure_leases(self) -> str:
        """The account's lease rows exist (created once, by whichever worker comes first)."""
        assert self._max_in_flight is not None
        key = self.key(IN_FLIGHT)
        if self._leases_ready:
            return key
        with read_only_session(self._sessions) as session:
            present = session.execute(select(func.count()).where(CarrierInFlight.limit_key == key)).scalar_one()
        for slot in range(int(present), self._max_in_flight):
            try:
                with self._sessions.begin() as session:
                    session.add(CarrierInFlight(limit_key=key, slot=slot))
            except IntegrityError:
                pass  # another worker created it first
        self._leases_ready = True
        return key

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

    def slot_wait(self, endpoint: str, rule: Rule) -> float:
        """How long until the window of ``endpoint`` allows a call (0: now), without taking a slot."""
        key = self.key(endpoint)
        self._ensure(key)
        with self._sessions() as session:
            now = self._clock()
            blocked_until = session.execute(
                select(CarrierRateLimit.blocked_until).where(CarrierRateLimit.limit_key == key)
            ).scalar_one_or_none()
            if blocked_until is not None and blocked_until > now:
                return float(blocked_until) - now
            recent = (
                session.execute(
                    select(CarrierRateSlot.called_at)
                    .where(CarrierRateSlot.limit_key == key, CarrierRateSlot.called_at > now - rule.period_s)
                    .order_by(CarrierRateSlot.called_at.desc())
                    .limit(rule.limit)
                )
                .scalars()
                .all()
            )
        if len(recent) < rule.limit:
            return 0.0
        return max(0.001, float(recent[-1]) + rule.period_s - now)

    def token_wait(self) -> float:
        """How long until the account's bucket holds a token and no 429 pauses the account (0: now), without
        taking it. Always 0 without a bucket."""
        if self._bucket is None:
            return 0.0
        key = self.key(EVERY_CALL)
        self._ensure(key)
        with self._sessions() as session:
            blocked_until, full_at = session.execute(
                select(CarrierRateLimit.blocked_until, CarrierRateLimit.bucket_full_at).where(
                    CarrierRateLimit.limit_key == key
                )
            ).one()
        return self._token_wait(self._clock(), blocked_until, full_at)

    def try_take_token(self) -> float:
        """Take a token of the account's bucket now (returns 0) or say how long until one is there. Without
        an in-flight limit a call is counted as it leaves: nothing later is known to come before its answer."""
        if self._bucket is None:
            return 0.0
        key = self.key(EVERY_CALL)
        self._ensure(key)
        with self._sessions.begin() as session:
            limit = session.get(CarrierRateLimit, key, with_for_update=True)  # serialises the account's takers
            assert limit is not None  # _ensure made it
            now = self._clock()
            wait = self._token_wait(now, limit.blocked_until, limit.bucket_full_at)
            if wait <= 0:
                limit.bucket_full_at = max(limit.bucket_full_at or now, now) + 1.0 / self._bucket.rate_per_s
            return wait

    def _token_wait(self, now: float, blocked_until: float | None, full_at: float | None) -> float:
        assert self._bucket is not None
        wait = 0.0
        if blocked_until is not None:
            wait = blocked_until - now
        if full_at is not None:
            tolerance = (self._bucket.burst - 1) / self._bucket.rate_per_s
            wait = max(wait, full_at - tolerance - now)
        return max(0.001, wait) if wait > 0 else 0.0

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
        """The limit row of ``key`` exists (rows are never deleted, so once seen it need not be read again)."""
        if key in self._present:
            return
        with read_only_session(self._sessions) as session:
            present = session.get(CarrierRateLimit, key) is not None
        if not present:
            try:
                with self._sessions.begin() as session:
                    session.add(CarrierRateLimit(limit_key=key))
            except IntegrityError:
                pass  # another worker created it first
        self._present.add(key)


def _task_key() -> object:
    """Who holds a lease: the running asyncio task (a limiter may serve several tasks of one worker)."""
    try:
        return asyncio.current_task()
    except RuntimeError:
        return None
