"""The status-update webhook (the original's ``NotifyStatusUpdateDone``), through an outbox.

* The event: the engine writes one ``WebhookOutbox`` row (a fresh ``EventId``) in the very transaction that
  makes a bulk change finished (PROCESSED, PARTIAL, ERROR or CANCELLED), whatever the configuration
  (``engine.bulk_status``) — at most one per bulk change.
* ``WebhookDispatcher`` — driven by the worker loop: claims due events (lease, like a carrier step) once
  the bulk change's additional steps (billing) are settled and it has a destination (one configured
  later counts: the event waits, undelivered, until then), builds the documents page by page (1,000
  devices each by default, every page with the same ``EventId`` and its own page number), signs each
  with HMAC-SHA256 over ``timestamp + "." + body`` and POSTs it. A non-2xx answer or no answer is retried
  with exponential backoff (full jitter, ``Retry-After`` honoured) from the first undelivered page; every
  attempt is a ``WebhookDeliveryAttempt`` row. Delivery is at least once: the receiver drops duplicates by
  ``EventId`` + page. See ``docs/webhooks.md``.
* ``destination_for`` — where an event goes and which secret signs it: the ``WebhookDestination`` of the
  bulk change's service provider, else its tenant's, else ``BULKCHANGE_WEBHOOK_URL`` /
  ``BULKCHANGE_WEBHOOK_SECRET``. Resolved from the bulk change itself at every delivery, so a document
  only ever goes to its own tenant's receiver, signed with that receiver's secret.
* A ``deadline`` (``domain.deadline``, optional on ``run_due`` / ``deliver``) bounds every POST's timeout
  by the time left; a page is not sent with less than ``MIN_POST_S`` left: the event goes back to PENDING,
  due at once, without counting an attempt, and the next run delivers from that page on.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

import httpx
import structlog
from sqlalchemy import and_, exists, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bulkchange.domain.deadline import Deadline, bounded
from bulkchange.domain.retry import RetryPolicy
from bulkchange.domain.statuses import FINISHED_BULK_STATUSES
from bulkchange.engine import changes as ch
from bulkchange.engine.additional_step import UNSETTLED
from bulkchange.engine.bulk_status import FINISHED_EVENT
from bulkchange.engine.context import EngineContext
from bulkchange.integrations.settings import IntegrationSettings
from bulkchange.jobs import statements as jobs
from bulkchange.jobs.kinds import WEBHOOK_DELIVERY
from bulkchange.security.crypto import reveal
from bulkchange.security.transport import outbound_limits, require_https, tls_context
from bulkchange.store.db import is_connection_lost, read_only_session
from bulkchange.store.tables import (
    DeviceBulkChange,
    DeviceBulkChangeLog,
    M2MDeviceChange,
    ServiceProvider,
    WebhookDeliveryAttempt,
    WebhookDestination,
    WebhookOutbox,
    utcnow,
)

log = structlog.get_logger("bulkchange.webhooks")

EVENT_TYPE = FINISHED_EVENT
SIGNATURE_HEADER = "X-Bulkchange-Signature"
TIMESTAMP_HEADER = "X-Bulkchange-Timestamp"
EVENT_ID_HEADER = "X-Bulkchange-Event-Id"
PAGE_HEADER = "X-Bulkchange-Page"
PAGE_COUNT_HEADER = "X-Bulkchange-Page-Count"
ATTEMPT_HEADER = "X-Bulkchange-Delivery-Attempt"
MIN_POST_S = 2.0
"""No page is POSTed with less than this left before the caller's deadline."""


class OutboxStatus(StrEnum):
    PENDING = "PENDING"  # to deliver (NextAttemptAt: not before)
    DELIVERING = "DELIVERING"  # claimed by a worker (LeaseExpiresAt)
    DELIVERED = "DELIVERED"  # every page acknowledged with 2xx
    FAILED = "FAILED"  # attempts used up; `bulkchange webhooks retry EVENT_ID` re-arms it


