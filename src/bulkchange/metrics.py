"""Prometheus metrics: carrier calls as they happen, the rest read from the database at scrape time.

Carrier calls are observed without touching the clients' internals: ``observe_carrier_calls`` gives every
carrier session

* an httpx transport wrapper that times every HTTP exchange and labels it with the endpoint and outcome,
* the client's ``limiter`` hook (awaited before every request with the endpoint name), which records the
  endpoint for the transport and the time spent waiting in an optional inner limiter.

Changes by status, bulk changes by status, queue depth and webhook deliveries are counted from the
database when ``/metrics`` is scraped (``DatabaseCollector``), so they are right across processes and
restarts.
"""

from __future__ import annotations

import contextvars
import email.utils
import time
from collections.abc import Iterator
from dataclasses import replace

import httpx
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import case, func, select
from sqlalchemy.orm import Session, sessionmaker

from bulkchange.carrier.port import Limiter, SessionServices
from bulkchange.domain.statuses import ChangeStatus
from bulkchange.queue.base import Transport
from bulkchange.security.transport import outbound_limits, tls_context
from bulkchange.store.db import read_only_session
from bulkchange.store.tables import (
    DeviceBulkChange,
    M2MDeviceChange,
    WebhookDeliveryAttempt,
    WebhookOutbox,
)
from bulkchange.store.write_lock import WRITE_LOCK

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
WAIT_BUCKETS = (0.001, 0.01, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0)

# Process-wide collectors (registered into each application's registry by ``build_registry``).
CARRIER_CALLS = Counter(
    "bulkchange_carrier_calls",
    "HTTP calls to the carrier API by endpoint and outcome (ok, rate_limited, client_error, server_error, "
    "timeout, connect_error, error).",
    ["endpoint", "outcome"],
    registry=None,
)
CARRIER_LATENCY = Histogram(
    "bulkchange_carrier_call_duration_seconds",
    "Latency of carrier HTTP calls by endpoint (answered or not).",
    ["endpoint"],
    buckets=LATENCY_BUCKETS,
    registry=None,
)
RATE_LIMIT_WAITS = Counter(
    "bulkchange_rate_limit_waits",
    "Times a carrier call had to wait: 'carrier' = the carrier answered 429, 'limiter' = our limiter made it wait.",
    ["endpoint", "source"],
    registry=None,
)
RATE_LIMIT_WAIT_SECONDS = Histogram(
    "bulkchange_rate_limit_wait_seconds",
    "Seconds waited because of rate limits: Retry-After asked by the carrier, or time spent in our limiter.",
    ["endpoint", "source"],
    buckets=WAIT_BUCKETS,
    registry=None,
)
CALLBACKS_RECEIVED = Counter(
    "bulkchange_callbacks_received",
    "CarrierService callbacks received by result (applied, duplicate, unmatched, refused_auth, "
    "refused_source, malformed).",
    ["result"],
    registry=None,
)
PROCESS_COLLECTORS = (CARRIER_CALLS, CARRIER_LATENCY, RATE_LIMIT_WAITS, RATE_LIMIT_WAIT_SECONDS, CALLBACKS_RECEIVED)

_endpoint: contextvars.ContextVar[str | None] = contextvars.ContextVar("bulkchange_carrier_endpoint", default=None)


def endpoint_of(request: httpx.Request) -> str:
    """The client's endpoint name (set by the limiter hook) or one derived from the URL path."""
    named = _endpoint.get()
    if named:
        return named
    path = request.url.path
    for marker in ("/devices/actions/", "/session/", "/oauth2/"):
        if marker in path:
            return marker.strip("/") + "/" + path.rsplit("/", 1)[-1]
    if "/requests/" in path:
        return "requests/status"
    if "/callbacks/" in path:
        return "callbacks"
    return "other"


def outcome_of_status(status: int) -> str:
    if status == 429:
        return "rate_limited"
    if 200 <= status < 400:
        return "ok"
    if status < 500:
        return "client_error"
    return "server_error"


