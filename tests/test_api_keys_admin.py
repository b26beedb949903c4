"""The keys API (/-/api/keys) and the dashboard's sessions (/-/api/session) of the api_keys
plugin: a key created over HTTP is shown once and works at once, edits apply, a revoked key is
refused at once; plugins.toml keys are read-only; a session cookie is HttpOnly, SameSite=Strict,
holds no key, needs its CSRF token for every change, is bounded in number and lifetime, and ends
when its admin key is revoked."""
from __future__ import annotations

import pytest

from accounting_support import RAW_SECRETS, bearer, captured_logs  # noqa: F401  (captured_logs: autouse)
from console_support import ADMIN, ALICE, chat, console_config
from hookgate.plugins.api_keys import key_digest
from hookgate.plugins.api_keys_sessions import COOKIE_NAME, MemorySessions


def keyed(tmp_path, redis_url: str | None = None, redis_prefix: str | None = None, **api_keys) -> str:
    redis = {"redis": True, "redis_url": redis_url, "key_prefix": redis_prefix} if redis_url else {}
    return console_config({"url": f"sqlite:///{tmp_path / 'r.db'}"}, redis={**redis, **api_keys})


async def create(client, body: dict, headers: dict | None = None) -> dict:
    response = await client.post("/-/api/keys", json=body, headers=headers or bearer(ADMIN))
    created = await response.json()
    assert response.status == 201, created
    RAW_SECRETS.append(created["key"])
    return created


async def test_a_key_created_over_http_is_shown_once_works_at_once_and_is_refused_once_revoked(gateway, tmp_path, redis_url, redis_prefix):
    client = await gateway(keyed(tmp_path, redis_url, redis_prefix))
    created = await create(client, {"id": "ci-bot", "models": ["echo"], "requests_per_minute": 100, "daily_budget_usd": "2.5",
                                    "metadata": {"team": "ci"}})
    raw = created["key"]
    assert raw.startswith("hg-") and created["source"] == "redis" and not created["read_only"]
    assert (created["models"], created["requests_per_minute"], created["daily_budget_usd"]) == (["echo"], 100, "2.5")
    assert (await client.post("/v1/chat/completions", json=chat("echo"), headers=bearer(raw))).status == 200
    assert (await client.post("/v1/chat/completions", json=chat("echo-large"), headers=bearer(raw))).status == 403

    listed = await client.get("/-/api/keys", headers=bearer(ADMIN))
    text = await listed.text()
    assert [k["id"] for k in (await listed.json())["data"]] == ["admin", "alice", "ci-bot"]
    assert raw not in text and key_digest(raw) not in text and key_digest(ADMIN) not in text, "never a key or a hash"
    shown = await (await client.get("/-/api/keys/ci-bot", headers=bearer(ADMIN))).json()
    assert "key" not in shown and shown["metadata"] == {"team": "ci"}

    edited = await client.patch("/-/api/keys/ci-bot", json={"models": None, "daily_budget_usd": None}, headers=bearer(ADMIN))
    assert edited.status == 200 and (await edited.json())["models"] is None
    assert (await client.post("/v1/chat/completions", json=chat("echo-large"), headers=bearer(raw))).status == 200, "the edit applies at once"
    assert (await (await client.get("/-/api/keys/ci-bot", headers=bearer(ADMIN))).json())["requests_per_minute"] == 100, "untouched"

    revoked = await client.delete("/-/api/keys/ci-bot", headers=bearer(ADMIN))
    assert revoked.status == 200 and (await revoked.json())["deleted"] is True
    assert (await client.post("/v1/chat/completions", json=chat("echo"), headers=bearer(raw))).status == 401
    assert (await client.delete("/-/api/keys/ci-bot", headers=bearer(ADMIN))).status == 404