# ------------------------------------------------------------------------------------ signature


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """``sha256=`` + hex HMAC-SHA256 of ``timestamp + "." + body`` with the shared secret."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify(
    secret: str, timestamp: str, body: bytes, signature: str, *, tolerance_s: float = 300, now: float | None = None
) -> bool:
    """What a receiver does: constant-time compare, and refuse timestamps too far from now (replays)."""
    try:
        age = abs((time.time() if now is None else now) - int(timestamp))
    except ValueError:
        return False
    return age <= tolerance_s and hmac.compare_digest(sign(secret, timestamp, body), signature)


# ---------------------------------------------------------------------------------- destinations


@dataclass(frozen=True)
class Destination:
    """Where one bulk change's webhook goes and the secret (None: unsigned) its pages are signed with."""

    url: str
    secret: str | None
    source: str  # "service provider 7", "tenant 2" or "default" (BULKCHANGE_WEBHOOK_URL)


SecretResolver = Callable[[str], str]


def destination_for(
    session: Session,
    bulk: DeviceBulkChange,
    settings: IntegrationSettings,
    resolve: SecretResolver | None = None,
) -> Destination | None:
    """The provider's destination, else the tenant's, else the default; None when there is none at all."""
    row = _destination_row(session, bulk)
    if row is not None:
        plain = reveal(row.secret)  # decrypted here only (stored encrypted: security.crypto)
        secret = plain if resolve is None else reveal(resolve(plain))
        source = f"service provider {row.service_provider_id}" if row.service_provider_id else f"tenant {row.tenant_id}"
        return Destination(row.url, secret, source)
    if settings.webhook_url:
        return Destination(settings.webhook_url, settings.webhook_secret, "default")
    return None


def _destination_row(session: Session, bulk: DeviceBulkChange) -> WebhookDestination | None:
    """The bulk change's provider's row, else its tenant's row.

    A row only ever matches on the bulk change's own tenant (a provider row is checked against it too), so
    no configuration mistake can send one tenant's document to another tenant's receiver.
    """
    rows = {
        row.service_provider_id: row
        for row in session.execute(
            select(WebhookDestination).where(
                WebhookDestination.tenant_id == bulk.tenant_id,
                or_(
                    WebhookDestination.service_provider_id.is_(None),
                    WebhookDestination.service_provider_id == bulk.service_provider_id,
                ),
            )
        ).scalars()
    }
    return rows.get(bulk.service_provider_id) or rows.get(None)


class DestinationRefused(ValueError):
    """``set_destination`` refused its arguments (the message says why)."""


def set_destination(
    session: Session, *, tenant_id: int, url: str, secret: str, service_provider_id: int | None = None
) -> int:
    """Create or replace the destination of ``tenant_id`` (or of one of its service providers); its id.

    The URL must be https (http only on loopback); the secret is stored encrypted. Commits. At most one
    destination per tenant and per provider is the schema's rule (filtered unique indexes): a concurrent
    ``set`` that lost the race is refused, never doubled.
    """
    try:
        url = require_https(url, "webhook URL")
    except ValueError as exc:
        raise DestinationRefused(str(exc)) from exc
    if not secret:
        raise DestinationRefused("a destination needs a signing secret (its receiver verifies every page with it)")
    if service_provider_id is not None:
        owner = session.execute(
            select(ServiceProvider.tenant_id).where(ServiceProvider.id == service_provider_id)
        ).scalar_one_or_none()
        if owner != tenant_id:
            raise DestinationRefused(f"tenant {tenant_id} has no service provider {service_provider_id}")
    row = session.execute(
        select(WebhookDestination).where(
            WebhookDestination.tenant_id == tenant_id,
            WebhookDestination.service_provider_id.is_(None)
            if service_provider_id is None
            else WebhookDestination.service_provider_id == service_provider_id,
        )
    ).scalar_one_or_none()
    if row is None:
        row = WebhookDestination(tenant_id=tenant_id, service_provider_id=service_provider_id, created_date=utcnow())
        session.add(row)
    else:
        row.modified_date = utcnow()
    row.url = url
    row.secret = secret
    try:
        session.commit()
    except IntegrityError as exc:
        session.rollback()
        raise DestinationRefused("the destination was set concurrently; run the command again") from exc
    return row.id