def _retry_after_s(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value)
        return max(0.0, parsed.timestamp() - time.time()) if parsed else None


class InstrumentedTransport(httpx.AsyncBaseTransport):
    """Wraps an httpx transport: one latency observation and one outcome count per HTTP exchange."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self._inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        endpoint = endpoint_of(request)
        started = time.perf_counter()
        try:
            response = await self._inner.handle_async_request(request)
        except httpx.TimeoutException:
            self._observe(endpoint, "timeout", started)
            raise
        except httpx.ConnectError:
            self._observe(endpoint, "connect_error", started)
            raise
        except BaseException:
            self._observe(endpoint, "error", started)
            raise
        outcome = outcome_of_status(response.status_code)
        self._observe(endpoint, outcome, started)
        if outcome == "rate_limited":
            RATE_LIMIT_WAITS.labels(endpoint, "carrier").inc()
            wait = _retry_after_s(response.headers.get("Retry-After"))
            if wait is not None:
                RATE_LIMIT_WAIT_SECONDS.labels(endpoint, "carrier").observe(wait)
        return response

    @staticmethod
    def _observe(endpoint: str, outcome: str, started: float) -> None:
        CARRIER_LATENCY.labels(endpoint).observe(time.perf_counter() - started)
        CARRIER_CALLS.labels(endpoint, outcome).inc()

    async def aclose(self) -> None:
        await self._inner.aclose()


class InstrumentedLimiter:
    """The session's limiter hook, observed: names the endpoint for the transport and times the inner
    limiter's wait; a limiter that also releases (an in-flight lease) is released through it."""

    def __init__(self, inner: Limiter | None = None, *, min_wait_s: float = 0.001) -> None:
        self._inner = inner
        self._min_wait_s = min_wait_s

    async def __call__(self, endpoint: str) -> None:
        _endpoint.set(endpoint)  # same task as the request that follows: the transport reads it
        if self._inner is None:
            return
        started = time.perf_counter()
        await self._inner(endpoint)
        waited = time.perf_counter() - started
        if waited >= self._min_wait_s:
            RATE_LIMIT_WAITS.labels(endpoint, "limiter").inc()
            RATE_LIMIT_WAIT_SECONDS.labels(endpoint, "limiter").observe(waited)

    async def release(self, endpoint: str) -> None:
        release = getattr(self._inner, "release", None)
        if release is not None:
            await release(endpoint)


def instrumented_transport() -> httpx.AsyncBaseTransport:
    """An HTTP transport (TLS and keep-alive as every outbound client) whose exchanges are observed."""
    return InstrumentedTransport(httpx.AsyncHTTPTransport(verify=tls_context(), limits=outbound_limits()))


def observe_carrier_calls(services: SessionServices) -> SessionServices:
    """``EngineContext.services_hook``: every carrier session's calls counted and timed by the collectors."""
    return replace(services, limiter=InstrumentedLimiter(services.limiter), http_transport=instrumented_transport)


# ------------------------------------------------------------------------------ read at scrape time


