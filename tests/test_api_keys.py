"""api_keys: gateway keys stored only as hashes, one 401 for missing and wrong keys, per-key
models and cache namespaces, an admin key for admin endpoints, and a CLI that prints a key once."""
from __future__ import annotations

import os
import subprocess

import pytest
import redis

from accounting_support import RAW_SECRETS, bearer, captured_logs, keys_section, new_key  # noqa: F401  (captured_logs: autouse)
from conftest import CHAT, assert_conforms, pipeline_config, upstream_config
from hookgate.config import ConfigError
from hookgate.plugins.api_keys import key_digest
from servers import HOOKGATE, free_port

ALICE, BOB, ADMIN = new_key("alice"), new_key("bob"), new_key("admin")


def keyed(emulator, **options) -> str:
    keys = {
        "alice": (ALICE, {"models": ["gpt-4o-mini"], "cache_namespace": "shared-team"}),
        "bob": (BOB, {"cache_namespace": "shared-team"}),
        "admin": (ADMIN, {"admin": True}),
    }
    return upstream_config(emulator, ["api_keys", "memory_cache"], api_keys=keys_section(keys, **options))


def comparable(response) -> dict:
    return {name.lower() for name in response.headers if name.lower() not in ("x-request-id", "date", "x-hookgate-overhead-ms")}


async def test_a_missing_and_a_wrong_key_get_the_same_401(gateway, emulator):
    client = await gateway(keyed(emulator))
    missing = await client.post("/v1/chat/completions", json=CHAT)
    wrong = await client.post("/v1/chat/completions", json=CHAT, headers=bearer(ALICE + "x"))
    assert missing.status == wrong.status == 401
    assert await missing.read() == await wrong.read()
    assert comparable(missing) == comparable(wrong)
    assert_conforms("ErrorResponse", await wrong.json())
    assert emulator.stats.calls == 0


async def test_keys_are_accepted_in_the_bearer_header_or_x_api_key_only(gateway, emulator):
    client = await gateway(keyed(emulator))
    assert (await client.post("/v1/chat/completions", json=CHAT, headers=bearer(ALICE))).status == 200
    assert (await client.post("/v1/chat/completions", json=CHAT, headers={"x-api-key": ALICE})).status == 200
    assert (await client.post("/v1/chat/completions", json=CHAT, headers={"Authorization": f"Basic {ALICE}"})).status == 401
    assert (await client.post(f"/v1/chat/completions?api_key={ALICE}", json=CHAT)).status == 401


async def test_the_official_sdk_raises_its_authentication_error(gateway, emulator, sdk):
    import openai

    client = await gateway(keyed(emulator))
    with pytest.raises(openai.AuthenticationError):
        await sdk(client, api_key="hg-not-a-key").chat.completions.create(**CHAT)
    answer = await sdk(client, api_key=ALICE).chat.completions.create(**CHAT)
    assert answer.choices[0].message.content.startswith("emulated:")


async def test_a_key_limited_to_one_model_gets_403_on_another(gateway, emulator):
    config = keyed(emulator).replace('models = ["gpt-4o-mini"]', 'models = ["gpt-4o-mini", "gpt-4o"]')
    client = await gateway(config)
    response = await client.post("/v1/chat/completions", json={**CHAT, "model": "gpt-4o"}, headers=bearer(ALICE))
    assert response.status == 403
    body = await response.json()
    assert (body["error"]["code"], body["error"]["param"]) == ("model_not_allowed", "model")
    assert_conforms("ErrorResponse", body)
    assert (await client.post("/v1/chat/completions", json={**CHAT, "model": "gpt-4o"}, headers=bearer(BOB))).status == 200


async def test_keys_sharing_a_cache_namespace_share_answers_and_no_one_else(gateway, emulator):
    client = await gateway(keyed(emulator))
    await client.post("/v1/chat/completions", json=CHAT, headers=bearer(ALICE))
    same_team = await client.post("/v1/chat/completions", json=CHAT, headers=bearer(BOB))
    other = await client.post("/v1/chat/completions", json=CHAT, headers=bearer(ADMIN))
    assert (same_team.headers["x-hookgate-cache"], other.headers["x-hookgate-cache"]) == ("HIT", "MISS")


def test_plugins_toml_takes_hashes_never_keys(make_config):
    with pytest.raises(ConfigError) as raised:
        make_config(pipeline_config(["api_keys", "echo"], api_keys={"keys": {"k": {"hash": ALICE}}}))
    assert "SHA-256" in str(raised.value) and ALICE not in str(raised.value), "the error does not echo the value"


async def test_admin_endpoints_need_the_admin_key(gateway, emulator):
    client = await gateway(keyed(emulator))
    assert (await client.get("/v1/keys")).status == 401
    assert (await client.get("/v1/keys", headers=bearer(ALICE))).status == 403
    listed = await client.get("/v1/keys", headers=bearer(ADMIN))
    text = await listed.text()
    assert listed.status == 200 and [k["id"] for k in (await listed.json())["data"]] == ["alice", "bob", "admin"]
    assert key_digest(ALICE) not in text and ALICE not in text
    assert (await client.get("/-/plugins", headers=bearer(ALICE))).status == 403, "the core's admin endpoint asks us too"
    assert (await client.get("/-/plugins", headers=bearer(ADMIN))).status == 200


