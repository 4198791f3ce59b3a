"""Plugging the integrations into a processor: the outbox hook and the worker loop's side work.

``install(processor)`` is called where a runtime is built (``bulkchange.runtime``); tests call it again
with their own settings (a later call replaces the earlier one).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.orm import Session

from bulkchange.domain.deadline import Deadline
from bulkchange.engine.processor import Processor
from bulkchange.integrations.billing import BillingRunner
from bulkchange.integrations.settings import IntegrationSettings
from bulkchange.integrations.webhooks import WebhookDispatcher, outbox_hook
from bulkchange.store.tables import DeviceBulkChange

Hook = Callable[[Session, DeviceBulkChange], None]


@dataclass
class Integrations:
    """The side work of a worker: due additional steps (billing, rate plans), then due webhooks."""

    settings: IntegrationSettings
    billing: BillingRunner
    webhooks: WebhookDispatcher
    previous_hook: Hook | None = None

    async def run_due(self, *, deadline: Deadline | None = None) -> int:
        """Due additional steps, then due webhook deliveries; every outside call bounded by ``deadline``."""
        done = await self.billing.run_due(deadline=deadline)
        return done + await self.webhooks.run_due(deadline=deadline)

    def next_due_in_s(self) -> float | None:
        waits = [w for w in (self.billing.next_due_in_s(), self.webhooks.next_due_in_s()) if w is not None]
        return min(waits) if waits else None


def install(
    processor: Processor,
    settings: IntegrationSettings | None = None,
    *,
    billing: BillingRunner | None = None,
    webhooks: WebhookDispatcher | None = None,
) -> Integrations:
    """Attach billing and webhook delivery to ``processor`` (replacing an earlier install)."""
    settings = settings or IntegrationSettings()
    earlier = next((w for w in processor.side_work if isinstance(w, Integrations)), None)
    previous = earlier.previous_hook if earlier is not None else processor.on_bulk_terminal
    integrations = Integrations(
        settings,
        billing or BillingRunner(processor.ctx, settings),
        webhooks or WebhookDispatcher(processor.ctx, settings),
        previous,
    )
    write_event = outbox_hook(settings)

    def on_bulk_terminal(session: Session, bulk: DeviceBulkChange) -> None:
        if previous is not None:
            previous(session, bulk)
        write_event(session, bulk)

    processor.on_bulk_terminal = on_bulk_terminal
    processor.side_work = [w for w in processor.side_work if not isinstance(w, Integrations)] + [integrations]
    return integrations
