"""Every answer class maps to its typed error, by HTTP status and errorCode (over real HTTP to a stub)."""

from __future__ import annotations

import base64
import json
import socket
from datetime import UTC, datetime

import pytest

from bulkchange.carrier.controlcenter import ControlCenterClient, ControlCenterConnection, error_for_answer
from bulkchange.carrier.errors import (
    AuthenticationFailed,
    CarrierError,
    DeviceNotFound,
    OutcomeUnknown,
    PermanentError,
    RateLimited,
    TransientError,
)

from .conftest import ClientFactory, Scripted, Stub

ICCID = "89011700000000000012"


def _json(status: int, body: object, **headers: str) -> Scripted:
    return Scripted(status, json.dumps(body), dict(headers))


@pytest.mark.parametrize(
    ("status", "code", "edit", "cls"),
    [
        (401, "10000001", False, AuthenticationFailed),
        (401, None, True, AuthenticationFailed),
        (400, "10000001", False, AuthenticationFailed),
        (429, "40000029", True, RateLimited),
        (429, None, False, RateLimited),
        (400, "40000029", True, RateLimited),
        (403, "40000029", False, RateLimited),
        (500, "90000500", True, TransientError),
        (502, None, False, TransientError),
        (503, None, True, TransientError),
        (504, None, False, TransientError),
        (504, None, True, OutcomeUnknown),
        (404, "90000404", True, DeviceNotFound),
        (400, "10000003", False, PermanentError),
        (400, "10000024", False, PermanentError),
        (400, "90000411", True, PermanentError),
        (403, None, True, PermanentError),
        (409, "12345678", True, PermanentError),
    ],
)
def test_error_for_answer(status: int, code: str | None, edit: bool, cls: type[CarrierError]) -> None:
    err = error_for_answer(status, code, "carrier words", edit=edit, device=ICCID, endpoint="devices/edit")
    assert type(err) is cls
    assert (err.code, err.http_status, err.device, err.endpoint) == (code, status, ICCID, "devices/edit")
    assert "carrier words" in err.message


def test_classification_ignores_the_message() -> None:
    err = error_for_answer(400, "12345678", "Rate limit exceeded, invalid credentials", edit=False)
    assert type(err) is PermanentError


async def test_what_goes_on_the_wire(stub: tuple[Stub, str], make_stub_client: ClientFactory) -> None:
    server, _ = stub
    server.answer(_json(202, {"iccid": ICCID}))
    accepted = await make_stub_client(username="pod19-api", api_key="k-1").edit_device(ICCID, status="retired")
    [seen] = server.seen
    assert (seen.method, seen.path) == ("PUT", f"/rws/api/v1/devices/{ICCID}")
    assert seen.headers["authorization"] == "Basic " + base64.b64encode(b"pod19-api:k-1").decode()
    assert seen.headers["accept"] == "application/json"
    assert seen.headers["content-type"] == "application/json"
    assert json.loads(seen.body) == {"status": "RETIRED"}
    assert (accepted.http_status, accepted.scheduled) == (202, True)
    assert accepted.response_text == json.dumps({"iccid": ICCID})
    assert accepted.request_text.startswith(f"PUT {_}/v1/devices/{ICCID}\n")


async def test_401_without_code(stub: tuple[Stub, str], make_stub_client: ClientFactory) -> None:
    server, _ = stub
    body = {"errorMessage": "Full authentication is required to access this resource"}
    server.answer(_json(401, body, **{"WWW-Authenticate": 'Basic realm="Jasper"'}))
    with pytest.raises(AuthenticationFailed) as refused:
        await make_stub_client().get_device(ICCID)
    assert (refused.value.code, refused.value.device) == (None, ICCID)
    assert "Full authentication is required" in refused.value.message
    assert len(server.seen) == 1


async def test_429_carries_retry_after(stub: tuple[Stub, str], make_stub_client: ClientFactory) -> None:
    server, _ = stub
    server.answer(_json(429, {"errorMessage": "Rate limit exceeded", "errorCode": "40000029"}, **{"Retry-After": "7"}))
    with pytest.raises(RateLimited) as limited:
        await make_stub_client(max_attempts=1).edit_device(ICCID, status="ACTIVATED")
    assert (limited.value.retry_after, limited.value.code, limited.value.device) == (7.0, "40000029", ICCID)


async def test_a_long_retry_after_is_left_to_the_caller(
    stub: tuple[Stub, str], make_stub_client: ClientFactory
) -> None:
    server, _ = stub
    server.answer(_json(429, {"errorCode": "40000029"}, **{"Retry-After": "120"}))
    with pytest.raises(RateLimited):
        await make_stub_client(max_attempts=4).get_device(ICCID)
    assert len(server.seen) == 1  # not slept on


