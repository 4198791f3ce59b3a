"""Carrier limits: devices per request, activate requests per minute, actions per line per day."""

from __future__ import annotations

from collections.abc import Callable

from .helpers import Env, Receiver, register


def test_too_many_devices(make_env: Callable[..., Env]) -> None:
    env = make_env(max_devices_per_request=3)
    devices = env.sim.preload(4)
    for action in ("activate", "deactivate", "suspend", "restore"):
        response = env.api.action(action, *(d.iccid for d in devices))
        assert response.status_code == 400
        assert response.json()["errorCode"] == "UnifiedWebService.INPUT_INVALID.Request.TooManyDevices"
    assert env.api.action("activate", *(d.iccid for d in devices[:3])).status_code == 200


def test_activate_rate_limit_with_retry_after(make_env: Callable[..., Env]) -> None:
    env = make_env(activate_requests_per_minute=3)
    devices = env.sim.preload(5)
    for device in devices[:3]:
        assert env.api.action("activate", device.iccid).status_code == 200
        env.advance(10)
    limited = env.api.action("activate", devices[3].iccid)
    assert limited.status_code == 429
    assert limited.headers["Retry-After"] == "30"  # the first slot frees 60 s after it was taken
    assert limited.json()["errorCode"] == "UnifiedWebService.REQUEST_FAILED.RateLimitExceeded"
    assert env.state(devices[3].iccid) == "preactive"  # nothing was done
    assert env.api.action("suspend", devices[0].iccid).status_code == 200  # only activate is limited
    env.advance(30)
    assert env.api.action("activate", devices[3].iccid).status_code == 200


def test_daily_actions_per_line(make_env: Callable[..., Env], receiver: Receiver) -> None:
    env = make_env(daily_actions_per_line=3)
    register(env.api, receiver.url)
    device = env.sim.add_device("89148000000000000019", state="active")
    for action in ("suspend", "restore", "suspend"):
        env.api.action(action, device.iccid)
        env.sim.settle()
    env.api.action("restore", device.iccid)
    env.sim.settle()
    last = receiver.bodies()[-1]
    assert last["faultResponse"]["faultcode"] == "UnifiedWebService.REQUEST_FAILED.Device.DailyActionLimitExceeded"
    assert env.state(device.iccid) == "suspend"
    env.advance(24 * 3600)
    env.api.token = None  # token and session expired meanwhile
    env.api.login()
    assert env.api.action("restore", device.iccid).status_code == 200
    env.sim.settle()
    assert env.state(device.iccid) == "active"
