"""Request handlers for the M2M endpoints, free of HTTP plumbing.

Each handler takes the simulator and the parsed JSON body, is called with the
simulator lock held, and returns ``(http_status, json_payload)`` or raises
:class:`~.errors.ApiError`. Keeping them synchronous guarantees no ``await``
happens while the lock is held.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import errors
from .callbacks import Listener, port_allowed
from .devices import SimDevice, device_json, request_ids

if TYPE_CHECKING:
    from .simulator import Simulator

Reply = tuple[int, Any]


def _account(sim: Simulator, body: dict[str, Any], required: bool = False) -> str:
    name = body.get("accountName")
    if name is None or name == "":
        if required:
            raise errors.unexpected("accountName is required.")
        return sim.config.account
    if not isinstance(name, str) or name not in sim.known_accounts():
        raise errors.account_not_found(str(name))
    return name


def _items(body: dict[str, Any], key: str, sim: Simulator, required: bool = True) -> list[Any]:
    value = body.get(key)
    if value is None and not required:
        return []
    if not isinstance(value, list) or not value:
        raise errors.unexpected(f"{key} is required.")
    if len(value) > sim.config.max_devices_per_request:
        raise errors.too_many_devices(sim.config.max_devices_per_request)
    return value


def _device_ids(item: Any) -> list[tuple[str, str]]:
    ids = request_ids(item.get("deviceIds")) if isinstance(item, dict) else []
    if not ids:
        raise errors.unexpected("Each device needs deviceIds with kind and id.")
    return ids


def login(sim: Simulator, body: dict[str, Any]) -> Reply:
    username, password = body.get("username"), body.get("password")
    if not isinstance(username, str) or not isinstance(password, str):
        raise errors.unexpected("username and password are required.")
    if not sim.auth.login_allowed(username):
        raise errors.user_locked(sim.config.lockout_after)
    ok = username == sim.config.username and password == sim.config.password
    session = sim.auth.record_login(username, ok, sim.now())
    if session is None:
        raise errors.bad_login()
    return 200, {"sessionToken": session, "expiresIn": int(sim.config.session_idle_s)}


def add(sim: Simulator, body: dict[str, Any]) -> Reply:
    state = body.get("state")
    if not isinstance(state, str) or state.strip().lower() != "preactive":
        raise errors.unexpected('state is required and the only valid state is "preactive".')
    account = _account(sim, body)
    items = _items(body, "devicesToAdd", sim)
    group = body.get("groupName")
    parsed = [_device_ids(item) for item in items]
    results: list[dict[str, Any]] = []
    for item, ids in zip(items, parsed, strict=True):
        by_kind = dict(ids)
        if sim.store.find_any(ids) is not None:
            response = "Error. Device already exists."
        elif "iccid" not in by_kind:
            response = "Error. An ICCID is required to add a device."
        else:
            sim.store.add(
                iccid=by_kind["iccid"],
                imei=by_kind.get("imei"),
                state="preactive",
                account=account,
                service_plan=None,
                now=sim.now(),
                group_names=[group] if isinstance(group, str) and group else (),
            )
            sim.count().action(by_kind["iccid"], "add")
            response = "Success"
        results.append({"deviceIds": item["deviceIds"], "response": response})
    return 200, results


def _targets(sim: Simulator, body: dict[str, Any], account: str) -> list[list[tuple[str, str]]]:
    """Devices named in ``devices``, or all devices of ``groupName`` in the account."""
    group = body.get("groupName")
    if body.get("devices") is None and isinstance(group, str) and group:
        members = [d for d in sim.store if d.account == account and group in d.group_names]
        if not members:
            raise errors.unexpected(f"No devices in group {group}.")
        return [[("iccid", d.iccid)] for d in members]
    return [_device_ids(item) for item in _items(body, "devices", sim)]


def provisioning(sim: Simulator, action: str, body: dict[str, Any]) -> Reply:
    """activate / deactivate / suspend / restore: validate, accept, return a requestId."""
    service_plan: str | None = None
    if action == "activate":
        for key in ("servicePlan", "mdnZipCode"):
            if not body.get(key):
                raise errors.unexpected(f"{key} is required.")
        service_plan = str(body["servicePlan"])
        _items(body, "devices", sim)
    if action == "deactivate" and not body.get("reasonCode"):
        raise errors.unexpected("reasonCode is required.")
    account = _account(sim, body, required=action == "deactivate")
    targets = _targets(sim, body, account)
    if len(targets) > sim.config.max_devices_per_request:
        raise errors.too_many_devices(sim.config.max_devices_per_request)
    if action == "activate":
        wait = sim.activate_limiter.try_acquire(sim.now())
        if wait:
            raise errors.rate_limited(wait)
    group = body.get("groupName") if isinstance(body.get("groupName"), str) else None
    request_id = sim.engine.submit(action, account, targets, sim.now(), service_plan, group)
    return 200, {"requestId": request_id}


def delete(sim: Simulator, body: dict[str, Any]) -> Reply:
    items = _items(body, "devicesToDelete", sim)
    results: list[dict[str, Any]] = []
    for item in items:
        ids = _device_ids(item)
        device = sim.store.find_any(ids)
        entry: dict[str, Any] = {"deviceIds": item["deviceIds"]}
        if device is None:
            entry |= {"status": "Failed", "message": "The device was not found."}
        elif device.state not in ("deactive", "preactive"):
            entry |= {"status": "Failed", "message": "The device is not in deactive state."}
        else:
            sim.store.remove(device)
            sim.count().action(device.iccid, "delete")
            entry["status"] = "Success"
        results.append(entry)
    return 200, results


def _int_field(body: dict[str, Any], key: str) -> int | None:
    value = body.get(key)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        raise errors.unexpected(f"{key} must be an integer.") from None


def list_devices(sim: Simulator, body: dict[str, Any]) -> Reply:
    """Single-device lookup, explicit ``deviceList``, or a filtered page ordered by internal id."""
    if "deviceId" in body:
        ids = request_ids(body.get("deviceId"))
        found = sim.store.find_any(ids) if ids else None
        return 200, {"hasMoreData": False, "devices": [device_json(found)] if found else []}
    if isinstance(body.get("deviceList"), list):
        # Each device once, in the order first named: keyed by internal id, so a page of N is O(N) (a
        # membership test on the list compared whole dataclasses, O(N²)).
        matches: dict[int, SimDevice] = {}
        for entry in body["deviceList"]:
            device = sim.store.find_any(request_ids(entry))
            if device is not None:
                matches.setdefault(device.internal_id, device)
        return 200, {"hasMoreData": False, "devices": [device_json(d) for d in matches.values()]}
    account = _account(sim, body) if body.get("accountName") else None
    state = body.get("currentState")
    plan = body.get("servicePlan")
    group = body.get("groupName")
    limit = sim.config.list_page_size
    requested = _int_field(body, "maxNumberOfDevices")
    if requested is not None and requested > 0:
        limit = min(limit, requested)
    page, more = sim.store.page(
        account=account,
        state=state.strip().lower() if isinstance(state, str) and state else None,
        service_plan=plan.lower() if isinstance(plan, str) and plan else None,
        group=group if isinstance(group, str) and group else None,
        after_id=_int_field(body, "largestDeviceIdSeen") or 0,
        limit=limit,
    )
    return (202 if more else 200), {"hasMoreData": more, "devices": [device_json(d) for d in page]}


def request_status(sim: Simulator, account: str, request_id: str) -> Reply:
    request = sim.engine.requests.get(request_id)
    if request is None or request.account != account:
        raise errors.request_id_invalid()
    if len(request.outcomes) != 1:
        raise errors.request_id_multiple()
    return 200, {"requestId": request_id, "status": request.status}


def register_callback(sim: Simulator, account: str, body: dict[str, Any]) -> Reply:
    name, url = body.get("name") or body.get("serviceName"), body.get("url")
    if not isinstance(name, str) or not name or not isinstance(url, str) or not url:
        raise errors.unexpected("name and url are required.")
    if account not in sim.known_accounts():
        raise errors.account_not_found(account)
    if sim.config.enforce_callback_ports and not port_allowed(url):
        raise errors.callback_port_invalid()
    username, password = body.get("username"), body.get("password")
    sim.listeners.register(
        Listener(
            account,
            name,
            url,
            username if isinstance(username, str) else None,
            password if isinstance(password, str) else None,
        )
    )
    return 200, {"accountName": account, "serviceName": name}


def list_callbacks(sim: Simulator, account: str) -> Reply:
    if account not in sim.known_accounts():
        raise errors.account_not_found(account)
    return 200, [listener.as_json() for listener in sim.listeners.for_account(account)]


def delete_callback(sim: Simulator, account: str, service: str) -> Reply:
    if not sim.listeners.remove(account, service):
        raise errors.service_name_invalid(service)
    return 200, {"accountName": account, "serviceName": service}
