"""One message through the seed's flow, top-down::

    SQS message → read attributes → load the bulk change → the provider's carrier account →
    authenticate (ThingSpace: access token, session token) → the device changes (a slice) or the deferred
    check → update the database (per batch) → follow-up message → the bulk change's status

The database row is the source of truth; the message only wakes a worker. Any number of messages for the
same bulk change — duplicated, redelivered, malformed — can arrive: the row claims decide who sends.
"""

from __future__ import annotations

import math

import structlog

from bulkchange.carrier import errors as cerr
from bulkchange.carrier.port import CarrierAccount, CarrierSession
from bulkchange.domain.carriers import CarrierName
from bulkchange.domain.deadline import Deadline
from bulkchange.domain.errors import BulkFailure
from bulkchange.domain.statuses import FINISHED_BULK_STATUSES, BulkStatus
from bulkchange.engine.accounts import load_account
from bulkchange.engine.bulk_status import fail_bulk, refresh_status
from bulkchange.engine.check_round import check_round, check_scheduled
from bulkchange.engine.context import EngineContext
from bulkchange.engine.follow_up import follow_up
from bulkchange.engine.sessions import open_session
from bulkchange.engine.slice import process_slice
from bulkchange.engine.wakeups import clear_due_wake, wake
from bulkchange.queue.base import ReceivedMessage
from bulkchange.queue.message import BulkChangeMessage, MalformedMessage
from bulkchange.store.db import read_only_session
from bulkchange.store.tables import DeviceBulkChange, ServiceProvider

log = structlog.get_logger("bulkchange.engine")

_NOT_PROCESSING = frozenset(s.value for s in FINISHED_BULK_STATUSES)
"""A message for these is ignored: finished, or failed at bulk level (``resume`` sets it going again)."""


async def handle(ctx: EngineContext, received: ReceivedMessage, *, deadline: Deadline | None = None) -> None:
    """One queue message (the seed's ProcessEventAsync). Returns normally when the message may be deleted.

    A malformed message is refused with a logged error; when its BulkChangeId is still readable a clean
    wake-up replaces it, so nothing is lost. Unexpected errors propagate: the message is not deleted and
    comes back after its visibility timeout, while the bulk change stays resumable in the database.
    """
    try:
        message = BulkChangeMessage.from_attributes(received.attributes)
    except MalformedMessage as exc:
        log.error(
            "malformed message refused",
            message_id=received.message_id,
            reason=exc.reason,
            bulk_change_id=exc.bulk_change_id,
        )
        if exc.bulk_change_id is not None:
            wake(ctx, exc.bulk_change_id, delay_s=0, force=True)
        return
    await process(ctx, message, deadline=deadline)


async def process(ctx: EngineContext, message: BulkChangeMessage, *, deadline: Deadline | None = None) -> None:
    """The flow for one readable message (every log line of it carries its bulk_change_id)."""
    with structlog.contextvars.bound_contextvars(bulk_change_id=message.bulk_change_id):
        started = _start(ctx, message)
        if started is None:
            return
        bulk, message = started
        try:
            with read_only_session(ctx.session_factory) as db:
                account = load_account(db, bulk.service_provider_id, ctx.secret_resolver)
            if not await _with_session(ctx, account, message, bulk, deadline):
                return
        except BulkFailure as exc:
            log.error("bulk change failed", reason=str(exc))
            fail_bulk(ctx, bulk.id, str(exc), description=_failure_description(ctx, bulk))
            return
        follow_up(ctx, bulk.id, message)
        refresh_status(ctx, bulk.id)


def _start(ctx: EngineContext, message: BulkChangeMessage) -> tuple[DeviceBulkChange, BulkChangeMessage] | None:
    """Load the bulk change; None when there is nothing to do (unknown, or no longer processing). A check
    message for another round than the one scheduled is only a wake-up."""
    with ctx.session_factory() as db:
        bulk = db.get(DeviceBulkChange, message.bulk_change_id)
        if bulk is None:
            log.warning("no bulk change for message")
            return None
        if bulk.status in _NOT_PROCESSING:
            log.info("bulk change not processing; message ignored", status=bulk.status)
            return None
        if message.is_retry_new_activate_thingspace_device and message.retry_number != bulk.check_round:
            # A stale duplicate, or a RetryNumber that would end the check early: a wake-up, never a round.
            log.warning(
                "activation check message for another round; handled as a wake-up",
                round=message.retry_number,
                scheduled_round=bulk.check_round,
            )
            message = message.model_copy(update={"is_retry_new_activate_thingspace_device": False, "retry_number": 0})
        elif not message.is_retry_new_activate_thingspace_device:
            # Only a plain wake-up is what NextWakeAt stands for. A check message leaves it alone: the current
            # round's is replaced by the next round's (schedule_check), and a stale one's arrival says nothing
            # about the wake-up pending now — clearing it made the pending round look lost, so it was sent again.
            clear_due_wake(ctx, bulk)
        if bulk.status == BulkStatus.NEW.value:
            bulk.status = BulkStatus.PROCESSING.value
            bulk.modified_date = ctx.clock()
        db.commit()
        db.expunge(bulk)
        return bulk, message


