"""Webhook destinations per tenant and per service provider: each receiver gets its own tenant's documents
only, signed with its own secret; BULKCHANGE_WEBHOOK_URL serves the bulk changes that have none.

Real receivers over loopback HTTP verify every page with the documented algorithm (``WebhookReceiver``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from sqlalchemy import select, text
from typer.testing import CliRunner

from bulkchange.cli.main import app
from bulkchange.engine.submit import create_bulk_change
from bulkchange.integrations.webhooks import (
    DestinationRefused,
    list_destinations,
    remove_destination,
    set_destination,
)
from bulkchange.providers import add_provider
from bulkchange.simulator.server import serve_in_thread
from bulkchange.store.tables import WebhookDeliveryAttempt, WebhookOutbox

from .conftest import BillingHarness, WebhookReceiver, new_iccid, new_imei

TENANT_1_SECRET = "tenant-1-signing-secret-0001"
TENANT_2_SECRET = "tenant-2-signing-secret-0002"
PROVIDER_SECRET = "provider-signing-secret-0003"


@pytest.fixture
def receivers() -> Iterator[dict[str, tuple[WebhookReceiver, str]]]:
    """Four receivers, each with its own secret: the default one and three destinations."""
    hooks = {
        "default": WebhookReceiver(),  # conftest's SECRET, the BULKCHANGE_WEBHOOK_SECRET of the harness
        "tenant 1": WebhookReceiver(secret=TENANT_1_SECRET),
        "tenant 2": WebhookReceiver(secret=TENANT_2_SECRET),
        "provider": WebhookReceiver(secret=PROVIDER_SECRET),
    }
    with ExitStack() as stack:
        yield {
            name: (hook, f"{stack.enter_context(serve_in_thread(hook.app())).base_url}/hook")
            for name, hook in hooks.items()
        }


def _provider(bh: BillingHarness, name: str, tenant_id: int) -> int:
    with bh.rt.session_factory() as session:
        return add_provider(
            session,
            name=name,
            base_url=bh.sim_url,
            client_id="sim-client",
            client_secret="sim-secret",
            username="sim-user",
            password="sim-pass",
            account="0000123456-00001",
            tenant_id=tenant_id,
        )


def _submit(bh: BillingHarness, provider_id: int) -> int:
    """A bulk change of two inventory additions (synchronous at the carrier: no callbacks needed)."""
    rows = [{"ICCID": new_iccid(), "IMEI": new_imei()} for _ in range(2)]
    with bh.rt.session_factory() as session:
        return create_bulk_change(session, bh.rt.transport, rows, status="inventory", service_provider_id=provider_id)


def _bulk_ids(hook: WebhookReceiver) -> list[int]:
    return sorted(doc["BulkChange"]["Id"] for doc in hook.documents.values())


async def test_each_tenant_receives_only_its_own_bulk_changes_signed_with_its_own_secret(
    bh_any: BillingHarness, receivers: dict[str, tuple[WebhookReceiver, str]]
) -> None:
    bh = bh_any
    default_hook, default_url = receivers["default"]
    bh.configure(webhook_url=default_url)  # the default exists, but both tenants have their own
    tenant_2_provider = _provider(bh, "tenant-2", tenant_id=2)
    with bh.rt.session_factory() as session:
        set_destination(session, tenant_id=1, url=receivers["tenant 1"][1], secret=TENANT_1_SECRET)
        set_destination(session, tenant_id=2, url=receivers["tenant 2"][1], secret=TENANT_2_SECRET)
    bulk_1 = _submit(bh, bh.provider_id)
    bulk_2 = _submit(bh, tenant_2_provider)

    await bh.run()

    hook_1, hook_2 = receivers["tenant 1"][0], receivers["tenant 2"][0]
    assert _bulk_ids(hook_1) == [bulk_1] and _bulk_ids(hook_2) == [bulk_2]
    assert [len(r) for r in (hook_1.requests, hook_2.requests, default_hook.requests)] == [1, 1, 0]
    assert hook_1.bad_signatures == hook_2.bad_signatures == 0  # each verified with its own secret …
    for hook, other_secret in ((hook_1, TENANT_2_SECRET), (hook_2, TENANT_1_SECRET)):
        (request,) = hook.requests
        headers = request["headers"]
        # … and not with the other tenant's.
        assert not WebhookReceiver(secret=other_secret).verify(
            headers["x-bulkchange-timestamp"], request["body"], headers["x-bulkchange-signature"]
        )
    (doc_2,) = hook_2.documents.values()
    assert doc_2["BulkChange"]["TenantId"] == 2 and doc_2["BulkChange"]["ServiceProviderId"] == tenant_2_provider
    with bh.rt.session_factory() as session:
        urls = {
            event.bulk_change_id: attempt.url
            for attempt, event in session.execute(
                select(WebhookDeliveryAttempt, WebhookOutbox).join(
                    WebhookOutbox, WebhookOutbox.id == WebhookDeliveryAttempt.outbox_id
                )
            ).all()
        }
    assert urls == {bulk_1: receivers["tenant 1"][1], bulk_2: receivers["tenant 2"][1]}


async def test_a_providers_destination_comes_first_then_the_tenants_then_the_default(
    bh: BillingHarness, receivers: dict[str, tuple[WebhookReceiver, str]]
) -> None:
    bh.configure(webhook_url=receivers["default"][1])
    overridden = _provider(bh, "tenant-2-a", tenant_id=2)
    plain = _provider(bh, "tenant-2-b", tenant_id=2)
    with bh.rt.session_factory() as session:
        set_destination(session, tenant_id=2, url=receivers["tenant 2"][1], secret=TENANT_2_SECRET)
        set_destination(
            session,
            tenant_id=2,
            service_provider_id=overridden,
            url=receivers["provider"][1],
            secret=PROVIDER_SECRET,
        )
    by_provider = _submit(bh, overridden)
    by_tenant = _submit(bh, plain)
    by_default = _submit(bh, bh.provider_id)  # tenant 1 has no destination of its own

    await bh.run()

    assert _bulk_ids(receivers["provider"][0]) == [by_provider]
    assert _bulk_ids(receivers["tenant 2"][0]) == [by_tenant]
    assert _bulk_ids(receivers["default"][0]) == [by_default]
    assert all(hook.bad_signatures == 0 for hook, _url in receivers.values())

    # Without the provider's destination its bulk changes go to the tenant's.
    with bh.rt.session_factory() as session:
        assert remove_destination(session, tenant_id=2, service_provider_id=overridden)
        assert not remove_destination(session, tenant_id=2, service_provider_id=overridden)
    again = _submit(bh, overridden)
    await bh.run()
    assert _bulk_ids(receivers["tenant 2"][0]) == sorted([by_tenant, again])


async def test_without_a_default_only_tenants_with_a_destination_get_events(
    bh: BillingHarness, receivers: dict[str, tuple[WebhookReceiver, str]]
) -> None:
    tenant_2_provider = _provider(bh, "tenant-2", tenant_id=2)
    with bh.rt.session_factory() as session:
        set_destination(session, tenant_id=2, url=receivers["tenant 2"][1], secret=TENANT_2_SECRET)
    quiet = _submit(bh, bh.provider_id)
    heard = _submit(bh, tenant_2_provider)

    await bh.run()

    assert _bulk_ids(receivers["tenant 2"][0]) == [heard]
    with bh.rt.session_factory() as session:
        events = dict(session.execute(select(WebhookOutbox.bulk_change_id, WebhookOutbox.status)).all())
    # Tenant 1's event is recorded too, and waits undelivered for a destination of its own.
    assert events == {heard: "DELIVERED", quiet: "PENDING"}


def test_set_destination_refuses_what_it_cannot_keep(bh: BillingHarness) -> None:
    tenant_2_provider = _provider(bh, "tenant-2", tenant_id=2)
    with bh.rt.session_factory() as session:
        with pytest.raises(DestinationRefused, match="tenant 1 has no service provider"):
            set_destination(
                session, tenant_id=1, service_provider_id=tenant_2_provider, url="https://h.example", secret="s" * 20
            )
        with pytest.raises(DestinationRefused, match="https"):
            set_destination(session, tenant_id=1, url="http://hooks.example.com/x", secret="s" * 20)
        with pytest.raises(DestinationRefused, match="secret"):
            set_destination(session, tenant_id=1, url="https://h.example", secret="")
        first = set_destination(session, tenant_id=1, url="https://one.example/hook", secret="s" * 20)
        # Set again: replaced, not doubled.
        assert set_destination(session, tenant_id=1, url="https://two.example/hook", secret="t" * 20) == first
        assert [(d["tenant_id"], d["url"]) for d in list_destinations(session)] == [(1, "https://two.example/hook")]


def test_the_cli_sets_lists_and_removes_destinations(
    bh: BillingHarness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BULKCHANGE_DATABASE_URL", str(bh.rt.settings.database_url))
    tenant_2_provider = _provider(bh, "tenant-2", tenant_id=2)
    runner = CliRunner()
    secret = "cli-signing-secret-0123456789"

    done = runner.invoke(
        app,
        ["webhooks", "set-destination", "--tenant", "2", "--url", "https://t2.example/hook", "--secret", "-"],
        input=secret + "\n",
    )
    assert done.exit_code == 0, done.output
    done = runner.invoke(
        app,
        [
            "webhooks",
            "set-destination",
            "--tenant",
            "2",
            "--service-provider",
            str(tenant_2_provider),
            "--url",
            "https://p.example/hook",
            "--secret",
            "-",
        ],
        input=secret + "\n",
    )
    assert done.exit_code == 0, done.output
    refused = runner.invoke(
        app,
        [
            "webhooks",
            "set-destination",
            "--tenant",
            "1",
            "--service-provider",
            str(tenant_2_provider),
            "--url",
            "https://p.example/hook",
            "--secret",
            "-",
        ],
        input=secret + "\n",
    )
    assert refused.exit_code == 2 and f"tenant 1 has no service provider {tenant_2_provider}" in refused.output

    listed = runner.invoke(app, ["webhooks", "destinations", "--tenant", "2", "--json"])
    assert listed.exit_code == 0, listed.output
    rows = json.loads(listed.output)
    assert [(r["tenant_id"], r["service_provider_id"], r["url"]) for r in rows] == [
        (2, None, "https://t2.example/hook"),
        (2, tenant_2_provider, "https://p.example/hook"),
    ]
    assert secret not in listed.output
    assert json.loads(runner.invoke(app, ["webhooks", "destinations", "--tenant", "1", "--json"]).output) == []
    with bh.rt.session_factory() as session:
        stored = session.execute(text('SELECT "Secret" FROM "WebhookDestination"')).scalars().all()
    assert stored and all(s.startswith("enc:") and secret not in s for s in stored)

    removed = runner.invoke(app, ["webhooks", "remove-destination", "--tenant", "2"])
    assert removed.exit_code == 0, removed.output
    with bh.rt.session_factory() as session:
        assert [d["service_provider_id"] for d in list_destinations(session, 2)] == [tenant_2_provider]
