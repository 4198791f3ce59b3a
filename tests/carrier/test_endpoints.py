"""Every ThingSpace endpoint of the client, over real loopback HTTP against the simulator."""

from __future__ import annotations

import pytest

from bulkchange.carrier.errors import DeviceNotFound, InvalidTransition, PermanentError, error_for_code
from bulkchange.carrier.thingspace.client import ThingSpaceClient
from bulkchange.carrier.thingspace.models import CallbackMessage, DeviceId
from bulkchange.simulator import Simulator, SimulatorConfig

from .conftest import ACCOUNT, ICCID, IMEI, CallbackReceiver, ClientFactory


def ids(iccid: str, imei: str | None = None) -> list[DeviceId]:
    out = [DeviceId(kind="iccid", id=iccid)]
    if imei:
        out.append(DeviceId(kind="IMEI", id=imei))
    return out


async def test_add_returns_per_device_lines(sim: Simulator, client: ThingSpaceClient) -> None:
    existing = sim.preload(1)[0]
    result = await client.add_devices(
        [ids(ICCID, IMEI), ids(existing.iccid), [DeviceId(kind="imei", id="356938035643809")]],
        custom_fields={"CustomField1": "x"},
    )
    assert result.http_status == 200
    assert [r.response for r in result.devices] == [
        "Success",
        "Error. Device already exists.",
        "Error. An ICCID is required to add a device.",
    ]
    assert [r.ok for r in result.devices] == [True, True, False]
    assert result.devices[1].already_exists
    assert '"devicesToAdd"' in result.request_text and ACCOUNT in result.request_text
    assert "Success" in result.response_text
    dev = sim.device(ICCID)
    assert dev is not None and dev.state == "preactive"


async def test_activate_then_status_and_device(sim: Simulator, client: ThingSpaceClient) -> None:
    await client.add_devices([ids(ICCID, IMEI)])
    accepted = await client.activate([ids(ICCID, IMEI)], service_plan="M2M_4G", mdn_zip_code="98801")
    assert accepted.request_id and accepted.http_status == 200
    assert '"servicePlan":"M2M_4G"' in accepted.request_text
    assert accepted.request_id in accepted.response_text
    sim.settle(5)
    assert await client.request_status(accepted.request_id) == "Success"
    device = await client.get_device(DeviceId(kind="ICCID", id=ICCID))
    assert device is not None
    assert device.state == "active"
    assert device.iccid == ICCID and device.imei == IMEI
    assert device.msisdn and device.mdn and device.ip_address
    assert device.msisdn == sim.device(ICCID).msisdn  # type: ignore[union-attr]
    assert device.service_plan == "M2M_4G"


@pytest.mark.parametrize("sim_config", [SimulatorConfig(activation_delay_s=3600.0)])
async def test_request_status_pending(client: ThingSpaceClient) -> None:
    accepted = await client.activate([ids(ICCID, IMEI)], service_plan="M2M_4G", mdn_zip_code="98801")
    assert await client.request_status(accepted.request_id) == "Pending"


async def test_suspend_restore_deactivate_delete(sim: Simulator, client: ThingSpaceClient) -> None:
    sim.add_device(ICCID, IMEI, state="active")
    await client.suspend([ids(ICCID)], with_billing=False)
    sim.settle(5)
    assert sim.device(ICCID).state == "suspend"  # type: ignore[union-attr]
    await client.restore([ids(ICCID)])
    sim.settle(5)
    assert sim.device(ICCID).state == "active"  # type: ignore[union-attr]
    accepted = await client.deactivate([ids(ICCID)], reason_code="FF", etf_waiver=True)
    assert '"reasonCode":"FF"' in accepted.request_text and '"etfWaiver":true' in accepted.request_text
    sim.settle(5)
    assert sim.device(ICCID).state == "deactive"  # type: ignore[union-attr]
    results = await client.delete_devices([ids(ICCID)])
    assert len(results) == 1 and results[0].ok
    assert sim.device(ICCID) is None
    assert sim.counters.actions[ICCID] == {"suspend": 1, "restore": 1, "deactivate": 1, "delete": 1}


async def test_delete_refused_per_device_is_not_an_exception(sim: Simulator, client: ThingSpaceClient) -> None:
    sim.add_device(ICCID, IMEI, state="active")
    [result] = await client.delete_devices([ids(ICCID)])
    assert not result.ok and result.message == "The device is not in deactive state."


async def test_get_device_unknown_is_none(client: ThingSpaceClient) -> None:
    assert await client.get_device(DeviceId(kind="iccid", id=ICCID)) is None


async def test_list_pages_through_more_than_2000(sim: Simulator, make_client: ClientFactory) -> None:
    # 2,000 devices a page: more than the fixture's 5 s timeout on a loaded machine, and a retried page would
    # be a fifth request below.
    client = make_client(timeout=60.0)
    created = {d.iccid for d in sim.preload(4500)}
    first = await client.list_page()
    assert first.has_more_data and len(first.devices) == 2000  # HTTP 202 is success
    seen = [d.iccid async for d in client.list_devices()]
    assert len(seen) == 4500 and set(seen) == created
    # 1 direct page + 3 pages of the iterator
    assert sim.counters.requests["devices/actions/list"] == 4


