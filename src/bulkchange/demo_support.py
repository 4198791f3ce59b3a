"""The integrations' part of ``bulkchange demo``: a Rev.io stand-in and a webhook receiver on loopback.

Activations get a Rev.io service with two products and a customer rate plan; the bulk change's webhook goes
to a local receiver (unless ``BULKCHANGE_WEBHOOK_URL`` is set). ``check`` lists what did not end as
expected: every activation billed exactly once, numbered by its MSISDN, and every device in the webhook.
Both carriers' bulk changes run while the stand-ins serve: each finished bulk change sends its webhook.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from bulkchange.integrations.kinds import integrations_for
from bulkchange.integrations.receiver import WebhookInbox
from bulkchange.integrations.settings import IntegrationSettings
from bulkchange.runtime import Runtime
from bulkchange.simulator.revio import RevioStandIn
from bulkchange.simulator.server import serve_in_thread
from bulkchange.store.tables import CustomerRatePlan, IntegrationAuthentication, M2MDeviceChange

RATE_PLAN = "DEMO-IOT"
DEMO_TENANT = 1  # the tenant of the demo's service provider (``add_provider``'s default)
PRODUCTS = "101;102"
RATES = "4.99;1.00"


@dataclass
class DemoBilling:
    revio: RevioStandIn
    revio_url: str
    inbox: WebhookInbox | None
    webhook_url: str | None
    auth_id: int

    def describe(self) -> str:
        hook = f"; webhook receiver on {self.webhook_url}" if self.inbox else ""
        return f"Rev.io stand-in on {self.revio_url}{hook}"

    def decorate(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Activations are billed: a Rev.io service with two products, and a customer rate plan."""
        for row in rows:
            if row.get("Status") == "active":
                row.update(
                    {
                        "RevCustomerId": "1001",
                        "ServiceTypeId": 1,
                        "RevProductIdList": PRODUCTS,
                        "RateList": RATES,
                        "CustomerRatePlan": RATE_PLAN,
                        "IntegrationAuthenticationId": self.auth_id,
                    }
                )
        return rows

    def check(self, session: Session, bulk_id: int) -> list[str]:
        problems: list[str] = []
        changes = list(
            session.execute(select(M2MDeviceChange).where(M2MDeviceChange.bulk_change_id == bulk_id)).scalars()
        )
        for c in changes:
            if c.target_status != "active":
                continue
            if c.additional_step_status != "PROCESSED":
                problems.append(f"{c.iccid}: billing {c.additional_step_status} {c.additional_step_details}")
            created = self.revio.counters.services_created.get(c.msisdn or "", 0)
            if created != 1:
                problems.append(f"{c.iccid}: {created} Rev.io services for MSISDN {c.msisdn}")
        return problems + self.check_webhook(session, bulk_id)

    def check_webhook(self, session: Session, bulk_id: int) -> list[str]:
        """Every device of the bulk change is in the signed documents the local receiver got (nothing to check
        when the webhook goes to ``BULKCHANGE_WEBHOOK_URL``)."""
        if self.inbox is None:
            return []
        iccids = set(session.scalars(select(M2MDeviceChange.iccid).where(M2MDeviceChange.bulk_change_id == bulk_id)))
        missing = iccids - {d["ICCID"] for d in self.inbox.devices(bulk_id)}
        return [f"webhook: {len(missing)} device(s) missing from the delivered documents"] if missing else []

    def summary(self, bulk_id: int) -> str:
        services = sum(self.revio.counters.services_created.values())
        products = sum(self.revio.counters.products_created.values())
        text = f"Rev.io: {services} services, {products} service products created"
        if self.inbox is not None:
            pages = sum(1 for doc in self.inbox.documents.values() if doc["BulkChange"]["Id"] == bulk_id)
            text += f"; webhook: {pages} signed document(s), {len(self.inbox.devices(bulk_id))} devices"
        return text


@contextlib.contextmanager
def demo_billing(rt: Runtime) -> Iterator[DemoBilling]:
    """Serve the stand-ins, register the credentials and plan, and point the integrations at them."""
    revio = RevioStandIn()
    configured = IntegrationSettings()
    inbox = None if configured.webhook_url else WebhookInbox(secret=secrets.token_hex(16))
    with contextlib.ExitStack() as stack:
        revio_server = stack.enter_context(serve_in_thread(revio.app))
        webhook_url = configured.webhook_url
        if inbox is not None:
            hook_server = stack.enter_context(serve_in_thread(inbox.app()))
            webhook_url = f"{hook_server.base_url}/webhooks/bulkchange"
        with rt.session_factory.begin() as session:
            auth = IntegrationAuthentication(
                tenant_id=DEMO_TENANT,
                name="demo Rev.io stand-in",
                base_url=f"{revio_server.base_url}/v1",
                username=revio.config.username,
                client_code=revio.config.client_code,
                password=revio.config.password,
                subscription_key=revio.config.subscription_key,
            )
            session.add(auth)
            if not session.execute(
                select(CustomerRatePlan.id).where(
                    CustomerRatePlan.tenant_id == DEMO_TENANT, CustomerRatePlan.name == RATE_PLAN
                )
            ).first():
                session.add(CustomerRatePlan(tenant_id=DEMO_TENANT, name=RATE_PLAN, display_name="Demo IoT plan"))
            session.flush()
            auth_id = auth.id
        rt.use_integrations(
            integrations_for(
                rt.ctx,
                configured.model_copy(
                    update={
                        "webhook_url": webhook_url,
                        "webhook_secret": inbox.secret if inbox is not None else configured.webhook_secret,
                        "billing_retry_base_s": min(configured.billing_retry_base_s, 0.2),
                        "billing_retry_cap_s": min(configured.billing_retry_cap_s, 2.0),
                        "webhook_retry_base_s": min(configured.webhook_retry_base_s, 0.2),
                        "webhook_retry_cap_s": min(configured.webhook_retry_cap_s, 2.0),
                    }
                ),
            )
        )
        yield DemoBilling(revio, f"{revio_server.base_url}/v1", inbox, webhook_url, auth_id)
