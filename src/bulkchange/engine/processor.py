"""The processor: one message in, the seed's flow, follow-up messages out.

Reads top-down like the seed's diagram::

    SQS message → read attributes → load bulk change → ThingSpace authentication → access token →
    session token → process the device changes (Add / Activate / Deactivate / …) → update the database →
    mark processed → follow-up message (continuation, retry or the deferred activation check)

The database row is the source of truth; the message only wakes a worker. Any number of messages for
the same bulk change — duplicated, redelivered, malformed — can arrive: the row claims decide who sends.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol

import structlog
from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from bulkchange.carrier import errors as cerr
from bulkchange.carrier.thingspace.client import ThingSpaceClient
from bulkchange.carrier.thingspace.models import CallbackMessage
from bulkchange.domain.outcomes import Kind, LogEntry, Outcome, expecting
from bulkchange.domain.statuses import IN_FLIGHT_CHANGE_STATUSES, BulkStatus, ChangeStatus, compute_bulk_status
from bulkchange.engine import changes as ch
from bulkchange.engine.carrier_steps import send_batch
from bulkchange.engine.context import EngineContext, rate_limiter_for
from bulkchange.engine.logbook import write_logs
from bulkchange.engine.outbox import WakeupRelay
from bulkchange.engine.recording import early_callbacks, record_outcomes
from bulkchange.engine.verification import (
    Binding,
    CallbackMatch,
    any_pending_callback,
    callback_log,
    callback_outcomes,
    check_awaiting,
    insert_callback,
    insert_callbacks,
    late_report,
    match_callbacks,
    pending_callbacks,
    read_requested,
    reconcile,
    record_late_report,
    settled_elsewhere,
    settled_its_change,
)
from bulkchange.queue.base import ReceivedMessage
from bulkchange.queue.message import BulkChangeMessage, MalformedMessage
from bulkchange.store.db import read_only_session
from bulkchange.store.tables import (
    DeviceBulkChange,
    M2MDeviceChange,
    ThingSpaceAuthentication,
    ThingSpaceCallBackResponseLog,
    utcnow,
)

log = structlog.get_logger("bulkchange.engine")

BulkTerminalHook = Callable[[Session, DeviceBulkChange], None]


class _Claim(Protocol):
    """``changes.claim`` and ``changes.claim_expired_sending``: one bulk change's rows, leased to a worker."""

    def __call__(
        self, session: Session, bulk_change_id: int, *, worker: str, lease_s: int, now: datetime, limit: int
    ) -> list[M2MDeviceChange]: ...


class SideWork(Protocol):
    """Work the worker loop drives besides messages: the additional steps (billing) and webhook delivery
    (``bulkchange.integrations.wiring``), kept in the database like everything else."""

    async def run_due(self) -> int:
        """Do what is due now; return how much was done (0 = nothing was due)."""
        ...

    def next_due_in_s(self) -> float | None:
        """Seconds until something is due (0 = now), or None when nothing is waiting."""
        ...


class BulkFailure(Exception):
    """A bulk-level failure (credentials refused, writes disabled): the bulk change goes ERROR, resumable."""