async def test_list_filters(sim: Simulator, client: ThingSpaceClient) -> None:
    sim.preload(3)
    sim.add_device(ICCID, IMEI, state="active")
    page = await client.list_page(current_state="Active", max_number_of_devices=10)
    assert not page.has_more_data
    assert [d.iccid for d in page.devices] == [ICCID]
    small = await client.list_page(max_number_of_devices=2)
    assert small.has_more_data and len(small.devices) == 2


async def test_provisioning_errors_are_typed(client: ThingSpaceClient) -> None:
    with pytest.raises(PermanentError) as info:
        await client.activate([ids(ICCID)], service_plan="M2M_4G", mdn_zip_code="")
    assert info.value.code == "REQUEST_FAILED.UnexpectedError"
    assert info.value.http_status == 400 and info.value.device == ICCID
    assert info.value.endpoint == "devices/actions/activate"
    assert info.value.response_text and "UnexpectedError" in info.value.response_text
    with pytest.raises(PermanentError) as info:
        await client.suspend([ids(ICCID)], account_name="0000999999-00001")
    assert info.value.code == "REQUEST_FAILED.AccountNotFound"


@pytest.mark.parametrize("sim_config", [SimulatorConfig(activation_delay_s=0.0, max_devices_per_request=2)])
async def test_too_many_devices(client: ThingSpaceClient) -> None:
    with pytest.raises(PermanentError) as info:
        await client.restore([ids(ICCID), ids("89148000000800784267"), ids("89148000000800784275")])
    assert info.value.code == "INPUT_INVALID.Request.TooManyDevices"
    assert info.value.device is None  # not about one device


async def test_callbacks_register_list_delete(client: ThingSpaceClient) -> None:
    await client.register_callback("CarrierService", "http://127.0.0.1:9001/cb", username="u", password="cbpass")
    listeners = await client.list_callbacks()
    assert [(listener.service_name, listener.url) for listener in listeners] == [
        ("CarrierService", "http://127.0.0.1:9001/cb")
    ]
    assert "cbpass" not in repr(listeners)
    await client.delete_callback("CarrierService")
    assert await client.list_callbacks() == []
    with pytest.raises(PermanentError):
        await client.delete_callback("CarrierService")


async def test_callbacks_received_and_parsed(
    sim: Simulator, client: ThingSpaceClient, receiver: tuple[CallbackReceiver, str]
) -> None:
    rec, url = receiver
    await client.register_callback("CarrierService", url)
    sim.add_device("89148000000800784267", state="active")
    sim.add_device("89148000000800784275", account="0000999999-00001")
    ok = await client.activate([ids(ICCID, IMEI)], service_plan="M2M_4G", mdn_zip_code="98801")
    again = await client.activate([ids("89148000000800784267")], service_plan="M2M_4G", mdn_zip_code="98801")
    foreign = await client.activate([ids("89148000000800784275")], service_plan="M2M_4G", mdn_zip_code="98801")
    sim.settle(5)
    messages = {m.request_id: m for m in (CallbackMessage.parse(b) for b in rec.received())}
    assert set(messages) == {ok.request_id, again.request_id, foreign.request_id}

    good = messages[ok.request_id]
    assert good.succeeded and good.operation == "activate" and good.state == "active"
    assert good.iccid == ICCID and good.msisdn == sim.device(ICCID).msisdn  # type: ignore[union-attr]
    assert good.ip_address and good.mdn

    bad = messages[again.request_id]
    assert not bad.succeeded and bad.fault_code
    err = error_for_code(bad.fault_code, bad.fault_string or "", device=bad.iccid, endpoint="callback")
    assert isinstance(err, InvalidTransition) and err.code == "REQUEST_FAILED.DeviceAlreadyActive"
    assert err.device == "89148000000800784267"

    other = messages[foreign.request_id]
    assert other.fault_code
    assert isinstance(error_for_code(other.fault_code, other.fault_string or ""), DeviceNotFound)


async def test_logout_then_login_again(sim: Simulator, client: ThingSpaceClient) -> None:
    await client.list_page()
    await client.logout()
    await client.logout()  # no session: nothing sent
    await client.list_page()
    counters = sim.counters.requests
    assert counters["session/logout"] == 1
    assert counters["session/login"] == 2
    assert counters["oauth2/token"] == 1


async def test_limiter_sees_every_request(make_client: ClientFactory) -> None:
    seen: list[str] = []

    async def limiter(endpoint: str) -> None:
        seen.append(endpoint)

    client = make_client(limiter=limiter)
    await client.list_page()
    await client.suspend([ids(ICCID)])
    assert seen == ["oauth2/token", "session/login", "devices/actions/list", "devices/actions/suspend"]


async def test_empty_device_list_is_refused_locally(client: ThingSpaceClient) -> None:
    with pytest.raises(ValueError, match="at least one device"):
        await client.activate([], service_plan="p", mdn_zip_code="1")


async def test_get_devices_reads_many_devices_in_list_pages(client: ThingSpaceClient, sim: Simulator) -> None:
    preloaded = sim.preload(2100, state="active")
    before = sim.counters.requests.get("devices/actions/list", 0)
    wanted = [DeviceId(kind="iccid", id=d.iccid) for d in preloaded]
    wanted.append(DeviceId(kind="ICCID", id="89148000000000000000"))  # unknown to the carrier: just absent
    found = await client.get_devices(wanted)
    assert sorted(d.iccid or "" for d in found) == sorted(d.iccid for d in preloaded)
    assert all(d.state == "active" and d.msisdn for d in found)
    assert sim.counters.requests["devices/actions/list"] - before == 2  # 2,000 per request
