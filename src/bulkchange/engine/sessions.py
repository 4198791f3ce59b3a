"""Opening a carrier session for an account: the shared limiter, the login guard and the time budgets the
engine lends every carrier call."""

from __future__ import annotations

import hashlib
from typing import Any

from bulkchange.carrier.port import CarrierAccount, CarrierSession, SessionServices
from bulkchange.domain.carriers import CarrierName
from bulkchange.domain.deadline import Deadline
from bulkchange.engine.context import EngineContext
from bulkchange.engine.login_guard import DbLoginGuard
from bulkchange.engine.ratelimit import DbRateLimiter


def limiter_for(ctx: EngineContext, account: CarrierAccount) -> DbRateLimiter:
    """The account's limits, shared through the database by every worker (same account, same budget)."""
    carrier = ctx.carrier(account.carrier)
    s = ctx.settings
    return DbRateLimiter.for_account(
        ctx.session_factory,
        scope=carrier.limit_scope(account),
        rules=carrier.rate_rules(account, s.carrier_rate_limits),
        # An in-flight lease must outlive the longest call it covers, retries included.
        lease_s=s.carrier_in_flight_lease_s or max(120.0, s.carrier_timeout_s * s.carrier_call_attempts + 30.0),
    )


def memory_for(ctx: EngineContext, account: CarrierAccount) -> dict[str, Any]:
    """What sessions of ``account`` keep between messages in this process (``SessionServices.reuse``).

    Keyed by provider, credential row and a digest of the credentials as resolved now: changed or rotated
    credentials get a fresh slot (a new login), never the tokens of the old ones. What is kept expires as
    the carrier said, and a refused token or session is dropped by the session that met the refusal.
    """
    digest = hashlib.sha256(
        repr(
            (account.base_url, account.account, sorted(account.fields.items()), sorted(account.secrets.items()))
        ).encode()
    ).hexdigest()[:32]
    key = f"{account.carrier}:{account.provider_id}:{account.credential_id}:{digest}"
    return ctx.carrier_memory.setdefault(key, {})


def open_session(ctx: EngineContext, account: CarrierAccount, *, deadline: Deadline | None = None) -> CarrierSession:
    """A session for ``account`` (nothing is sent until it is used; close it with ``aclose``)."""
    limiter = limiter_for(ctx, account)
    services = SessionServices(
        limiter=limiter,
        # ThingSpace locks a user after a few failed logins: after one, nobody tries until an operator says.
        login_guard=(
            DbLoginGuard(ctx.session_factory, account.credential_id)
            if account.carrier == CarrierName.THINGSPACE.value
            else None
        ),
        timeout_s=ctx.settings.carrier_timeout_s,
        call_attempts=ctx.settings.carrier_call_attempts,
        on_rate_limited=limiter.block,  # the carrier said 429: every worker of the account waits it out
        deadline=deadline,
        reuse=memory_for(ctx, account),
    )
    if ctx.services_hook is not None:
        services = ctx.services_hook(services)
    return ctx.carrier(account.carrier).connect(account, services)


def operator_services(ctx: EngineContext, account: CarrierAccount) -> SessionServices:
    """What an operator's one-off carrier call (registering a callback listener) is lent: the same login
    guard and time budgets as the workers' calls, no shared limiter (a handful of calls, not device work)."""
    services = SessionServices(
        login_guard=(
            DbLoginGuard(ctx.session_factory, account.credential_id)
            if account.carrier == CarrierName.THINGSPACE.value
            else None
        ),
        timeout_s=ctx.settings.carrier_timeout_s,
        call_attempts=ctx.settings.carrier_call_attempts,
    )
    return ctx.services_hook(services) if ctx.services_hook is not None else services