def remove_destination(session: Session, *, tenant_id: int, service_provider_id: int | None = None) -> bool:
    """Remove the tenant's (or its provider's) destination; True when there was one. Commits."""
    row = session.execute(
        select(WebhookDestination).where(
            WebhookDestination.tenant_id == tenant_id,
            WebhookDestination.service_provider_id.is_(None)
            if service_provider_id is None
            else WebhookDestination.service_provider_id == service_provider_id,
        )
    ).scalar_one_or_none()
    if row is None:
        return False
    session.delete(row)
    session.commit()
    return True


def list_destinations(session: Session, tenant_id: int | None = None) -> list[dict[str, Any]]:
    """The configured destinations (never their secret), of one tenant or of all."""
    query = select(WebhookDestination).order_by(WebhookDestination.tenant_id, WebhookDestination.id)
    if tenant_id is not None:
        query = query.where(WebhookDestination.tenant_id == tenant_id)
    return [
        {
            "id": row.id,
            "tenant_id": row.tenant_id,
            "service_provider_id": row.service_provider_id,
            "url": row.url,
            "modified": row.modified_date or row.created_date,
        }
        for row in session.execute(query).scalars()
    ]


# --------------------------------------------------------------------------------------- outbox


# -------------------------------------------------------------------------------------- payload


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat(timespec="milliseconds") + "Z"


def _cut(text: str | None, limit: int) -> str | None:
    if text is None or len(text) <= limit:
        return text
    return text[:limit] + f"… ({len(text) - limit} more characters)"


def _log_entry(row: DeviceBulkChangeLog, limit: int) -> dict[str, Any]:
    return {
        "ProcessedDate": _iso(row.processed_date),
        "LogEntryDescription": row.log_entry_description,
        "ResponseStatus": row.response_status,
        "HasErrors": row.has_errors,
        "RequestText": _cut(row.request_text, limit),
        "ResponseText": _cut(row.response_text, limit),
        "ErrorText": _cut(row.error_text, limit),
    }