async def test_rate_limit_code_under_another_status_is_retried(
    stub: tuple[Stub, str], make_stub_client: ClientFactory
) -> None:
    server, _ = stub
    server.answer(_json(400, {"errorMessage": "Too many", "errorCode": "40000029"}), _json(200, {"iccid": ICCID}))
    accepted = await make_stub_client().edit_device(ICCID, status="ACTIVATED")
    assert accepted.iccid == ICCID
    assert len(server.seen) == 2


async def test_5xx_is_retried_then_succeeds(stub: tuple[Stub, str], make_stub_client: ClientFactory) -> None:
    server, _ = stub
    server.answer(
        Scripted(503, "<html>busy</html>", media_type="text/html"), _json(200, {"iccid": ICCID, "status": "ACTIVATED"})
    )
    device = await make_stub_client().get_device(ICCID)
    assert device is not None and device.status == "ACTIVATED"
    assert len(server.seen) == 2


async def test_504_to_an_edit_is_outcome_unknown(stub: tuple[Stub, str], make_stub_client: ClientFactory) -> None:
    server, _ = stub
    server.answer(Scripted(504, ""))
    with pytest.raises(OutcomeUnknown) as unknown:
        await make_stub_client().edit_device(ICCID, status="ACTIVATED")
    assert unknown.value.http_status == 504
    assert len(server.seen) == 1


async def test_permanent_error_keeps_code_and_message(stub: tuple[Stub, str], make_stub_client: ClientFactory) -> None:
    server, _ = stub
    server.answer(_json(400, {"errorMessage": "ModifiedSince is required.", "errorCode": "10000003"}))
    with pytest.raises(PermanentError) as refused:
        await make_stub_client().search_page(datetime.now(UTC))
    assert (refused.value.code, refused.value.message, refused.value.http_status) == (
        "10000003",
        "ModifiedSince is required.",
        400,
    )
    assert len(server.seen) == 1


async def test_latin1_error_body_is_read(stub: tuple[Stub, str], make_stub_client: ClientFactory) -> None:
    server, _ = stub
    body = json.dumps({"errorMessage": "Ung\u00fcltiger Status", "errorCode": "20000001"}, ensure_ascii=False)
    server.answer(Scripted(400, body.encode("latin-1"), media_type="application/json;charset=ISO-8859-1"))
    with pytest.raises(PermanentError) as refused:
        await make_stub_client().edit_device(ICCID, status="ACTIVATED")
    assert (refused.value.message, refused.value.code) == ("Ung\u00fcltiger Status", "20000001")


@pytest.mark.parametrize(
    ("reply", "why"),
    [
        (Scripted(200, ""), "with an empty body"),
        (Scripted(200, "{not json"), "with a body that is not JSON"),
        (Scripted(200, "{}"), "without the ICCID"),
        (Scripted(200, '{"iccid": ""}'), "without the ICCID"),
        (Scripted(200, "[]"), "without the ICCID"),
        (Scripted(200, '{"iccid": "89011700000000000099"}'), "for another ICCID (89011700000000000099)"),
        (Scripted(204, ""), "with an empty body"),
    ],
)
async def test_an_edit_answer_without_its_iccid_is_outcome_unknown(
    stub: tuple[Stub, str], make_stub_client: ClientFactory, reply: Scripted, why: str
) -> None:
    server, _ = stub
    server.answer(reply)
    with pytest.raises(OutcomeUnknown) as unknown:
        await make_stub_client().edit_device(ICCID, status="ACTIVATED")
    assert unknown.value.device == ICCID
    assert f"answered the edit {reply.status} {why};" in unknown.value.message
    assert len(server.seen) == 1  # never sent twice


async def test_numeric_iccid_in_the_edit_answer_is_accepted(
    stub: tuple[Stub, str], make_stub_client: ClientFactory
) -> None:
    server, _ = stub
    server.answer(Scripted(200, '{"iccid": 89011700000000000012}'))
    assert (await make_stub_client().edit_device(ICCID, status="ACTIVATED")).iccid == ICCID


async def test_connection_refused_is_transient_and_never_unknown() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound but not listening: connections are refused
        conn = ControlCenterConnection(base_url=f"http://127.0.0.1:{port}/rws/api", username="u", api_key="k")
        async with ControlCenterClient(conn, max_attempts=2, backoff_initial_s=0.01) as client:
            with pytest.raises(TransientError, match="before sending") as failed:
                await client.edit_device(ICCID, status="ACTIVATED")
    assert not isinstance(failed.value, OutcomeUnknown)
    assert failed.value.device == ICCID
