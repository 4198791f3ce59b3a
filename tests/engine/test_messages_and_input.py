"""Duplicated and malformed messages, refused files, callbacks vs polling, crash recovery, the demo."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from pathlib import Path

from sqlalchemy import select, update
from typer.testing import CliRunner

from bulkchange.carrier.thingspace.adapter import connection_for as thingspace_connection
from bulkchange.carrier.thingspace.client import ThingSpaceClient
from bulkchange.carrier.thingspace.models import DeviceId
from bulkchange.demo import run_demo
from bulkchange.domain.statuses import DeviceStatusId
from bulkchange.engine import changes as ch
from bulkchange.engine.accounts import load_account
from bulkchange.engine.submit import SubmissionRefused
from bulkchange.queue.message import BulkChangeMessage
from bulkchange.settings import Settings
from bulkchange.simulator import SimulatorConfig
from bulkchange.store.tables import (
    Device,
    DeviceBulkChange,
    DeviceBulkChangeLog,
    M2MDeviceChange,
    QueueMessage,
    ServiceProvider,
    ThingSpaceAuthentication,
    ThingSpaceCallBackResponseLog,
    utcnow,
)

from .conftest import Harness, activation_row, make_harness, new_iccid, new_imei


async def test_duplicated_messages_never_repeat_a_carrier_call(harness: Harness) -> None:
    iccids = [new_iccid() for _ in range(4)]
    bulk = harness.submit([activation_row(i, new_imei()) for i in iccids])
    for _ in range(3):  # SQS delivers at least once: the same wake-up three more times
        harness.rt.transport.send(BulkChangeMessage(bulk_change_id=bulk))
    await harness.run()
    assert harness.counts(bulk) == {"PROCESSED": 4}
    for iccid in iccids:
        assert harness.actions(iccid) == {"add": 1, "activate": 1}


def _raw_message(harness: Harness, attributes: dict[str, dict[str, str]]) -> None:
    with harness.rt.session_factory.begin() as s:
        s.add(
            QueueMessage(
                message_id=uuid.uuid4().hex,
                body="raw",
                attributes=json.dumps(attributes),
                visible_at=utcnow(),
            )
        )


async def test_malformed_messages_are_refused_and_lose_nothing(harness: Harness) -> None:
    iccid = new_iccid()
    bulk = harness.submit([{"ICCID": iccid}], status="inventory")
    # The good message is lost (say, a crashed sender); only malformed ones arrive.
    for received in harness.rt.transport.receive(max_messages=10):
        harness.rt.transport.delete(received.receipt_handle)
    _raw_message(harness, {"BulkChangeId": {"DataType": "Number", "StringValue": "twelve"}})
    _raw_message(
        harness,
        {
            "BulkChangeId": {"DataType": "Number", "StringValue": str(bulk)},
            "RetryNumber": {"DataType": "Number", "StringValue": "x"},
        },
    )
    await harness.run()
    assert harness.counts(bulk) == {"PROCESSED": 1}
    assert harness.actions(iccid) == {"add": 1}
    assert harness.rt.transport.stats().dead_lettered == 0


async def test_a_bulk_change_whose_messages_all_vanished_is_recovered(harness: Harness) -> None:
    iccid = new_iccid()
    bulk = harness.submit([{"ICCID": iccid}], status="inventory")
    for received in harness.rt.transport.receive(max_messages=10):
        harness.rt.transport.delete(received.receipt_handle)
    with harness.rt.session_factory.begin() as s:  # as if the wake-up was due long ago
        s.execute(update(DeviceBulkChange).values(next_wake_at=utcnow() - timedelta(days=1)))
    await harness.run()
    assert harness.counts(bulk) == {"PROCESSED": 1}


def _refuse(harness: Harness, rows: list[dict[str, str]], status: str = "active") -> SubmissionRefused:
    try:
        harness.submit(rows, status=status)
    except SubmissionRefused as exc:
        return exc
    raise AssertionError("submission was accepted")


def test_refused_files_create_nothing(harness: Harness) -> None:
    good = new_iccid()
    bad_check_digit = good[:-1] + str((int(good[-1]) + 1) % 10)
    other_providers = new_iccid()
    with harness.rt.session_factory.begin() as s:
        other = ServiceProvider(name="other")
        s.add(other)
        s.flush()
        s.add(Device(service_provider_id=other.id, iccid=other_providers, device_status_id=DeviceStatusId.ACTIVE))
    dup = new_iccid()
    exc = _refuse(
        harness,
        [
            activation_row(good, new_imei()),
            activation_row(bad_check_digit, new_imei()),
            {"ICCID": new_iccid(), "Status": "hibernate"},
            activation_row(dup, new_imei()),
            activation_row(dup, new_imei()),
            activation_row(other_providers, new_imei()),
            {"ICCID": new_iccid()},  # active without IMEI or SKU
            {"ICCID": new_iccid(), "IMEI": new_imei()},  # active without service plan / zip
        ],
    )
    problems = {(p.row, p.field): p.message for p in exc.report.problems}
    assert "Luhn" in problems[(2, "ICCID")]
    assert "unknown status 'hibernate'" in problems[(3, "Status")]
    assert problems[(5, "ICCID")] == "duplicate of row 4"
    assert "another service provider" in problems[(6, "ICCID")]
    # Every problem of a row, together: row 7 lacks the IMEI (or SKU), the service plan and the zip code.
    assert {f for r, f in problems if r == 7} == {"IMEI", "ServicePlan", "MdnZipCode"}
    assert "activations need ICCID, ServicePlan and MdnZipCode, and IMEI or SkuNumber" in problems[(7, "IMEI")]
    assert (8, "ServicePlan") in problems and (8, "MdnZipCode") in problems
    assert (1, "ICCID") not in problems
    assert harness.count_rows(DeviceBulkChange) == 0
    assert harness.count_rows(M2MDeviceChange) == 0
    assert harness.rt.transport.stats().visible == 0


def test_forbidden_transition_and_busy_device_are_refused(harness: Harness) -> None:
    active = new_iccid()
    harness.seed_device(active, "active")
    exc = _refuse(harness, [{"ICCID": active}], status="restore")
    assert "cannot go from 'active' to 'restore'" in exc.report.problems[0].message
    busy = new_iccid()
    harness.submit([{"ICCID": busy}], status="inventory")
    exc = _refuse(harness, [{"ICCID": busy}], status="inventory")
    assert "unfinished change in bulk change" in exc.report.problems[0].message


def test_cli_submit_prints_a_per_row_report_and_exits_nonzero(harness: Harness, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from bulkchange.cli.main import app

    bad = new_iccid()[:-1] + "X"
    csv_file = tmp_path / "devices.csv"
    csv_file.write_text(f"ICCID,IMEI\n{bad},{new_imei()}\n")
    monkeypatch.setenv("BULKCHANGE_DATABASE_URL", harness.rt.settings.database_url)
    result = CliRunner().invoke(
        app,
        ["submit", str(csv_file), "--status", "inventory", "--service-provider", str(harness.provider_id), "--json"],
    )
    assert result.exit_code == 1, result.output
    report = json.loads(result.output.strip().splitlines()[-1])
    assert report["refused"] is True and report["problems"][0]["field"] == "ICCID"
    assert harness.count_rows(M2MDeviceChange) == 0


async def test_callback_path_records_and_applies_callbacks(harness: Harness) -> None:
    iccid = new_iccid()
    bulk = harness.submit([activation_row(iccid, new_imei())])
    await harness.run()
    [change] = harness.changes(bulk)
    assert change.status == "PROCESSED"
    with harness.rt.session_factory() as s:
        stored = s.execute(
            select(ThingSpaceCallBackResponseLog).where(ThingSpaceCallBackResponseLog.iccid == iccid)
        ).scalar_one()
        logs = {
            r.log_entry_description
            for r in s.execute(
                select(DeviceBulkChangeLog).where(DeviceBulkChangeLog.m2m_device_change_id == change.id)
            ).scalars()
        }
    assert stored.request_id == change.carrier_request_id and stored.m2m_device_change_id == change.id
    assert "ThingSpace Callback: CarrierService" in logs
    assert "Check ThingSpace Device: ThingSpace API" not in logs  # the callback settled it, not polling


async def test_a_replayed_callback_changes_nothing(harness: Harness) -> None:
    iccid = new_iccid()
    bulk = harness.submit([activation_row(iccid, new_imei())])
    await harness.run()
    with harness.rt.session_factory() as s:
        stored = s.execute(select(ThingSpaceCallBackResponseLog)).scalar_one()
    payload = json.loads(stored.api_response)
    assert harness.rt.engine.apply_callback(payload, service_provider_id=harness.provider_id) == "duplicate"
    assert harness.counts(bulk) == {"PROCESSED": 1}


async def test_polling_path_without_a_listener(polling_harness: Harness) -> None:
    h = polling_harness
    iccid = new_iccid()
    bulk = h.submit([activation_row(iccid, new_imei())])
    await h.run()
    [change] = h.changes(bulk)
    assert change.status == "PROCESSED", change.status_details
    assert h.device(iccid).msisdn == h.sim.device(iccid).msisdn  # type: ignore[union-attr]
    assert h.sim.counters.callbacks_sent == 0
    with h.rt.session_factory() as s:
        assert s.get(DeviceBulkChange, bulk).check_round >= 1  # type: ignore[union-attr]


async def test_a_crash_before_the_request_left_is_sent_once_after_reconcile(harness: Harness) -> None:
    iccid = new_iccid()
    bulk = harness.submit([{"ICCID": iccid}], status="inventory")
    with harness.rt.session_factory() as s:  # a worker claims (intent committed) and dies before sending
        [_claimed] = ch.claim(s, bulk, worker="dead", lease_s=300, now=utcnow(), limit=10)
    with harness.rt.session_factory.begin() as s:
        s.execute(update(M2MDeviceChange).values(lease_expires_at=utcnow() - timedelta(seconds=1)))
    await harness.run()
    assert harness.counts(bulk) == {"PROCESSED": 1}
    assert harness.actions(iccid) == {"add": 1}


async def test_a_crash_after_the_carrier_acted_is_not_resent(harness: Harness) -> None:
    iccid = new_iccid()
    bulk = harness.submit([{"ICCID": iccid}], status="inventory")
    with harness.rt.session_factory() as s:
        ch.claim(s, bulk, worker="dead", lease_s=300, now=utcnow(), limit=10)
        auth = s.execute(select(ThingSpaceAuthentication)).scalar_one()
        account = load_account(s, auth.service_provider_id)
    async with ThingSpaceClient(thingspace_connection(account)) as client:  # the request left; the worker died
        await client.add_devices([[DeviceId(kind="iccid", id=iccid)]])
    with harness.rt.session_factory.begin() as s:
        s.execute(update(M2MDeviceChange).values(lease_expires_at=utcnow() - timedelta(seconds=1)))
    await harness.run()
    [change] = harness.changes(bulk)
    assert change.status == "PROCESSED"
    assert harness.actions(iccid) == {"add": 1}
    assert harness.sim.counters.requests["devices/actions/add"] == 1
    with harness.rt.session_factory() as s:
        descriptions = [r.log_entry_description for r in s.execute(select(DeviceBulkChangeLog)).scalars()]
    assert "Reconcile ThingSpace Device: ThingSpace API" in descriptions


def test_demo_database_agrees_with_the_simulator(db_url: str) -> None:
    result, sim = run_demo(36, settings=Settings(database_url=db_url))
    assert result.ok, (result.errors, result.mismatches)
    assert result.by_status == {"PROCESSED": 36}
    states = {d.state for d in sim.devices()}
    assert {"preactive", "active", "suspend", "deactive"} <= states


async def test_a_check_message_for_another_round_cannot_end_the_check_early(tmp_path: Path) -> None:
    config = SimulatorConfig(activation_delay_s=3600)  # the activation stays pending
    for h in make_harness(tmp_path, sim_config=config, callbacks=False, activation_check_delay_s=600):
        bulk = h.submit([activation_row(new_iccid(), new_imei())])
        await h.run_once()  # Add, Activate; the first check round is scheduled 600 s out
        assert h.changes(bulk)[0].status == "AWAITING_RESULT"
        # A well-formed message claiming to be the last round, out of turn: only a wake-up.
        h.rt.transport.send(
            BulkChangeMessage(bulk_change_id=bulk, is_retry_new_activate_thingspace_device=True, retry_number=99)
        )
        assert await h.run_once() == 1
        [change] = h.changes(bulk)
        assert change.status == "AWAITING_RESULT"  # not ended ACTIVATION_UNVERIFIED before its checks
