"""A worker process logs in to a carrier account once: the access token and the session token are kept
between slices and bulk changes (``engine.sessions.memory_for``) until they expire or are refused."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import update

from bulkchange.store.tables import ThingSpaceAuthentication

from .conftest import Harness, activation_row, make_harness, new_iccid, new_imei


@pytest.fixture
def small_slices(tmp_path: Path) -> Iterator[Harness]:
    # Two devices per request and per slice: a bulk change of 6 activations takes several messages.
    yield from make_harness(tmp_path, batch_max_devices=2, slice_max_changes=2)


def _auth_calls(h: Harness) -> tuple[int, int]:
    requests = h.sim.counters.requests
    return requests.get("oauth2/token", 0), requests.get("session/login", 0)


def _end_every_session(h: Harness) -> None:
    with h.sim.lock:
        for token in list(h.sim.auth.sessions):
            h.sim.auth.end_session(token)


async def test_one_token_and_one_login_for_every_slice_and_bulk_change_of_a_process(small_slices: Harness) -> None:
    h = small_slices
    before = _auth_calls(h)  # the listener's registration
    first = h.submit([activation_row(new_iccid(), new_imei()) for _ in range(6)])
    await h.run()
    second = h.submit([activation_row(new_iccid(), new_imei()) for _ in range(6)])
    await h.run()
    assert h.counts(first) == {"PROCESSED": 6} and h.counts(second) == {"PROCESSED": 6}
    assert h.sim.counters.requests["devices/actions/add"] >= 6  # several slices each
    assert _auth_calls(h) == (before[0] + 1, before[1] + 1)


async def test_a_session_the_carrier_ended_is_replaced_once(small_slices: Harness) -> None:
    h = small_slices
    first = h.submit([activation_row(new_iccid(), new_imei()) for _ in range(4)])
    await h.run()
    tokens, logins = _auth_calls(h)
    _end_every_session(h)
    second = h.submit([activation_row(new_iccid(), new_imei()) for _ in range(4)])
    await h.run()
    assert h.counts(first) == {"PROCESSED": 4} and h.counts(second) == {"PROCESSED": 4}
    assert _auth_calls(h) == (tokens, logins + 1)  # the token still valid; one new session


async def test_changed_credentials_are_never_served_the_old_session(small_slices: Harness) -> None:
    h = small_slices
    first = h.submit([activation_row(new_iccid(), new_imei())])
    await h.run()
    assert h.counts(first) == {"PROCESSED": 1}
    _, logins = _auth_calls(h)
    with h.rt.session_factory.begin() as s:  # the password is changed (wrongly): the kept session is not used
        s.execute(update(ThingSpaceAuthentication).values(password="wrong-password"))
    second = h.submit([activation_row(new_iccid(), new_imei())])
    await h.run()
    assert _auth_calls(h)[1] == logins + 1  # a login with the new credentials, refused
    assert h.counts(second) == {"READY": 1}  # untouched: the bulk change failed at authentication