async def _with_session(
    ctx: EngineContext,
    account: CarrierAccount,
    message: BulkChangeMessage,
    bulk: DeviceBulkChange,
    deadline: Deadline | None,
) -> bool:
    """Authenticate, then the slice (and the scheduled checks that are due) or the check round. False when
    the flow stops here (authentication to be tried again later)."""
    session = open_session(ctx, account, deadline=deadline)
    try:
        if not await _authenticate(ctx, session, account, message, bulk):
            return False
        if message.is_retry_new_activate_thingspace_device:
            await check_round(ctx, session, bulk, account, message.retry_number)
        else:
            await check_scheduled(ctx, session, bulk, account)
            await process_slice(ctx, session, bulk, account, deadline=deadline)
        return True
    finally:
        await session.aclose()


async def _authenticate(
    ctx: EngineContext,
    session: CarrierSession,
    account: CarrierAccount,
    message: BulkChangeMessage,
    bulk: DeviceBulkChange,
) -> bool:
    """The carrier's login before any device is touched. Refused credentials fail the bulk change
    (resumable); a transient failure is retried by a delayed message until the attempts run out; a rate
    refusal is retried without counting as an attempt."""
    name = CarrierName(account.carrier).display_name
    try:
        await session.authenticate()
    except cerr.AuthenticationFailed as exc:
        raise BulkFailure(f"{_short(account)} authentication failed: {exc.message}") from exc
    except cerr.DeadlineExceeded:
        wake(ctx, bulk.id, delay_s=0)  # no time left in this invocation: not an attempt, try again at once
        return False
    except cerr.RateLimited as exc:
        _retry_login_later(ctx, message, exc)
        return False
    except cerr.CarrierError as exc:
        attempt = message.retry_number + 1
        if attempt >= ctx.settings.max_attempts:
            raise BulkFailure(f"{name} authentication unavailable after {attempt} attempts: {exc.message}") from exc
        retry_after = exc.retry_after if isinstance(exc, cerr.RateLimited) else None
        delay = int(min(900, ctx.retry_policy.delay_s(attempt, retry_after_s=retry_after, rng=ctx.rng)))
        log.warning("authentication transient failure; retrying", delay_s=delay, error=str(exc))
        ctx.transport.send(message.model_copy(update={"retry_number": attempt}), delay_s=delay)
        return False
    return True


RATE_LIMITED_LOGIN_MIN_DELAY_S = 1
"""The shortest wait after a login refused for its rate (carriers count per second at the finest)."""


def _retry_login_later(ctx: EngineContext, message: BulkChangeMessage, exc: cerr.RateLimited) -> None:
    """The login was refused for the account's rate (429): the carrier is busy, not broken, so this never
    uses up the bulk change's attempts. The same message comes back after ``Retry-After`` (or a backoff of
    the current attempt); the session has already paused the account for every worker."""
    backoff = ctx.retry_policy.delay_s(message.retry_number + 1, retry_after_s=exc.retry_after, rng=ctx.rng)
    delay = int(min(900, max(RATE_LIMITED_LOGIN_MIN_DELAY_S, math.ceil(backoff))))
    log.warning("authentication refused for the account's rate; retrying", delay_s=delay, error=str(exc))
    ctx.transport.send(message, delay_s=delay)


def _short(account: CarrierAccount) -> str:
    """The carrier's short name in messages (``ThingSpace authentication failed: …``)."""
    return "ThingSpace" if account.carrier == CarrierName.THINGSPACE.value else "Control Center"


def _failure_description(ctx: EngineContext, bulk: DeviceBulkChange) -> str:
    """The bulk log row's title for a bulk-level failure, naming the carrier when it is known."""
    from_id = {c.integration_id: c for c in CarrierName}
    with ctx.session_factory() as db:
        provider = db.get(ServiceProvider, bulk.service_provider_id)
    carrier = from_id.get(provider.integration_id) if provider is not None else None
    if carrier is CarrierName.THINGSPACE:
        return "ThingSpace Device Status Update: ThingSpace API"
    if carrier is CarrierName.CONTROLCENTER:
        return "Update Jasper Status: Jasper API"
    return "Device Status Update"