class Processor:
    """Processes bulk change messages. Stateless between messages except for the injected context."""

    def __init__(
        self,
        ctx: EngineContext,
        *,
        on_bulk_terminal: BulkTerminalHook | None = None,
        side_work: Sequence[SideWork] = (),
    ) -> None:
        self.ctx = ctx
        self.on_bulk_terminal = on_bulk_terminal
        self.side_work = list(side_work)
        self.wakeups = WakeupRelay(ctx)  # submissions' wake-ups the queue did not take at once (engine.outbox)
        self._applying = threading.Lock()  # one callback applier per process at a time (see apply_callback)

    # ------------------------------------------------------------------ entry point (ProcessEventAsync)

    async def handle(self, received: ReceivedMessage) -> None:
        """One queue message. Returns normally when the message may be deleted.

        A malformed message is refused with a logged error; when its BulkChangeId is still readable a clean
        wake-up replaces it, so nothing is lost. Unexpected errors propagate: the message is not deleted and
        comes back after its visibility timeout (and ends in the dead-letter queue after too many tries),
        while the bulk change itself stays resumable in the database.
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
                self.wake(exc.bulk_change_id, delay_s=0, force=True)
            return
        await self.process(message)

    async def process(self, message: BulkChangeMessage) -> None:
        # Every log line of this message carries bulk_change_id (structlog contextvars; logging_setup).
        with structlog.contextvars.bound_contextvars(bulk_change_id=message.bulk_change_id):
            await self._process(message)

    async def _process(self, message: BulkChangeMessage) -> None:
        bulk_id = message.bulk_change_id
        with self.ctx.session_factory() as session:
            bulk = session.get(DeviceBulkChange, bulk_id)
            if bulk is None:
                log.warning("no bulk change for message", bulk_change_id=bulk_id)
                return
            if bulk.status in (BulkStatus.PROCESSED.value, BulkStatus.ERROR.value):
                log.info("bulk change not processing; message ignored", bulk_change_id=bulk_id, status=bulk.status)
                return
            if message.is_retry_new_activate_thingspace_device and message.retry_number != bulk.check_round:
                # Not the round this bulk change scheduled (a stale duplicate, or a message whose
                # RetryNumber would end the check early): only a wake-up, never a check round.
                log.warning(
                    "activation check message for another round; handled as a wake-up",
                    bulk_change_id=bulk_id,
                    round=message.retry_number,
                    scheduled_round=bulk.check_round,
                )
                message = message.model_copy(
                    update={"is_retry_new_activate_thingspace_device": False, "retry_number": 0}
                )
            self._clear_due_wake(session, bulk)
            auth = self._authentication(session, bulk)
            if bulk.status == BulkStatus.NEW.value:
                bulk.status = BulkStatus.PROCESSING.value
                bulk.modified_date = self.ctx.clock()
            session.commit()
        bound = log.bind(bulk_change_id=bulk_id)
        try:
            if auth is None:
                raise BulkFailure(
                    f"no ThingSpace authentication configured for service provider {bulk.service_provider_id}"
                )
            if not auth.write_is_enabled:
                raise BulkFailure(
                    "writes are disabled for this service provider (ThingSpaceAuthentication.WriteIsEnabled)"
                )
            async with self.ctx.make_client(auth) as client:
                if not await self._authenticate(client, message, bulk):
                    return
                if message.is_retry_new_activate_thingspace_device:
                    await self._check_round(client, bulk, auth, message.retry_number)
                else:
                    await self._process_slice(client, bulk, auth)
        except BulkFailure as exc:
            bound.error("bulk change failed", reason=str(exc))
            self._fail_bulk(bulk_id, str(exc))
            return
        self._follow_up(bulk_id, message)
        self.refresh_status(bulk_id)

    # ---------------------------------------------------------------------- authentication (steps D-F)

    def _authentication(self, session: Session, bulk: DeviceBulkChange) -> ThingSpaceAuthentication | None:
        return session.execute(
            select(ThingSpaceAuthentication).where(
                ThingSpaceAuthentication.service_provider_id == bulk.service_provider_id,
                ThingSpaceAuthentication.is_deleted.is_(False),
                ThingSpaceAuthentication.is_active.is_(True),
            )
        ).scalar_one_or_none()

    async def _authenticate(self, client: ThingSpaceClient, message: BulkChangeMessage, bulk: DeviceBulkChange) -> bool:
        """Access token, then session token. Refused credentials fail the bulk change (resumable);
        a transient failure is retried by a delayed message until the attempts run out."""
        try:
            await client.authenticate()
        except cerr.AuthenticationFailed as exc:
            raise BulkFailure(f"ThingSpace authentication failed: {exc.message}") from exc
        except cerr.CarrierError as exc:
            attempt = message.retry_number + 1
            if attempt >= self.ctx.settings.max_attempts:
                raise BulkFailure(
                    f"ThingSpace authentication unavailable after {attempt} attempts: {exc.message}"
                ) from exc
            delay = int(
                min(900, self.ctx.retry_policy.delay_s(attempt, retry_after_s=_retry_after(exc), rng=self.ctx.rng))
            )
            log.warning(
                "authentication transient failure; retrying", bulk_change_id=bulk.id, delay_s=delay, error=str(exc)
            )
            self.ctx.transport.send(message.model_copy(update={"retry_number": attempt}), delay_s=delay)
            return False
        return True

    # --------------------------------------------------------------- the device changes (ProcessBulkChange)

    async def _process_slice(
        self, client: ThingSpaceClient, bulk: DeviceBulkChange, auth: ThingSpaceAuthentication
    ) -> None:
        """Work in a bounded slice (count and time); the follow-up message continues where this stops.

        Up to ``carrier_concurrency`` batches are at the carrier at once, each claimed, sent and recorded on
        its own, and as soon as one is recorded the next is claimed and sent — a pipeline, not rounds. In
        rounds (claim four, wait for all four, claim again) the rest of the changes, and the second step of
        two-step changes (Add, then Activate), waited for the slowest batch of the round to be recorded
        (bench/throughput.py, 10,000 on SQLite with the intake changes of the same evening: 10.2 → 8.6 s, one
        run each; docs/benchmarks.md).
        A failed batch stops the claiming; the batches still in flight are sent and recorded before the
        failure is raised (a refused login first), so none is left half-done by its neighbour's error.
        """
        s = self.ctx.settings
        deadline = time.monotonic() + s.slice_max_seconds
        room = s.slice_max_changes
        in_flight: set[asyncio.Task[None]] = set()
        failures: list[BaseException] = []
        await self._reconcile_expired(client, bulk, auth)
        try:
            while True:
                while not failures and len(in_flight) < s.carrier_concurrency and room > 0:
                    if time.monotonic() >= deadline:
                        break
                    batch = self._claim(ch.claim, bulk.id, limit=min(s.batch_max_devices, room))
                    if not batch:
                        break
                    room -= len(batch)
                    in_flight.add(asyncio.create_task(self._send_and_record(client, bulk, auth, batch)))
                if not in_flight:
                    break
                done, in_flight = await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
                failures.extend(exc for task in done if (exc := task.exception()) is not None)
                if not failures:
                    await self._reconcile_expired(client, bulk, auth)
        finally:
            for task in in_flight:  # only when this slice itself is cancelled (worker shutdown)
                task.cancel()
            if in_flight:
                await asyncio.gather(*in_flight, return_exceptions=True)
        if failures:
            raise next((f for f in failures if isinstance(f, BulkFailure)), failures[0])

    def _claim(self, claim: _Claim, bulk_id: int, *, limit: int) -> list[M2MDeviceChange]:
        """Run one of the claims of ``engine.changes`` as this worker, now, with the configured lease."""
        with self.ctx.session_factory() as session:
            return claim(
                session,
                bulk_id,
                worker=self.ctx.worker_id,
                lease_s=self.ctx.settings.lease_seconds,
                now=self.ctx.clock(),
                limit=limit,
            )

    async def _send_and_record(
        self,
        client: ThingSpaceClient,
        bulk: DeviceBulkChange,
        auth: ThingSpaceAuthentication,
        batch: list[M2MDeviceChange],
    ) -> None:
        """One claimed batch: one carrier request, then its outcomes written in one transaction."""
        step = ch.current_step(batch[0])
        ids = [c.id for c in batch]
        # Every log line of this batch carries its change ids (change_id when the batch is one change).
        with structlog.contextvars.bound_contextvars(change_id=ids[0] if len(ids) == 1 else None, change_ids=ids):
            try:
                outcomes = expecting(
                    await send_batch(client, step, batch, ch.request_of(batch[0]), account=auth.account_number),
                    ChangeStatus.SENDING,
                    {c.id: c.correlation_id for c in batch},
                )
            except cerr.AuthenticationFailed as exc:
                self._release(batch)
                raise BulkFailure(f"ThingSpace authentication failed: {exc.message}") from exc
            # Any other failure: not knowing whether the request left, the rows stay SENDING; their lease
            # expires and they are reconciled, never blindly resent.
            self._record(bulk, auth, outcomes)
            retry_after = max((o.retry_after_s or 0.0 for o in outcomes if o.kind is Kind.RETRY), default=0.0)
            if retry_after > 0:  # the carrier said 429: every worker of this account waits it out
                rate_limiter_for(auth, self.ctx).block(f"devices/actions/{step.value.lower()}", retry_after)

    async def _reconcile_expired(
        self, client: ThingSpaceClient, bulk: DeviceBulkChange, auth: ThingSpaceAuthentication
    ) -> None:
        """SENDING rows whose lease expired (a crash, or an unknown outcome held for a moment): read first."""
        s = self.ctx.settings
        while True:
            rows = self._claim(ch.claim_expired_sending, bulk.id, limit=s.batch_max_devices)
            if not rows:
                return
            outcomes = await reconcile(self.ctx, client, rows)
            self._record(bulk, auth, expecting(outcomes, ChangeStatus.SENDING, {c.id: c.correlation_id for c in rows}))

    def _release(self, batch: list[M2MDeviceChange]) -> None:
        """Put a claimed batch back untouched (the request never left: authentication failed first)."""
        with self.ctx.session_factory.begin() as session:
            for change in batch:
                row = session.get(M2MDeviceChange, change.id)
                if row is not None and row.status == ChangeStatus.SENDING.value:
                    ch.to_ready(row, next_attempt_at=None, refund_attempt=True)

    def _record(self, bulk: DeviceBulkChange, auth: ThingSpaceAuthentication | None, outcomes: list[Outcome]) -> None:
        with self.ctx.session_factory.begin() as session:
            awaiting = record_outcomes(session, self.ctx, bulk, auth, outcomes)
            early = early_callbacks(session, awaiting)
        if early:
            log.info("applying callbacks that arrived before their requestId was recorded", count=len(early))
            self.apply_pending_callbacks()

    # ------------------------------------------------------------------- verification (deferred check)

    async def _check_round(
        self, client: ThingSpaceClient, bulk: DeviceBulkChange, auth: ThingSpaceAuthentication, round_: int
    ) -> None:
        """One round of the one deferred check per bulk change (IsRetryNewActivateThingSpaceDevice)."""
        limit = self.ctx.settings.update_device_status_retry_number
        final = round_ >= limit
        last_id = 0
        while True:
            with self.ctx.session_factory() as session:
                rows = list(
                    session.execute(
                        select(M2MDeviceChange)
                        .where(
                            M2MDeviceChange.bulk_change_id == bulk.id,
                            M2MDeviceChange.status == ChangeStatus.AWAITING_RESULT.value,
                            M2MDeviceChange.id > last_id,
                        )
                        .order_by(M2MDeviceChange.id)
                        .limit(self.ctx.settings.batch_max_devices)
                    ).scalars()
                )
            if not rows:
                break
            last_id = rows[-1].id
            outcomes = expecting(
                await check_awaiting(self.ctx, client, rows, final=final), ChangeStatus.AWAITING_RESULT
            )
            self._record(bulk, auth, outcomes)
        log.info("activation check round done", bulk_change_id=bulk.id, round=round_, final=final)

    # ----------------------------------------------------------------------------- callbacks (one place)

    def apply_callback(self, payload: dict[str, Any], *, service_provider_id: int | None) -> str:
        """Store one CarrierService callback as received for ``service_provider_id`` and apply what is pending.

        Returns ``applied`` or ``unmatched`` when this call applied it, ``duplicate`` for a replay, and
        ``stored`` when another thread is already applying: that thread's batch (or the worker loop's
        next ``apply_pending_callbacks``) takes it. Under a burst, callbacks are stored one by one and
        applied many at a time — one transaction and one status refresh per batch, not per callback.
        A callback stored without a provider settles nothing.
        """
        stored_id = self.ingest_callback(payload, service_provider_id=service_provider_id)
        if stored_id is None:
            return "duplicate"
        if not self._applying.acquire(blocking=False):
            return "stored"
        try:
            self.apply_pending_callbacks()
        finally:
            self._applying.release()
        with self.ctx.session_factory() as session:
            row = session.get(ThingSpaceCallBackResponseLog, stored_id)
            if row is not None and settled_its_change(row):
                return "applied"
            return "unmatched" if row is not None and row.outcome is not None else "stored"

    def ingest_callback(self, payload: dict[str, Any], *, service_provider_id: int | None) -> int | None:
        """Record a callback (deduplicated by requestId + device) and nothing else: the receiver's fast path.

        ``service_provider_id`` is the provider whose URL it was posted to (and whose credentials it
        echoed): the only provider whose changes it may settle. Returns the stored row's id, or None for a
        duplicate. Raises ``pydantic.ValidationError`` when the body is not a callback.
        """
        message = CallbackMessage.model_validate(payload)
        with self.ctx.session_factory.begin() as session:
            stored = insert_callback(session, payload, message, service_provider_id=service_provider_id)
            return None if stored is None else stored.id

    def ingest_callbacks(self, items: Sequence[tuple[dict[str, Any], CallbackMessage, int | None]]) -> list[int | None]:
        """Record many callbacks in one transaction (the receiver's group commit): each as its body, the
        receiver's validated reading of it and its service provider. Per item the stored row's id, or None
        for a duplicate."""
        with self.ctx.session_factory.begin() as session:
            return insert_callbacks(session, items)

    def apply_pending_callbacks(self, *, limit: int = 2000) -> int:
        """Apply every stored callback not yet applied, in batches: one transaction and one status refresh per
        batch, not per callback. Returns how many callbacks settled a change."""
        return self.apply_callbacks_after(0, limit=limit)[0]

    def apply_callbacks_after(self, after_id: int, *, limit: int = 2000) -> tuple[int, int]:
        """Apply the stored callbacks not yet applied whose row id is above ``after_id``.

        Returns how many settled a change and the highest row id examined, so a caller that wakes for each
        new callback (``CallbackApplier``) reads only what is new instead of every callback still waiting
        for its change. A callback that matches nothing yet stays pending: it may be early (its change has
        not recorded the requestId), and is applied when the change records it (``early_callbacks``) or by
        the next full pass; past ``callback_match_grace_s`` it is marked unmatched. Only a ``VERDICT``
        (``verification.match_callbacks``: the URL's provider, the change's requestId, its current step)
        settles a change; a callback for a change without requestId has its device read instead.
        """
        applied = 0
        # A read first: the worker loop's sweep and most of an applier's nudges find nothing new, and must
        # not queue for (on SQLite) or take the write lock to learn it.
        with read_only_session(self.ctx.session_factory) as probe:
            if not any_pending_callback(probe, after_id=after_id):
                return applied, after_id
        while True:
            touched: set[int] = set()
            to_read: set[int] = set()
            # No autoflush: every statement of the pass (the bulk, the change rows, each device table, the
            # log rows) flushed the ORM changes made since the last one, four flushes a pass; one at commit
            # writes the same rows in fewer statements (~4 % of the applier's CPU). Nothing here reads back
            # an attribute the ORM still holds unflushed.
            with self.ctx.session_factory.begin() as session, session.no_autoflush:
                pending = pending_callbacks(session, limit=limit, after_id=after_id)
                if not pending:
                    break
                after_id = pending[-1].id
                by_bulk, to_read = self._judge_callbacks(session, match_callbacks(session, pending))
                for bulk_id, outcomes in by_bulk.items():
                    bulk = session.get(DeviceBulkChange, bulk_id)
                    assert bulk is not None
                    record_outcomes(session, self.ctx, bulk, self._authentication(session, bulk), outcomes)
                    applied += len(outcomes)
                    touched.add(bulk_id)
            for bulk_id in to_read:
                self.wake(bulk_id, delay_s=0)  # its next slice reconciles the change whose device is to be read
            for bulk_id in touched:
                self.refresh_status(bulk_id)
        return applied, after_id

    def _judge_callbacks(
        self, session: Session, matches: Sequence[CallbackMatch]
    ) -> tuple[dict[int, list[Outcome]], set[int]]:
        """Each matched callback's effect: verdicts as outcomes by bulk change, the bulk changes with a device
        to read; the rest recorded on the callback row (and on its change's log when it has one)."""
        grace = timedelta(seconds=self.ctx.settings.callback_match_grace_s)
        now = self.ctx.clock()
        settled = settled_elsewhere(session, [m.stored for m in matches if m.change is None])
        by_bulk: dict[int, list[Outcome]] = {}
        to_read: set[int] = set()
        logs: list[LogEntry] = []
        for match in matches:
            stored, message, change = match.stored, match.message, match.change
            if change is None:
                late = settled.get(stored.id)
                if late is not None:
                    stored.outcome = f"not applied: the change was already {late.status}"  # e.g. the check got there
                    logs.append(self._late_callback(session, message, late))
                elif now - stored.received_date > grace:
                    stored.outcome = "unmatched: no change of this provider awaits this requestId and device"
                continue
            stored.m2m_device_change_id = change.id
            if match.binding is Binding.READ:
                entry = read_requested(session, change, message, now)
                if entry is None:
                    stored.outcome = f"not applied: the change was already {change.status}"
                    continue
                logs.append(entry)
                stored.outcome = "not a verdict: the change had no requestId; its device is read instead"
                to_read.add(change.bulk_change_id)
            elif match.binding is Binding.WRONG_STEP:
                step = ch.current_step(change).value.lower()
                note = f"not applied: it answers '{message.operation}', the change awaits its {step}"
                logs.append(callback_log(message, change, note))
                stored.outcome = note[:200]
            else:
                outcome = expecting([callback_outcomes(message, change)], ChangeStatus.AWAITING_RESULT)[0]
                stored.outcome = outcome.details[:200]
                by_bulk.setdefault(change.bulk_change_id, []).append(outcome)
        write_logs(session, logs, process_by=self.ctx.settings.process_by)
        return by_bulk, to_read

    def _late_callback(self, session: Session, message: CallbackMessage, change: M2MDeviceChange) -> LogEntry:
        """A callback for a change already settled: always on the change's log; when it contradicts how the
        change was settled (a refusal for a PROCESSED change, …), flagged on the change itself too."""
        report = late_report(message, change)
        if report is None:
            return callback_log(message, change, f"arrived after the change was {change.status}; not applied")
        note, code = report
        record_late_report(session, change, note, code)
        log.warning(
            "late callback contradicts a settled change",
            change_id=change.id,
            bulk_change_id=change.bulk_change_id,
            status=change.status,
            request_id=message.request_id,
            code=code,
        )
        return callback_log(message, change, f"arrived after the change was {change.status}: {note}")

    # ------------------------------------------------------------------------ follow-ups (requeue)

    def _follow_up(self, bulk_id: int, message: BulkChangeMessage) -> None:
        """Continuation, retry and deferred-check messages, each sent once however many workers ran.

        Reads what is left in one short transaction and acts after it (each action takes its own), so
        no transaction is held open while another one is started (on SQLite they would wait for each other).
        """
        now = self.ctx.clock()
        s = self.ctx.settings
        with self.ctx.session_factory() as session:
            counts = ch.counts_by_status(session, bulk_id)
            ready_due = ch.earliest(session, bulk_id, ChangeStatus.READY, "next_attempt_at")
            lease_due = ch.earliest(session, bulk_id, ChangeStatus.SENDING, "lease_expires_at")
        if counts.get(ChangeStatus.READY, 0):
            wait = 0.0 if ready_due is None else max(0.0, (ready_due - now).total_seconds())
            self.wake(bulk_id, delay_s=max(wait, float(s.continuation_delay_s)) if wait else s.continuation_delay_s)
        elif counts.get(ChangeStatus.SENDING, 0):
            wait = 1.0 if lease_due is None else max(1.0, (lease_due - now).total_seconds())
            self.wake(bulk_id, delay_s=wait)
        elif counts.get(ChangeStatus.AWAITING_RESULT, 0):
            with self.ctx.session_factory() as session:
                self._schedule_check(session, bulk_id, message)

    def _schedule_check(self, session: Session, bulk_id: int, message: BulkChangeMessage) -> None:
        """The next round of the deferred check, claimed by compare-and-swap on CheckRound.

        One conditional UPDATE both decides and records (CheckRound and NextWakeAt together), and only
        its winner sends: concurrent follow-ups of several workers send one check message. (Before, a
        plain wake-up that lost the CAS still sent a check — two workers finishing at once on PostgreSQL
        both sent round 1 — and NextWakeAt was set in a later transaction, leaving a window in which a
        third saw CheckRound moved but no pending wake-up, and sent it again.)
        """
        B = DeviceBulkChange
        now = self.ctx.clock()
        delay = self.ctx.settings.activation_check_delay_s
        if message.is_retry_new_activate_thingspace_device:
            next_round = message.retry_number + 1
            condition = [B.check_round == message.retry_number]  # a duplicate of this round loses
        else:
            check_round = session.execute(select(B.check_round).where(B.id == bulk_id)).scalar_one_or_none()
            if check_round is None:
                return
            if check_round == 0:
                next_round, condition = 1, [B.check_round == 0]
            else:
                # A plain wake-up while a check is scheduled: send that round again only if its wake-up
                # looks lost (none pending, or overdue by a minute).
                next_round = check_round
                condition = [
                    B.check_round == check_round,
                    or_(B.next_wake_at.is_(None), B.next_wake_at <= now - timedelta(seconds=60)),
                ]
        won = _rowcount(
            session.execute(
                update(B)
                .where(B.id == bulk_id, *condition)
                .values(check_round=next_round, next_wake_at=now + timedelta(seconds=delay))
            )
        )
        session.commit()
        if not won:
            return  # another worker, or a duplicate of this message, scheduled it
        self.ctx.transport.send(
            BulkChangeMessage(
                bulk_change_id=bulk_id,
                is_retry_new_activate_thingspace_device=True,
                service_provider_id=message.service_provider_id,
                is_from_automated_update_device_status_lambda=message.is_from_automated_update_device_status_lambda,
                retry_number=next_round,
            ),
            delay_s=delay,
            body="Get ThingSpace device after new activate device",
        )
        log.info("activation check scheduled", bulk_change_id=bulk_id, round=next_round, delay_s=delay)

    def wake(self, bulk_id: int, *, delay_s: float, force: bool = False) -> bool:
        """Send a wake-up unless an earlier one is already pending (NextWakeAt), so duplicates don't multiply."""
        delay = int(min(900, max(0, round(delay_s))))
        if not self._set_wake(bulk_id, delay, force=force):
            return False
        self.ctx.transport.send(BulkChangeMessage(bulk_change_id=bulk_id), delay_s=delay)
        return True

    def _set_wake(self, bulk_id: int, delay_s: int, *, force: bool) -> bool:
        now = self.ctx.clock()
        target = now + timedelta(seconds=delay_s)
        stale = now - timedelta(seconds=self.ctx.settings.queue_visibility_timeout_s * 2)
        with self.ctx.session_factory.begin() as session:
            condition = [DeviceBulkChange.id == bulk_id]
            if not force:
                condition.append(
                    or_(
                        DeviceBulkChange.next_wake_at.is_(None),
                        DeviceBulkChange.next_wake_at > target,
                        DeviceBulkChange.next_wake_at < stale,
                    )
                )
            changed = _rowcount(session.execute(update(DeviceBulkChange).where(*condition).values(next_wake_at=target)))
        return bool(changed)

    def _clear_due_wake(self, session: Session, bulk: DeviceBulkChange) -> None:
        if bulk.next_wake_at is not None and bulk.next_wake_at <= self.ctx.clock():
            bulk.next_wake_at = None

    # ------------------------------------------------------------ additional steps and webhooks (side work)

    async def run_side_work(self) -> tuple[int, float | None]:
        """Run what is due of the side work; return (units done, seconds until more is due or None).

        The wake-up relay comes first: a bulk change whose wake-up the queue refused at submission waits
        for nothing else.
        """
        done = 0
        every: list[SideWork] = [self.wakeups, *self.side_work]
        for work in every:
            done += await work.run_due()
        waits = [w for w in (work.next_due_in_s() for work in every) if w is not None]
        return done, (min(waits) if waits else None)

    # ------------------------------------------------------------------------- status (MarkProcessed)

    def refresh_status(self, bulk_id: int) -> BulkStatus:
        """Compute the bulk status from its changes; never write it onto them (B2)."""
        with self.ctx.session_factory.begin() as session:
            bulk = session.get(DeviceBulkChange, bulk_id, with_for_update=True)
            if bulk is None:
                return BulkStatus.ERROR
            counts = ch.counts_by_status(session, bulk_id)
            failed = bulk.status == BulkStatus.ERROR.value
            status = compute_bulk_status(counts, bulk_failure=failed)
            was_terminal = bulk.status == BulkStatus.PROCESSED.value
            bulk.status = status.value
            bulk.has_errors = any(n and s.has_errors for s, n in counts.items())
            summary = ", ".join(f"{n} {s.value}" for s, n in sorted(counts.items(), key=lambda kv: kv[0].value) if n)
            if not failed:
                bulk.status_details = summary
            bulk.modified_date = self.ctx.clock()
            if status is BulkStatus.PROCESSED and not was_terminal:
                bulk.processed_date = self.ctx.clock()
                bulk.next_wake_at = None
                log.info("bulk change processed", bulk_change_id=bulk_id, summary=summary)
                if self.on_bulk_terminal is not None:
                    self.on_bulk_terminal(session, bulk)
            return status

    def _fail_bulk(self, bulk_id: int, reason: str) -> None:
        """Bulk-level failure: ERROR with the reason; unfinished changes stay as they are (resumable)."""
        with self.ctx.session_factory.begin() as session:
            bulk = session.get(DeviceBulkChange, bulk_id)
            if bulk is None:
                return
            in_flight = sum(
                n for s, n in ch.counts_by_status(session, bulk_id).items() if s in IN_FLIGHT_CHANGE_STATUSES
            )
            bulk.status = BulkStatus.ERROR.value if in_flight else bulk.status
            bulk.has_errors = True
            bulk.status_details = (
                f"{reason} — {in_flight} changes not finished; resume with `bulkchange resume {bulk_id}`"
            )
            bulk.modified_date = utcnow()
            bulk.next_wake_at = None
            write_logs(
                session,
                [LogEntry(bulk_id, None, "ThingSpace Device Status Update: ThingSpace API", False, error_text=reason)],
                process_by=self.ctx.settings.process_by,
            )


def _rowcount(result: Any) -> int:
    """Rows an UPDATE touched (the typed Result hides CursorResult.rowcount)."""
    return int(result.rowcount)


def _retry_after(exc: cerr.CarrierError) -> float | None:
    return exc.retry_after if isinstance(exc, cerr.RateLimited) else None