def _change_request(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def build_page(
    session: Session, event: WebhookOutbox, *, page: int, page_count: int, page_size: int, text_limit: int
) -> dict[str, Any]:
    """Page ``page`` of ``page_count`` of the event's document (device rows ordered by change id)."""
    bulk = session.get(DeviceBulkChange, event.bulk_change_id)
    if bulk is None:
        raise LookupError(f"bulk change {event.bulk_change_id} is gone")
    counts = ch.counts_by_status(session, bulk.id)
    total = sum(counts.values())
    changes = list(
        session.execute(
            select(M2MDeviceChange)
            .where(M2MDeviceChange.bulk_change_id == bulk.id)
            .order_by(M2MDeviceChange.id)
            .offset((page - 1) * page_size)
            .limit(page_size)
        ).scalars()
    )
    ids = [c.id for c in changes]
    logs: dict[int, list[dict[str, Any]]] = {i: [] for i in ids}
    for start in range(0, len(ids), 500):
        for row in session.execute(
            select(DeviceBulkChangeLog)
            .where(DeviceBulkChangeLog.m2m_device_change_id.in_(ids[start : start + 500]))
            .order_by(DeviceBulkChangeLog.id)
        ).scalars():
            logs[int(row.m2m_device_change_id or 0)].append(_log_entry(row, text_limit))
    bulk_logs = [
        _log_entry(row, text_limit)
        for row in session.execute(
            select(DeviceBulkChangeLog)
            .where(DeviceBulkChangeLog.bulk_change_id == bulk.id, DeviceBulkChangeLog.m2m_device_change_id.is_(None))
            .order_by(DeviceBulkChangeLog.id)
        ).scalars()
    ]
    return {
        "EventId": event.event_id,
        "EventType": event.event_type,
        "Page": page,
        "PageCount": page_count,
        "PageSize": page_size,
        "DeviceCount": total,
        "BulkChange": {
            "Id": bulk.id,
            "TenantId": bulk.tenant_id,
            "ServiceProviderId": bulk.service_provider_id,
            "ChangeRequestType": bulk.change_request_type,
            "Status": bulk.status,
            "HasErrors": bulk.has_errors,
            "StatusDetails": bulk.status_details,
            "CreatedDate": _iso(bulk.created_date),
            "ProcessedDate": _iso(bulk.processed_date),
            "CountsByStatus": {s.value: n for s, n in sorted(counts.items())},
            "LogEntries": bulk_logs,
        },
        "Devices": [
            {
                "Id": c.id,
                "BulkChangeId": c.bulk_change_id,
                "ICCID": c.iccid,
                "IMEI": c.imei,
                "MSISDN": c.msisdn,
                "IpAddress": c.ip_address,
                "DeviceIdentifier": c.device_identifier,
                "DeviceId": c.device_id,
                "TargetStatus": c.target_status,
                "Status": c.status,
                "StatusDetails": c.status_details,
                "HasErrors": c.has_errors,
                "ProcessedDate": _iso(c.processed_date),
                "AdditionalStepStatus": c.additional_step_status,
                "AdditionalStepDetails": c.additional_step_details,
                "ChangeRequest": _change_request(c.change_request),
                "DetailsLogEntries": logs[c.id],
            }
            for c in changes
        ],
    }


def encode(payload: dict[str, Any]) -> bytes:
    """The exact bytes sent (and signed): compact UTF-8 JSON."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False, default=str).encode()


# ------------------------------------------------------------------------------------- delivery


class WebhookDispatcher:
    """Claims due webhook events and delivers them page by page. Safe with any number of workers."""

    kind = "webhook delivery"

    def __init__(
        self,
        ctx: EngineContext,
        settings: IntegrationSettings,
        *,
        clock: Callable[[], datetime] | None = None,
        http_transport: httpx.AsyncBaseTransport | None = None,
        worker_id: str | None = None,
    ) -> None:
        self.ctx = ctx
        self.settings = settings
        self.clock = clock or ctx.clock
        self.http_transport = http_transport
        self.worker_id = worker_id or f"{ctx.worker_id}:webhooks"
        self.policy = RetryPolicy(
            max_attempts=settings.webhook_max_attempts,
            base_s=settings.webhook_retry_base_s,
            cap_s=settings.webhook_retry_cap_s,
        )

    def _settled(self) -> Any:
        """The bulk change is finished (PROCESSED, PARTIAL, ERROR or CANCELLED), none of its additional steps
        is still to run, and the event has somewhere to go (the default URL, or a destination of the bulk
        change's provider or tenant)."""
        bulk = DeviceBulkChange
        ready = and_(
            exists().where(
                bulk.id == WebhookOutbox.bulk_change_id, bulk.status.in_([s.value for s in FINISHED_BULK_STATUSES])
            ),
            ~exists().where(
                M2MDeviceChange.bulk_change_id == WebhookOutbox.bulk_change_id,
                M2MDeviceChange.additional_step_status.in_(UNSETTLED),
            ),
        )
        if self.settings.webhook_url:
            return ready
        own = exists().where(
            bulk.id == WebhookOutbox.bulk_change_id,
            WebhookDestination.tenant_id == bulk.tenant_id,
            or_(
                WebhookDestination.service_provider_id.is_(None),
                WebhookDestination.service_provider_id == bulk.service_provider_id,
            ),
        )
        return and_(ready, own)

    def next_due_in_s(self) -> float | None:
        # An event with nowhere to go is not due: it waits, undelivered, for a destination.
        with read_only_session(self.ctx.session_factory) as session:
            return jobs.next_due_in_s(session, WEBHOOK_DELIVERY, now=self.clock(), where=[self._settled()])

    def claim(self, limit: int = 5) -> list[int]:
        now = self.clock()
        with read_only_session(self.ctx.session_factory) as probe:
            if not jobs.any_due(probe, WEBHOOK_DELIVERY, now=now, where=[self._settled()]):
                return []  # a read first: no write lock (nor a wait for one) on the turns that find nothing
        with self.ctx.session_factory.begin() as session:
            rows = jobs.claim(
                session,
                WEBHOOK_DELIVERY,
                where=[WEBHOOK_DELIVERY.claimable(now), self._settled()],
                owner=self.worker_id,
                now=now,
                lease_s=self.settings.webhook_lease_s,
                limit=limit,
                count_attempt=False,  # a round counts when it fails (pages already delivered are kept)
            )
        return [int(row[0]) for row in rows]

    async def run_due(self, *, deadline: Deadline | None = None) -> int:
        """Claim due events and deliver them; with a ``deadline``, nothing is claimed unless a POST fits."""
        if deadline is not None and not deadline.allows(MIN_POST_S):
            return 0
        ids = self.claim()
        if not ids:
            return 0
        async with httpx.AsyncClient(
            timeout=self.settings.webhook_timeout_s,
            transport=self.http_transport,
            verify=tls_context(),
            limits=outbound_limits(),
        ) as http:
            for outbox_id in ids:
                try:
                    await self.deliver(outbox_id, http, deadline=deadline)
                except Exception as exc:  # never lose the event: back to PENDING with a backoff
                    if is_connection_lost(exc):
                        raise  # the worker loop waits the outage out; the event's lease brings it back after
                    log.exception("webhook delivery crashed", outbox_id=outbox_id)
                    self._failed(outbox_id, f"{type(exc).__name__}: {exc}", None)
        return len(ids)

    async def deliver(self, outbox_id: int, http: httpx.AsyncClient, *, deadline: Deadline | None = None) -> None:
        s = self.settings
        with self.ctx.session_factory.begin() as session:
            event = session.get(WebhookOutbox, outbox_id)
            if event is None:
                return
            bulk = session.get(DeviceBulkChange, event.bulk_change_id)
            resolve: SecretResolver | None = getattr(self.ctx, "secret_resolver", None)
            destination = destination_for(session, bulk, s, resolve) if bulk is not None else None
            if event.page_count is None:
                total = sum(ch.counts_by_status(session, event.bulk_change_id).values())
                event.page_count = max(1, math.ceil(total / s.webhook_page_size))
            page_count = event.page_count
            page = event.pages_delivered + 1
            event_id = event.event_id
            bulk_change_id = event.bulk_change_id
        if destination is None:  # removed since the event was written: wait (with backoff) for one
            self._failed(outbox_id, f"no webhook destination for bulk change {bulk_change_id}", None)
            return
        url = destination.url
        while page <= page_count:
            if deadline is not None and not deadline.allows(MIN_POST_S):
                self._put_back(outbox_id, page)
                return
            with self.ctx.session_factory() as session:
                event = session.get(WebhookOutbox, outbox_id)
                assert event is not None
                payload = build_page(
                    session,
                    event,
                    page=page,
                    page_count=page_count,
                    page_size=s.webhook_page_size,
                    text_limit=s.webhook_text_limit,
                )
                attempt = 1 + int(
                    session.execute(
                        select(func.count()).where(
                            WebhookDeliveryAttempt.outbox_id == outbox_id, WebhookDeliveryAttempt.page_number == page
                        )
                    ).scalar_one()
                )
            body = encode(payload)
            timestamp = str(int(time.time()))
            headers = {
                "Content-Type": "application/json",
                EVENT_ID_HEADER: event_id,
                TIMESTAMP_HEADER: timestamp,
                PAGE_HEADER: str(page),
                PAGE_COUNT_HEADER: str(page_count),
                ATTEMPT_HEADER: str(attempt),
                "User-Agent": "bulkchange-webhook/1",
            }
            if destination.secret:
                headers[SIGNATURE_HEADER] = sign(destination.secret, timestamp, body)
            started = time.monotonic()
            status_code: int | None = None
            error: str | None = None
            retry_after: float | None = None
            timeout = bounded(deadline, s.webhook_timeout_s)
            try:
                async with asyncio.timeout(timeout):  # a total bound: httpx's timeout is per read / write
                    response = await http.post(url, content=body, headers=headers, timeout=timeout)
                status_code = response.status_code
                if not 200 <= status_code < 300:
                    error = f"HTTP {status_code}: {response.text[:300]}"
                    retry_after = _retry_after(response)
            except (httpx.HTTPError, TimeoutError) as exc:
                error = f"{type(exc).__name__}: {exc}"[:1000]
            elapsed_ms = int((time.monotonic() - started) * 1000)
            with self.ctx.session_factory.begin() as session:
                session.add(
                    WebhookDeliveryAttempt(
                        outbox_id=outbox_id,
                        event_id=event_id,
                        page_number=page,
                        attempt_number=attempt,
                        url=url[:1000],
                        response_status=status_code,
                        error=error,
                        duration_ms=elapsed_ms,
                        attempted_date=utcnow(),
                    )
                )
                if error is None:
                    # The page is delivered: say so and keep the lease for the next page (a heartbeat).
                    until = self.clock() + timedelta(seconds=s.webhook_lease_s)
                    if jobs.extend_lease(session, WEBHOOK_DELIVERY, [outbox_id], owner=self.worker_id, until=until):
                        session.execute(
                            update(WebhookOutbox).where(WebhookOutbox.id == outbox_id).values(pages_delivered=page)
                        )
            if error is not None:
                log.warning("webhook delivery failed", event_id=event_id, page=page, error=error)
                self._failed(outbox_id, f"page {page}/{page_count}: {error}", retry_after)
                return
            page += 1
        with self.ctx.session_factory.begin() as session:
            c = WEBHOOK_DELIVERY.table.c
            jobs.settle(
                session,
                WEBHOOK_DELIVERY,
                outbox_id,
                owner=self.worker_id,
                status=OutboxStatus.DELIVERED.value,
                values={c.DeliveredDate: utcnow(), c.NextAttemptAt: None, c.LastError: None},
            )
        log.info("webhook delivered", event_id=event_id, pages=page_count, destination=destination.source)

    def _put_back(self, outbox_id: int, page: int) -> None:
        """No time left for page ``page``: PENDING and due now, no attempt counted (nothing was sent)."""
        with self.ctx.session_factory.begin() as session:
            jobs.release(session, WEBHOOK_DELIVERY, [outbox_id], owner=self.worker_id, refund_attempt=False)
        log.info("webhook delivery put back: no time left before the deadline", outbox_id=outbox_id, page=page)

    def _failed(self, outbox_id: int, error: str, retry_after_s: float | None) -> None:
        """A failed delivery round: PENDING again at the policy's time, or FAILED when rounds run out."""
        with self.ctx.session_factory.begin() as session:
            event = session.get(WebhookOutbox, outbox_id)
            if event is None or event.lease_owner != self.worker_id or event.status != OutboxStatus.DELIVERING.value:
                return
            attempts = event.attempt_count + 1
            decision = self.policy.decide(attempts, now=self.clock(), retry_after_s=retry_after_s, rng=self.ctx.rng)
            jobs.retry_later(
                session,
                WEBHOOK_DELIVERY,
                outbox_id,
                owner=self.worker_id,
                decision=decision,
                gave_up=OutboxStatus.FAILED.value,
                values={WEBHOOK_DELIVERY.attempts: attempts, WEBHOOK_DELIVERY.table.c.LastError: error},
            )
            if decision.give_up:
                log.error("webhook delivery gave up", event_id=event.event_id, attempts=attempts)


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def rearm(session: Session, event_id: str) -> bool:
    """Operator action: deliver a FAILED (or waiting) event again, now, with fresh attempts."""
    changed = session.execute(
        update(WebhookOutbox)
        .where(
            WebhookOutbox.event_id == event_id,
            WebhookOutbox.status.in_([OutboxStatus.FAILED.value, OutboxStatus.PENDING.value]),
        )
        .values(status=OutboxStatus.PENDING.value, attempt_count=0, next_attempt_at=None, lease_owner=None)
        .execution_options(synchronize_session=False)
    )
    session.commit()
    return bool(getattr(changed, "rowcount", 0))