# ------------------------------------------------------------------------------ Redis and CLI


def keys_cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([HOOKGATE, "keys", *args], input=stdin, capture_output=True, text=True, timeout=30, env=os.environ)


def redis_keyed(emulator, url: str, prefix: str, **options) -> str:
    section = {"redis": True, "redis_url": url, "key_prefix": prefix, **options}
    return upstream_config(emulator, ["api_keys"], api_keys=section)


async def test_the_cli_prints_a_key_once_and_redis_holds_only_its_hash(gateway, emulator, redis_url, redis_prefix):
    created = keys_cli("create", "ci-bot", "--models", "gpt-4o-mini", "--rpm", "100", "--redis-url", redis_url, "--key-prefix", redis_prefix)
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    RAW_SECRETS.append(key)
    assert key.startswith("hg-") and key not in created.stderr

    store = redis.Redis.from_url(redis_url)
    stored = b""
    for name in store.scan_iter(f"{redis_prefix}:*"):
        value = store.get(name) if store.type(name) == b"string" else repr(store.hgetall(name)).encode()
        stored += name + b"=" + value + b"\n"
    assert key.encode() not in stored and key_digest(key).encode() in stored

    client = await gateway(redis_keyed(emulator, redis_url, redis_prefix, cache_seconds=0, negative_cache_seconds=0))
    assert (await client.post("/v1/chat/completions", json=CHAT, headers=bearer(key))).status == 200
    assert (await client.post("/v1/chat/completions", json={**CHAT, "model": "gpt-4o"}, headers=bearer(key))).status == 403
    listed = keys_cli("list", "--redis-url", redis_url, "--key-prefix", redis_prefix)
    assert '"id":"ci-bot"' in listed.stdout and key not in listed.stdout
    assert keys_cli("create", "ci-bot", "--redis-url", redis_url, "--key-prefix", redis_prefix).returncode == 1, "ids are unique"

    assert keys_cli("revoke", "ci-bot", "--redis-url", redis_url, "--key-prefix", redis_prefix).returncode == 0
    assert (await client.post("/v1/chat/completions", json=CHAT, headers=bearer(key))).status == 401
    assert list(store.scan_iter(f"{redis_prefix}:hash:*")) == []


def test_the_cli_makes_plugins_toml_tables_and_hashes_existing_keys(make_config):
    created = keys_cli("create", "team-x", "--toml", "--daily-budget", "5", "--metadata", "team=x")
    key = created.stdout.strip()
    RAW_SECRETS.append(key)
    assert created.returncode == 0 and key not in created.stderr
    table = created.stderr
    assert f'hash = "{key_digest(key)}"' in table and 'daily_budget_usd = "5"' in table
    config = make_config('[gateway]\npipeline = ["api_keys", "echo"]\n' + table)
    assert config.plugins[0].config.keys["team-x"].metadata == {"team": "x"}
    assert keys_cli("hash", stdin=key + "\n").stdout.strip() == key_digest(key)


async def test_with_redis_down_configured_and_recently_seen_keys_still_work(gateway, emulator, redis_server, redis_prefix):
    stored = new_key("stored")
    unseen = new_key("unseen")
    from hookgate.plugins.api_keys import KeySettings, RedisKeyStore, key_record

    store = RedisKeyStore(redis.Redis.from_url(redis_server.url), redis_prefix)
    for key_id, raw in (("stored", stored), ("unseen", unseen)):
        store.redis.eval(RedisKeyStore.CREATE, 2, store.record_key(key_digest(raw)), store.index_key, key_id, key_digest(raw), key_record(key_id, key_digest(raw), KeySettings()))
    section = {"redis": True, "redis_url": redis_server.url, "key_prefix": redis_prefix, "cache_seconds": 0.01}
    section.update(keys_section({"configured": (ALICE, {})}))
    client = await gateway(upstream_config(emulator, ["api_keys"], api_keys=section))
    assert (await client.post("/v1/chat/completions", json=CHAT, headers=bearer(stored))).status == 200

    redis_server.stop()
    assert (await client.post("/v1/chat/completions", json=CHAT, headers=bearer(ALICE))).status == 200
    assert (await client.post("/v1/chat/completions", json=CHAT, headers=bearer(stored))).status == 200, "seen recently"
    refused = await client.post("/v1/chat/completions", json=CHAT, headers=bearer(unseen))
    assert refused.status == 503 and (await refused.json())["error"]["code"] == "auth_unavailable"
    assert refused.headers["Retry-After"] == "1"
    ready = await (await client.get("/readyz")).json()
    assert ready["checks"]["api_keys"]["status"] == "degraded"


async def test_redis_mode_needs_a_redis_url(gateway, emulator, monkeypatch):
    monkeypatch.delenv("REDIS_URL", raising=False)
    with pytest.raises(RuntimeError, match="redis_url"):
        await gateway(upstream_config(emulator, ["api_keys"], api_keys={"redis": True}))


def test_a_dead_redis_port_is_refused_quickly():
    dead = f"redis://127.0.0.1:{free_port()}/0"
    assert keys_cli("list", "--redis-url", dead, "--key-prefix", "x").returncode != 0