class DatabaseCollector(Collector):
    """Gauges counted from the database on each scrape."""

    def __init__(self, session_factory: sessionmaker[Session], transport: Transport) -> None:
        self._sessions = session_factory
        self._transport = transport

    def collect(self) -> Iterator[Metric]:
        changes = GaugeMetricFamily(
            "bulkchange_device_changes",
            "Device changes by status (terminal: PROCESSED, ERROR, API_FAILED, ACTIVATION_UNVERIFIED, "
            "NEEDS_REVIEW, CANCELLED).",
            labels=["status", "terminal"],
        )
        bulks = GaugeMetricFamily("bulkchange_bulk_changes", "Bulk changes by status.", labels=["status"])
        queue = GaugeMetricFamily(
            "bulkchange_queue_messages",
            "Queue depth by state (visible, delayed, in_flight, dead_lettered).",
            labels=["state"],
        )
        webhooks = GaugeMetricFamily(
            "bulkchange_webhook_events", "Status-update webhook events by outbox status.", labels=["status"]
        )
        attempts = GaugeMetricFamily(
            "bulkchange_webhook_delivery_attempts",
            "Webhook delivery attempts (POSTs) by outcome: 2xx, 4xx, 5xx, error (no answer).",
            labels=["outcome"],
        )
        up = GaugeMetricFamily("bulkchange_database_up", "1 when the database answered this scrape.")
        try:
            with read_only_session(self._sessions) as session:  # a scrape never queues for SQLite's write lock
                by_status = dict(
                    session.execute(select(M2MDeviceChange.status, func.count()).group_by(M2MDeviceChange.status)).all()
                )
                for status in ChangeStatus:
                    n = int(by_status.get(status.value, 0))
                    changes.add_metric([status.value, "true" if status.is_terminal else "false"], n)
                for bulk_status, n in session.execute(
                    select(DeviceBulkChange.status, func.count()).group_by(DeviceBulkChange.status)
                ).all():
                    bulks.add_metric([str(bulk_status)], int(n))
                events, tries = _webhook_counts(session)
                for event_status, n in events:
                    webhooks.add_metric([event_status], n)
                for outcome, n in tries:
                    attempts.add_metric([outcome], n)
            stats = self._transport.stats()
            queue.add_metric(["visible"], stats.visible)
            queue.add_metric(["delayed"], stats.delayed)
            queue.add_metric(["in_flight"], stats.in_flight)
            queue.add_metric(["dead_lettered"], stats.dead_lettered)
            up.add_metric([], 1)
        except Exception:  # a scrape must answer even when the database does not
            up.add_metric([], 0)
        yield from (changes, bulks, queue, webhooks, attempts, up)


def _webhook_counts(session: Session) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    """Webhook events by outbox status, and delivery attempts by outcome (2xx, 4xx, 5xx, error)."""
    events = [
        (str(status), int(n))
        for status, n in session.execute(
            select(WebhookOutbox.status, func.count()).group_by(WebhookOutbox.status)
        ).all()
    ]
    outcome = case(
        (WebhookDeliveryAttempt.response_status.is_(None), "error"),
        (WebhookDeliveryAttempt.response_status < 300, "2xx"),
        (WebhookDeliveryAttempt.response_status < 500, "4xx"),
        else_="5xx",
    )
    attempts = [(str(o), int(n)) for o, n in session.execute(select(outcome, func.count()).group_by(outcome)).all()]
    return events, attempts


class WriteLockCollector(Collector):
    """This process's SQLite write transactions by work (``store.write_lock``): how many, the seconds they waited
    for the write lock and the seconds they held it. No samples on other databases."""

    def collect(self) -> Iterator[Metric]:
        labels = ["work"]
        transactions = CounterMetricFamily(
            "bulkchange_sqlite_write_transactions", "SQLite write transactions begun, by work.", labels=labels
        )
        waited = CounterMetricFamily(
            "bulkchange_sqlite_write_lock_wait_seconds",
            "Seconds SQLite write transactions waited for the database's write lock before they began, by work.",
            labels=labels,
        )
        held = CounterMetricFamily(
            "bulkchange_sqlite_write_lock_held_seconds",
            "Seconds SQLite write transactions held the database's write lock (from their start to their commit "
            "or rollback), by work.",
            labels=labels,
        )
        for work, tally in sorted(WRITE_LOCK.snapshot().items()):
            transactions.add_metric([work], tally.transactions)
            waited.add_metric([work], tally.wait_s)
            held.add_metric([work], tally.held_s)
        yield from (transactions, waited, held)


def build_registry(session_factory: sessionmaker[Session], transport: Transport) -> CollectorRegistry:
    """One application's registry: the process-wide carrier/callback collectors and write-lock tallies, plus its
    database's gauges."""
    registry = CollectorRegistry(auto_describe=True)
    for collector in PROCESS_COLLECTORS:
        registry.register(collector)
    registry.register(WriteLockCollector())
    registry.register(DatabaseCollector(session_factory, transport))
    return registry