async def test_ids_are_unique_config_keys_are_read_only_and_bad_settings_are_400s(gateway, tmp_path, redis_url, redis_prefix):
    client = await gateway(keyed(tmp_path, redis_url, redis_prefix))
    await create(client, {"id": "twice"})
    again = await client.post("/-/api/keys", json={"id": "twice"}, headers=bearer(ADMIN))
    assert again.status == 409 and (await again.json())["error"]["code"] == "key_exists"
    assert (await client.post("/-/api/keys", json={"id": "alice"}, headers=bearer(ADMIN))).status == 409, "a plugins.toml id"
    for method in ("patch", "delete"):
        refused = await client.request(method, "/-/api/keys/alice", json={"admin": True}, headers=bearer(ADMIN))
        assert refused.status == 409 and (await refused.json())["error"]["code"] == "key_read_only"
    for body, param in [({"id": "bad id!"}, "id"), ({"id": "x", "requests_per_minute": 0}, "requests_per_minute"),
                        ({"id": "x", "models": ["m"] * 1001}, "models"), ({"id": "x", "colour": "red"}, "colour"),
                        ({"id": "x", "daily_budget_usd": "lots"}, "daily_budget_usd")]:
        response = await client.post("/-/api/keys", json=body, headers=bearer(ADMIN))
        assert response.status == 400 and (await response.json())["error"]["param"] == param, body
    assert (await client.post("/-/api/keys", data=b"{", headers={**bearer(ADMIN), "Content-Type": "application/json"})).status == 400
    assert (await client.post("/-/api/keys", data=b"id=x", headers={**bearer(ADMIN), "Content-Type": "application/x-www-form-urlencoded"})).status == 415
    huge = await client.post("/-/api/keys", json={"id": "x", "metadata": {"k": "v" * 70_000}}, headers=bearer(ADMIN))
    assert huge.status == 413


async def test_without_redis_keys_are_listed_read_only_and_cannot_be_created(gateway, tmp_path):
    client = await gateway(keyed(tmp_path))
    listed = (await (await client.get("/-/api/keys", headers=bearer(ADMIN))).json())["data"]
    assert [(k["id"], k["read_only"]) for k in listed] == [("admin", True), ("alice", True)]
    refused = await client.post("/-/api/keys", json={"id": "new"}, headers=bearer(ADMIN))
    assert refused.status == 409 and (await refused.json())["error"]["code"] == "key_store_read_only"


# ---------------------------------------------------------------------------------- sessions ---


async def login(client, key: str = ADMIN):
    return await client.post("/-/api/session", json={"key": key})


async def test_login_sets_a_strict_http_only_cookie_that_holds_no_key(gateway, tmp_path):
    client = await gateway(keyed(tmp_path))
    response = await login(client)
    assert response.status == 200
    session = await response.json()
    cookie = response.cookies[COOKIE_NAME]
    assert cookie["httponly"] and cookie["samesite"] == "Strict" and cookie["path"] == "/-/"
    assert ADMIN not in cookie.value and key_digest(ADMIN) not in cookie.value and ADMIN not in await response.text()
    assert session["key_id"] == "admin" and len(session["csrf_token"]) >= 32

    assert (await client.get("/-/api/requests")).status == 200, "a read with the cookie alone"
    assert (await client.get("/-/dashboard")).status == 200
    no_token = await client.post("/-/api/keys", json={"id": "x"})
    assert no_token.status == 403 and (await no_token.json())["error"]["code"] == "csrf_token_invalid"
    wrong = await client.delete("/-/api/session", headers={"X-CSRF-Token": "guess"})
    assert wrong.status == 403
    other_site = await client.post("/-/api/keys", json={"id": "x"}, headers={"X-CSRF-Token": session["csrf_token"], "Origin": "https://evil.example"})
    assert other_site.status == 403 and (await other_site.json())["error"]["code"] == "cross_origin_request"
    current = await (await client.get("/-/api/session")).json()
    assert current["csrf_token"] == session["csrf_token"]

    out = await client.delete("/-/api/session", headers={"X-CSRF-Token": session["csrf_token"]})
    assert out.status == 200
    assert (await client.get("/-/api/requests")).status == 401
    assert (await client.get("/-/dashboard")).status == 401


async def test_only_admin_keys_log_in(gateway, tmp_path):
    client = await gateway(keyed(tmp_path))
    assert (await login(client, ALICE)).status == 403
    assert (await login(client, "hg-wrong")).status == 401
    assert (await client.post("/-/api/session", data=f"key={ADMIN}", headers={"Content-Type": "application/x-www-form-urlencoded"})).status == 415
    assert COOKIE_NAME not in client.session.cookie_jar.filter_cookies(client.make_url("/-/"))


