"""The integrations' kinds of background work, registered beside the engine's when a runtime is built:
billing steps (the additional step of a PROCESSED change) and webhook deliveries."""

from __future__ import annotations

from dataclasses import dataclass

from bulkchange.domain.deadline import Deadline
from bulkchange.engine.context import EngineContext
from bulkchange.integrations.billing import BillingRunner
from bulkchange.integrations.settings import IntegrationSettings
from bulkchange.integrations.webhooks import WebhookDispatcher
from bulkchange.jobs.loop import WorkSource


@dataclass
class Integrations:
    """Billing steps and webhook deliveries, with their settings."""

    settings: IntegrationSettings
    billing: BillingRunner
    webhooks: WebhookDispatcher

    def sources(self) -> list[WorkSource]:
        """The kinds the worker loop runs, in turn order: due additional steps, then due webhooks."""
        return [self.billing, self.webhooks]

    async def run_due(self, *, deadline: Deadline | None = None) -> int:
        """Due additional steps, then due webhook deliveries; every outside call bounded by ``deadline``."""
        done = await self.billing.run_due(deadline=deadline)
        return done + await self.webhooks.run_due(deadline=deadline)

    def next_due_in_s(self) -> float | None:
        waits = [w for w in (self.billing.next_due_in_s(), self.webhooks.next_due_in_s()) if w is not None]
        return min(waits) if waits else None


def integrations_for(
    ctx: EngineContext,
    settings: IntegrationSettings | None = None,
    *,
    billing: BillingRunner | None = None,
    webhooks: WebhookDispatcher | None = None,
) -> Integrations:
    """The integrations of a runtime (``settings`` from the environment when not given)."""
    settings = settings or IntegrationSettings()
    return Integrations(settings, billing or BillingRunner(ctx, settings), webhooks or WebhookDispatcher(ctx, settings))
