"""The semantic cache as users of two gateway processes sharing one Redis see it.

Both processes run ``memory_cache``, ``semantic_cache`` and ``mock``; every request carries a
system prompt that scripts the mock's answer, so paraphrases get the same answer and shadow mode
(``comparison = "exact"``, two observations) promotes a namespace after two agreeing comparisons.
Each test uses its own API key, hence its own tenant namespace and shadow record.
"""
from __future__ import annotations

import hashlib
import json
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from conftest import pipeline_config
from servers import GatewayProcess, RedisServer, start_gateway

ANSWER = "Open Settings, choose Security, then Reset password."
SYSTEM = f'You are the help desk of Example Ltd.\n#mock: content="{ANSWER}"'
SHADOW = {"min_observations": 2, "window": 10, "comparison": "exact", "audit_fraction": 0.0}


def semantic_config(redis_url: str, prefix: str, **overrides: Any) -> str:
    # A generous Redis deadline: these tests are about behaviour, and the machine is shared.
    section = {"redis_url": redis_url, "key_prefix": prefix, "shadow": SHADOW, "operation_timeout_seconds": 1.0, **overrides}
    return pipeline_config(["memory_cache", "semantic_cache", "mock"], semantic_cache=section, mock={"models": ["gpt-4o-mini"]})


def ask(gateway: GatewayProcess, prompt: str, *, key: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], dict[str, Any]]:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": prompt}]}
    request = urllib.request.Request(
        gateway.url + "/v1/chat/completions",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}", **(headers or {})},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, {k.lower(): v for k, v in error.headers.items()}, json.loads(error.read())


