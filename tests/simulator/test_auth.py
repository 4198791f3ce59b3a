"""OAuth token, gateway faults, session login/expiry/logout and lockout."""

from __future__ import annotations

from collections.abc import Callable

from .helpers import M2M, Env


def test_token_reused_within_the_hour_with_remaining_lifetime(make_env: Callable[..., Env]) -> None:
    env = make_env(login=False)
    first = env.api.get_token()
    assert first.status_code == 200
    body = first.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == 3600
    env.advance(600)
    second = env.api.get_token().json()
    assert second["access_token"] == body["access_token"]
    assert second["expires_in"] == 3000
    env.advance(3000)
    third = env.api.get_token().json()
    assert third["access_token"] != body["access_token"] and third["expires_in"] == 3600
    assert {body["access_token"], third["access_token"]} <= env.sim.issued_secrets()


def test_token_errors(make_env: Callable[..., Env]) -> None:
    env = make_env(login=False)
    http = env.api.http
    missing_grant = http.post("/api/ts/v1/oauth2/token", auth=("sim-client", "sim-secret"), data={})
    assert missing_grant.status_code == 400
    assert missing_grant.json() == {
        "error": "invalid_request",
        "error_description": "Missing grant_type parameter value",
    }
    wrong_grant = http.post(
        "/api/ts/v1/oauth2/token", auth=("sim-client", "sim-secret"), data={"grant_type": "password"}
    )
    assert wrong_grant.status_code == 400
    no_basic = http.post("/api/ts/v1/oauth2/token", data={"grant_type": "client_credentials"})
    assert no_basic.status_code == 401
    assert no_basic.json()["fault"] == {
        "code": "900902",
        "message": "Missing Credentials",
        "description": "Required OAuth credentials not provided. Make sure your API invocation call has a "
        'header: "Authorization: Basic ACCESS_TOKEN"',
    }
    bad_basic = env.api.get_token(secret="nope")
    assert bad_basic.status_code == 401
    assert bad_basic.json()["fault"]["code"] == "900901"
    assert bad_basic.json()["fault"]["message"] == "Invalid Credentials"


def test_revoke_gives_a_new_token_and_kills_the_old_one(env: Env) -> None:
    old = env.api.token
    assert old is not None
    revoke = env.api.http.post("/api/ts/v1/oauth2/revoke", auth=("sim-client", "sim-secret"), data={"token": old})
    assert revoke.status_code == 200
    assert env.api.post("/devices/actions/list", {}).status_code == 401
    new = env.api.get_token().json()["access_token"]
    assert new != old


def test_bearer_checks_on_m2m(env: Env) -> None:
    http = env.api.http
    missing = http.post(f"{M2M}/devices/actions/list", json={})
    assert missing.status_code == 401 and missing.json()["fault"]["code"] == "900902"
    wrong = http.post(f"{M2M}/devices/actions/list", json={}, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    assert wrong.json()["fault"] == {
        "code": "900901",
        "message": "Invalid Credentials",
        "description": "Access failure for API: /m2m/v1, version: v1. Make sure you have given the correct "
        "access token",
    }
    env.advance(3601)  # the access token expires after an hour
    expired = env.api.post("/devices/actions/list", {})
    assert expired.status_code == 401 and expired.json()["fault"]["code"] == "900901"


def test_unknown_path_is_gateway_900906(env: Env) -> None:
    response = env.api.post("/devices/actions/teleport", {})
    assert response.status_code == 400 and response.json()["fault"]["code"] == "900906"
    wrong_method = env.api.get("/devices/actions/list")
    assert wrong_method.status_code == 400 and wrong_method.json()["fault"]["code"] == "900906"
    assert env.sim.counters.requests["unknown"] == 2


def test_login_returns_session_and_wrong_password_is_400(make_env: Callable[..., Env]) -> None:
    env = make_env(login=False)
    ok = env.api.login()
    assert ok.status_code == 200
    assert set(ok.json()) == {"sessionToken", "expiresIn"} and ok.json()["expiresIn"] == 1200
    assert ok.json()["sessionToken"] in env.sim.issued_secrets()
    bad = env.api.login(password="wrong")
    assert bad.status_code == 400
    assert bad.json() == {
        "errorCode": "UnifiedWebService.REQUEST_FAILED.InvalidCredentials",
        "errorMessage": "Invalid username or password.",
    }


def test_login_requires_bearer(env: Env) -> None:
    response = env.api.http.post(f"{M2M}/session/login", json={"username": "sim-user", "password": "sim-pass"})
    assert response.status_code == 401 and response.json()["fault"]["code"] == "900902"


def test_lockout_after_five_consecutive_failures(make_env: Callable[..., Env]) -> None:
    env = make_env(login=False)
    for _ in range(4):
        assert env.api.login(password="x").json()["errorCode"].endswith("InvalidCredentials")
    assert env.api.login().status_code == 200  # a success resets the streak
    for _ in range(5):
        assert env.api.login(password="x").json()["errorCode"].endswith("InvalidCredentials")
    locked = env.api.login()  # even the right password is refused now
    assert locked.status_code == 400
    assert locked.json() == {
        "errorCode": "UnifiedWebService.REQUEST_FAILED.UserLocked",
        "errorMessage": "The user is locked after 5 failed log in attempts.",
    }
    env.sim.unlock_user()
    assert env.api.login().status_code == 200


def test_session_idle_expiry_slides_with_use(env: Env) -> None:
    expired_body = {
        "errorCode": "UnifiedWebService.REQUEST_FAILED.SessionToken.Expired",
        "errorMessage": "The Session has expired.",
    }
    for _ in range(2):  # 2 x 19 min > 20 min, but each use slides the window
        env.advance(19 * 60)
        assert env.api.post("/devices/actions/list", {}).status_code == 200
    env.advance(20 * 60)
    response = env.api.post("/devices/actions/list", {})
    assert response.status_code == 400 and response.json() == expired_body
    missing = env.api.http.post(
        f"{M2M}/devices/actions/list", json={}, headers={"Authorization": f"Bearer {env.api.token}"}
    )
    assert missing.status_code == 400 and missing.json() == expired_body


def test_logout_echoes_and_invalidates(env: Env) -> None:
    session = env.api.session
    response = env.api.post("/session/logout")
    assert response.status_code == 200 and response.json() == {"sessionToken": session}
    after = env.api.post("/devices/actions/list", {})
    assert after.status_code == 400 and after.json()["errorCode"].endswith("SessionToken.Expired")
