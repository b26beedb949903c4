"""usage: the ledger per key, model and day matches the provider's own usage exactly, streamed
or not; GET /v1/usage shows a key its own rows and the admin key everyone's."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

from accounting_support import ANTHROPIC_KEY, bearer, captured_logs, cost_of, emulated_usage, keys_section, new_key  # noqa: F401
from conftest import CHAT, completion, pipeline_config, provider_plugin, upstream_config
from hookgate.testing.openai_emulator import Fault
from servers import free_port

ALICE, BOB, ADMIN = new_key("ledger-alice"), new_key("ledger-bob"), new_key("ledger-admin")
PRICED = {"prices": {"gpt-4o-mini": {"input": "0.15", "output": "0.60"}}}
KEYS = {"alice": (ALICE, {}), "bob": (BOB, {}), "admin": (ADMIN, {"admin": True})}


def ledgered(emulator, usage: dict, *, extra: tuple[str, ...] = ()) -> str:
    return upstream_config(emulator, ["api_keys", "token_counter", "cost", "usage", *extra], api_keys=keys_section(KEYS), cost=PRICED, usage=usage)


@pytest.fixture
def local_only(monkeypatch):
    monkeypatch.delenv("REDIS_URL", raising=False)


async def usage_of(client, caller: str, **params) -> dict:
    response = await client.get("/v1/usage", params=params, headers=bearer(caller))
    assert response.status == 200, await response.text()
    return await response.json()


async def test_the_ledger_matches_the_providers_usage_exactly_streamed_or_not(gateway, emulator, redis_url, redis_prefix):
    client = await gateway(ledgered(emulator, {"redis_url": redis_url, "key_prefix": redis_prefix}))
    for body in (CHAT, {**CHAT, "stream": True}, {**CHAT, "stream": True, "stream_options": {"include_usage": True}}):
        await (await client.post("/v1/chat/completions", json=body, headers=bearer(ALICE))).read()
    prompt, completion_tokens = emulated_usage(CHAT["messages"])
    (row,) = (await usage_of(client, ALICE))["data"]
    assert row["date"] == datetime.now(timezone.utc).date().isoformat()
    assert (row["key"], row["model"], row["requests"], row["errors"]) == ("alice", "gpt-4o-mini", 3, 0)
    assert (row["prompt_tokens"], row["completion_tokens"]) == (3 * prompt, 3 * completion_tokens)
    assert Decimal(row["cost_usd"]) == 3 * cost_of(prompt, completion_tokens, "0.15", "0.60")


async def test_a_key_sees_its_own_usage_and_the_admin_key_everyones(gateway, emulator, redis_url, redis_prefix):
    client = await gateway(ledgered(emulator, {"redis_url": redis_url, "key_prefix": redis_prefix}))
    for key in (ALICE, BOB, BOB):
        await client.post("/v1/chat/completions", json=CHAT, headers=bearer(key))
    assert [(r["key"], r["requests"]) for r in (await usage_of(client, ALICE))["data"]] == [("alice", 1)]
    assert [(r["key"], r["requests"]) for r in (await usage_of(client, ADMIN))["data"]] == [("alice", 1), ("bob", 2)]
    assert [r["key"] for r in (await usage_of(client, ADMIN, key="bob"))["data"]] == ["bob"]
    assert (await usage_of(client, ADMIN, model="gpt-4o"))["data"] == []
    assert (await client.get("/v1/usage", params={"key": "bob"}, headers=bearer(ALICE))).status == 403
    assert (await client.get("/v1/usage")).status == 401
    yesterday = (datetime.now(timezone.utc) - timedelta(days=1)).date().isoformat()
    assert (await usage_of(client, ADMIN, start=yesterday, end=yesterday))["data"] == []
    for bad in ({"start": "31/12/2024"}, {"start": "2025-02-01", "end": "2025-01-01"}, {"start": "2020-01-01", "end": "2025-01-01"}):
        response = await client.get("/v1/usage", params=bad, headers=bearer(ADMIN))
        assert response.status == 400 and (await response.json())["error"]["param"] in ("start", "end")


async def test_cache_hits_and_failures_are_counted_apart(gateway, emulator, redis_url, redis_prefix):
    client = await gateway(ledgered(emulator, {"redis_url": redis_url, "key_prefix": redis_prefix}, extra=("memory_cache",)))
    for _ in range(2):
        await client.post("/v1/chat/completions", json=CHAT, headers=bearer(ALICE))
    emulator.script(Fault(status=500))
    assert (await client.post("/v1/chat/completions", json={**CHAT, "seed": 1}, headers=bearer(ALICE))).status == 502
    (row,) = (await usage_of(client, ALICE))["data"]
    prompt, completion_tokens = emulated_usage(CHAT["messages"])
    assert (row["requests"], row["cache_hits"], row["errors"]) == (2, 1, 1)
    assert (row["prompt_tokens"], row["completion_tokens"]) == (prompt, completion_tokens), "a hit spends no tokens"


async def test_cached_reasoning_and_unpriced_requests_are_kept_apart(gateway, local_only):
    async def thinking(ctx):
        answer = completion("done", model="thinker")
        answer.body["usage"] = {
            "prompt_tokens": 100, "completion_tokens": 40, "total_tokens": 140,
            "prompt_tokens_details": {"cached_tokens": 64}, "completion_tokens_details": {"reasoning_tokens": 30},
        }
        return answer

    config = pipeline_config(["api_keys", "token_counter", "cost", "usage", "thinker"], api_keys=keys_section(KEYS))
    client = await gateway(config, local={"thinker": provider_plugin("thinker", thinking)})
    await client.post("/v1/chat/completions", json={"model": "thinker", "messages": [{"role": "user", "content": "hi"}]}, headers=bearer(BOB))
    (row,) = (await usage_of(client, BOB))["data"]
    assert (row["cached_tokens"], row["reasoning_tokens"], row["unpriced_requests"], row["cost_usd"]) == (64, 30, 1, "0")


async def test_redis_trouble_never_fails_a_request(gateway, emulator, captured_logs):
    dead = f"redis://127.0.0.1:{free_port()}/0"
    client = await gateway(ledgered(emulator, {"redis_url": dead}))
    for _ in range(3):
        assert (await client.post("/v1/chat/completions", json=CHAT, headers=bearer(ALICE))).status == 200
    assert len([entry for entry in captured_logs if entry["event"] == "usage_ledger_redis_unavailable"]) == 1
    assert (await (await client.get("/readyz")).json())["checks"]["usage"]["status"] == "degraded"
    assert (await client.get("/v1/usage", headers=bearer(ALICE))).status == 503


async def test_without_api_keys_the_admin_hooks_alone_guard_every_row(gateway, emulator, local_only):
    client = await gateway(upstream_config(emulator, ["token_counter", "usage"]))
    await client.post("/v1/chat/completions", json=CHAT, headers=bearer("sk-some-client"))
    rows = (await (await client.get("/v1/usage")).json())["data"]
    assert len(rows) == 1 and rows[0]["key"].startswith("key-"), "the tenant (a hash), never the client's key"


async def test_without_token_counter_a_json_answers_own_usage_still_counts(gateway, emulator, local_only):
    config = upstream_config(emulator, ["api_keys", "cost", "usage"], api_keys=keys_section(KEYS), cost=PRICED)
    client = await gateway(config)
    response = await client.post("/v1/chat/completions", json=CHAT, headers=bearer(ALICE))
    (row,) = (await usage_of(client, ALICE))["data"]
    assert (row["prompt_tokens"], row["completion_tokens"]) == emulated_usage(CHAT["messages"])
    assert row["cost_usd"] == response.headers["x-hookgate-cost-usd"] != "0"


async def test_an_anthropic_upstream_is_counted_and_priced_exactly_streamed_or_not(gateway, local_only):
    """Anthropic reports prompt-cache reads apart from input tokens; the provider folds them into
    OpenAI's usage (cached_tokens), and cost prices them at the cached rate."""
    from hookgate.testing.anthropic_emulator import AnthropicEmulator, EmulatorSettings

    model = "claude-sonnet-4-6"
    prices = {"prices": {model: {"input": "3", "cached_input": "0.3", "output": "15"}}}
    messages = [{"role": "user", "content": "hello brave new world"}]
    async with AnthropicEmulator(EmulatorSettings(cache_read_input_tokens=10)).serve() as upstream:
        config = pipeline_config(
            ["api_keys", "token_counter", "cost", "usage", "anthropic"],
            api_keys=keys_section(KEYS),
            cost=prices,
            anthropic={"base_url": upstream.base_url, "api_key": ANTHROPIC_KEY, "models": [model]},
        )
        client = await gateway(config)
        body = {"model": model, "messages": messages}
        json_answer = await client.post("/v1/chat/completions", json=body, headers=bearer(ALICE))
        hidden = await client.post("/v1/chat/completions", json={**body, "stream": True}, headers=bearer(ALICE))
        shown = await client.post("/v1/chat/completions", json={**body, "stream": True, "stream_options": {"include_usage": True}}, headers=bearer(ALICE))
        hidden_text, shown_text = (await hidden.read()).decode(), (await shown.read()).decode()
    # 4 words of prompt (+10 read from Anthropic's cache), 5 words of reply "emulated: hello brave new world".
    assert json_answer.headers["x-hookgate-cost-usd"] == "0.00009"  # (4 × 3 + 10 × 0.3 + 5 × 15) / 1e6
    assert '"usage"' not in hidden_text and '"cached_tokens":10' in shown_text
    (row,) = (await usage_of(client, ALICE))["data"]
    assert (row["requests"], row["prompt_tokens"], row["cached_tokens"], row["completion_tokens"]) == (3, 42, 30, 15)
    assert row["cost_usd"] == "0.00027"