def admin(gateway: GatewayProcess, method: str = "GET", path: str = "/-/semantic-cache") -> dict[str, Any]:
    request = urllib.request.Request(gateway.url + path, method=method)
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def tenant_of(key: str) -> str:
    """The namespace of an API key when no auth plugin names tenants (RequestContext.tenant)."""
    return "key-" + hashlib.sha256(key.encode()).hexdigest()[:16]


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    """Wait for another process's bookkeeping (a stream message applied, a comparison recorded)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.05)


def observations(gateway: GatewayProcess, key: str) -> int:
    return admin(gateway)["namespaces"].get(tenant_of(key), {}).get("observations", 0)


def indexed(gateway: GatewayProcess) -> int:
    return admin(gateway)["index"]["entries"]


def new_key() -> str:
    return f"sk-semantic-{uuid.uuid4().hex[:12]}"


def trust_namespace(first: GatewayProcess, second: GatewayProcess, key: str) -> str:
    """Store an answer on ``first`` and shadow two paraphrases on ``second``: the namespace is
    then trusted. Returns the stored entry's id. The paraphrases are not stored (no-store), so the
    namespace holds exactly one entry."""
    before = indexed(second)
    status, headers, _ = ask(first, "How do I reset my password?", key=key)
    assert (status, headers["x-hookgate-cache"]) == (200, "MISS")
    entry = headers["x-hookgate-cache-entry"]
    wait_for(lambda: indexed(second) >= before + 1, "the entry reached the other instance")
    for number, paraphrase in enumerate(("How can I reset my password?", "What is the way to reset my password?"), start=1):
        status, headers, body = ask(second, paraphrase, key=key, headers={"Cache-Control": "no-store"})
        assert (status, headers["x-hookgate-cache"]) == (200, "SHADOW"), headers
        assert headers["x-hookgate-cache-entry"] == entry and float(headers["x-hookgate-cache-score"]) >= 0.75
        assert body["choices"][0]["message"]["content"] == ANSWER  # the fresh upstream answer
        wait_for(lambda: observations(second, key) >= number, "the shadow comparison was recorded")
    return entry



@pytest.fixture(scope="module")
def pair(redis_url: str) -> Iterator[tuple[GatewayProcess, GatewayProcess, str]]:
    """Two gateway processes sharing one Redis (and a key prefix of this module's own)."""
    prefix = f"hgtest:{uuid.uuid4().hex[:12]}"
    config = semantic_config(redis_url, prefix)
    first = start_gateway(config)
    try:
        second = start_gateway(config)
    except BaseException:
        first.stop()
        raise
    try:
        yield first, second, prefix
    finally:
        first.stop()
        second.stop()


def test_a_paraphrase_answered_on_one_instance_is_a_semantic_hit_on_the_other_once_shadow_mode_is_satisfied(pair):
    first, second, _ = pair
    key = new_key()
    entry = trust_namespace(first, second, key)
    assert admin(second)["namespaces"][tenant_of(key)] == {"observations": 2, "agreement": 1.0, "trusted": True}

    status, headers, body = ask(first, "Can you tell me how to reset my password?", key=key)
    assert (status, headers["x-hookgate-cache"]) == (200, "HIT-SEMANTIC")
    assert headers["x-hookgate-cache-entry"] == entry and 0.75 <= float(headers["x-hookgate-cache-score"]) < 1.0
    assert body["choices"][0]["message"]["content"] == ANSWER and "age" in headers

    status, headers, _ = ask(first, "How do I reset my password?", key=key)
    assert headers["x-hookgate-cache"] == "HIT"  # the exact tier answers first


def test_near_misses_are_misses_even_in_a_trusted_namespace(pair):
    first, second, _ = pair
    key = new_key()
    trust_namespace(first, second, key)
    for near_miss in ("How do I reset my password in 3 steps?", "How do I not reset my password?", "How do I change my password?"):
        status, headers, _ = ask(second, near_miss, key=key, headers={"Cache-Control": "no-store"})
        assert (status, headers["x-hookgate-cache"]) == (200, "MISS"), (near_miss, headers)
        assert "x-hookgate-cache-score" not in headers
    _, headers, _ = ask(second, "Steps to reset my password?", key=key)
    assert headers["x-hookgate-cache"] == "HIT-SEMANTIC"  # the same namespace still serves paraphrases


def test_tenants_never_see_each_others_entries(pair):
    first, second, _ = pair
    key, other = new_key(), new_key()
    trust_namespace(first, second, key)
    for gateway in (first, second):
        status, headers, _ = ask(gateway, "How can I reset my password?", key=other, headers={"Cache-Control": "no-store"})
        assert (status, headers["x-hookgate-cache"]) == (200, "MISS")  # no candidate at all: not even SHADOW


def test_an_expired_entry_is_never_served_though_the_other_index_still_holds_it(pair, redis_url):
    import redis

    first, second, prefix = pair
    key = new_key()
    before = indexed(second)
    status, headers, _ = ask(first, "Where can I download my invoices?", key=key, headers={"x-hookgate-cache-ttl": "1"})
    assert headers["x-hookgate-cache"] == "MISS"
    entry = headers["x-hookgate-cache-entry"]
    wait_for(lambda: indexed(second) >= before + 1, "the entry reached the other instance")
    namespace = hashlib.sha256(tenant_of(key).encode()).hexdigest()[:20]
    client = redis.Redis.from_url(redis_url)
    try:
        entry_key = f"{prefix}:hookgate:semcache:v1:{{{namespace}}}:e:{entry}"
        wait_for(lambda: not client.exists(entry_key), "Redis expired the entry", timeout=10)
    finally:
        client.close()
    assert indexed(second) >= before + 1  # the index has not swept it yet
    status, headers, _ = ask(second, "Where do I download my invoices?", key=key, headers={"Cache-Control": "no-store"})
    assert (status, headers["x-hookgate-cache"]) == (200, "MISS")  # confirmed in Redis: gone


def test_an_entry_deleted_on_one_instance_is_never_served_by_the_other(pair):
    first, second, _ = pair
    key = new_key()
    entry = trust_namespace(first, second, key)
    _, headers, _ = ask(second, "Steps to reset my password?", key=key, headers={"Cache-Control": "no-store"})
    assert (headers["x-hookgate-cache"], headers["x-hookgate-cache-entry"]) == ("HIT-SEMANTIC", entry)

    deleted = admin(first, "DELETE", f"/-/semantic-cache/entries?namespace={tenant_of(key)}&id={entry}")
    assert deleted == {"deleted": True}
    status, headers, body = ask(second, "Steps to reset my password?", key=key, headers={"Cache-Control": "no-store"})
    assert (status, headers["x-hookgate-cache"]) == (200, "MISS")
    assert body["choices"][0]["message"]["content"] == ANSWER


def test_bad_admin_input_is_a_400_not_a_crash(pair):
    first, _, _ = pair
    for query in ("namespace=&id=0123456789abcdef", "namespace=x&id=../../etc", "namespace=" + "n" * 300 + "&id=0123456789abcdef"):
        with pytest.raises(urllib.error.HTTPError) as caught:
            admin(first, "DELETE", f"/-/semantic-cache/entries?{query}")
        assert caught.value.code == 400 and "error" in json.loads(caught.value.read())


def test_redis_down_turns_the_semantic_tier_off_and_requests_are_still_served(gateway_process, redis_server: RedisServer):
    gateway = gateway_process(semantic_config(redis_server.url, "hgtest-down"))
    key = new_key()
    _, headers, _ = ask(gateway, "How do I reset my password?", key=key)
    assert headers["x-hookgate-cache"] == "MISS"
    redis_server.stop()
    for prompt in ("How can I reset my password?", "What is the way to reset my password?", "Where are my invoices?"):
        started = time.monotonic()
        status, headers, body = ask(gateway, prompt, key=key)
        assert (status, headers["x-hookgate-cache"]) == (200, "MISS")
        assert body["choices"][0]["message"]["content"] == ANSWER
        assert time.monotonic() - started < 2.0
    with urllib.request.urlopen(gateway.url + "/readyz", timeout=5) as response:
        ready = json.loads(response.read())
    assert ready["checks"]["semantic_cache"]["status"] == "degraded"


def test_a_restarted_instance_rebuilds_its_index_from_redis(gateway_process, redis_url, redis_prefix):
    config = semantic_config(redis_url, redis_prefix)
    first, second = gateway_process(config), gateway_process(config)
    key = new_key()
    entry = trust_namespace(first, second, key)
    second.stop()

    restarted = gateway_process(config)
    state = admin(restarted)
    assert state["feed"]["ready"] and state["feed"]["rebuilds"] == 1 and state["feed"]["last_rebuild_reason"] == "start"
    assert state["index"]["entries"] == 1
    _, headers, _ = ask(restarted, "Can you tell me how to reset my password?", key=key)
    assert (headers["x-hookgate-cache"], headers["x-hookgate-cache-entry"]) == ("HIT-SEMANTIC", entry)