async def test_a_session_needs_its_csrf_token_to_authenticate_anything_but_a_safe_admin_read(gateway, tmp_path):
    client = await gateway(keyed(tmp_path))
    session = await (await login(client)).json()
    # authenticate() sees headers only: without the token the cookie is no credential at all
    assert (await client.post("/-/api/keys", json={"id": "x"}, headers={"X-CSRF-Token": session["csrf_token"]})).status == 409
    jar = client.session.cookie_jar
    sid = jar.filter_cookies(client.make_url("/-/"))[COOKIE_NAME].value
    chat_with_cookie = await client.post("/v1/chat/completions", json=chat(), headers={"Cookie": f"{COOKIE_NAME}={sid}"})
    assert chat_with_cookie.status == 403, "a cookie alone never authenticates a chat request"


async def test_revoking_the_admin_key_ends_its_sessions(gateway, tmp_path, redis_url, redis_prefix):
    client = await gateway(keyed(tmp_path, redis_url, redis_prefix))
    boss = await create(client, {"id": "boss", "admin": True})
    session = await (await login(client, boss["key"])).json()
    assert (await client.get("/-/api/requests")).status == 200
    token = {"X-CSRF-Token": session["csrf_token"]}
    demoted = await client.patch("/-/api/keys/boss", json={"admin": False}, headers=bearer(ADMIN))
    assert demoted.status == 200
    assert (await client.get("/-/api/requests")).status in (401, 403), "a demoted key's session ends"
    session = await (await login(client, ADMIN)).json()
    other = await create(client, {"id": "other", "admin": True}, headers={"X-CSRF-Token": session["csrf_token"]})
    client.session.cookie_jar.clear()
    await login(client, other["key"])
    assert (await client.delete("/-/api/keys/other", headers=bearer(ADMIN))).status == 200
    assert (await client.get("/-/api/requests")).status == 401


async def test_sessions_are_bounded_in_number_idle_time_and_age():
    now = [1000.0]
    sessions = MemorySessions(max_sessions=2, max_age_s=3600, idle_s=600, clock=lambda: now[0])
    first, _ = await sessions.open("d1", "a")
    second, _ = await sessions.open("d2", "b")
    assert await sessions.find(first) is not None  # first is now the most recently used
    third, _ = await sessions.open("d3", "c")
    assert len(sessions) == 2 and await sessions.find(second) is None, "the least recently used went"
    now[0] += 599
    assert await sessions.find(first) is not None
    now[0] += 300
    assert await sessions.find(third) is None, "unused for 899 s: idle too long"
    assert await sessions.find(first) is not None
    for _ in range(4):  # used every 590 s, up to 3259 s after it was opened
        now[0] += 590
        assert await sessions.find(first) is not None
    now[0] += 400
    assert await sessions.find(first) is None, "older than max_age_s, however busy"


async def test_redis_sessions_are_shared_by_two_gateways(gateway, tmp_path, redis_url, redis_prefix):
    config = keyed(tmp_path, redis_url, redis_prefix)
    one, two = await gateway(config), await gateway(config)
    await login(one)
    cookie = one.session.cookie_jar.filter_cookies(one.make_url("/-/"))[COOKIE_NAME].value
    assert (await two.get("/-/api/requests", headers={"Cookie": f"{COOKIE_NAME}={cookie}"})).status == 200
    assert (await two.get("/-/api/requests", headers={"Cookie": f"{COOKIE_NAME}=forged"})).status == 401


@pytest.mark.parametrize("max_sessions", [2])
async def test_redis_sessions_are_bounded(gateway, tmp_path, redis_url, redis_prefix, max_sessions):
    client = await gateway(keyed(tmp_path, redis_url, redis_prefix, max_sessions=max_sessions))
    cookies = []
    for _ in range(3):
        client.session.cookie_jar.clear()
        await login(client)
        cookies.append(client.session.cookie_jar.filter_cookies(client.make_url("/-/"))[COOKIE_NAME].value)
    client.session.cookie_jar.clear()
    statuses = [(await client.get("/-/api/requests", headers={"Cookie": f"{COOKIE_NAME}={c}"})).status for c in cookies]
    assert statuses == [401, 200, 200]


async def test_an_in_process_session_survives_a_live_reload(aiohttp_client, make_config, tmp_path):
    from hookgate.pipelines import Pipelines
    from hookgate.server import PIPELINES, create_app

    text = keyed(tmp_path)
    app = create_app(make_config(text), pipelines=lambda gateway: Pipelines(gateway, load=lambda: make_config(text), grace_seconds=1))
    client = await aiohttp_client(app)
    await login(client)
    assert (await client.get("/-/api/requests")).status == 200
    await app[PIPELINES].reload(app)
    assert (await client.get("/-/api/requests")).status == 200, "the new pipeline's api_keys keeps the app's sessions"
