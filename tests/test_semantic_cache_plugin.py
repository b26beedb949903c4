"""The semantic cache in one in-process gateway: what is stored, how it plays with the exact
caches, streams, disagreement in shadow mode, and its metrics."""
from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

from conftest import pipeline_config
from hookgate.tasks import background

ANSWER = "Open Settings, choose Security, then Reset password."
SYSTEM = f'You are the help desk.\n#mock: content="{ANSWER}"'
TRUSTING = {"min_observations": 1, "window": 5, "comparison": "exact", "audit_fraction": 0.0}


def config(redis_url: str, prefix: str, *, pipeline: list[str] | None = None, shadow: dict[str, Any] | None = None, **sections: Any) -> str:
    semantic = {"redis_url": redis_url, "key_prefix": prefix, "shadow": shadow or TRUSTING, "operation_timeout_seconds": 1.0, **sections.pop("semantic", {})}
    return pipeline_config(
        pipeline or ["memory_cache", "semantic_cache", "mock"],
        semantic_cache=semantic,
        mock={"models": ["gpt-4o-mini"]},
        **sections,
    )


def chat(prompt: str, *, system: str = SYSTEM, **extra: Any) -> dict[str, Any]:
    return {"model": "gpt-4o-mini", "messages": [{"role": "system", "content": system}, {"role": "user", "content": prompt}], **extra}


async def ask(client, body: dict[str, Any], key: str = "sk-plugin-test", **headers: str):
    response = await client.post("/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}", **headers})
    text = await response.text()
    return response, text


async def settled(client) -> None:
    """Background stores and comparisons of the app are done."""
    await background(client.app).idle()


async def test_a_trusted_namespace_serves_paraphrases_as_json_and_as_a_stream(gateway, redis_url, redis_prefix):
    client = await gateway(config(redis_url, redis_prefix))
    response, _ = await ask(client, chat("How do I reset my password?"))
    assert response.headers["x-hookgate-cache"] == "MISS"
    await settled(client)
    response, _ = await ask(client, chat("How can I reset my password?"), **{"Cache-Control": "no-store"})
    assert response.headers["x-hookgate-cache"] == "SHADOW"
    await settled(client)
    response, body = await ask(client, chat("What is the way to reset my password?", stream=True))
    assert response.headers["x-hookgate-cache"] == "HIT-SEMANTIC"
    assert response.headers["content-type"].startswith("text/event-stream")
    events = [line[len("data: "):] for line in body.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(event) for event in events[:-1]]
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]) == ANSWER


async def test_exact_caches_never_keep_a_semantic_hit_under_the_new_prompts_key(gateway, redis_url, redis_prefix):
    pipeline = ["memory_cache", "redis_cache", "semantic_cache", "mock"]
    client = await gateway(config(redis_url, redis_prefix, pipeline=pipeline, redis_cache={"redis_url": redis_url, "key_prefix": redis_prefix}))
    await ask(client, chat("How do I reset my password?"))
    await settled(client)
    await ask(client, chat("How can I reset my password?"), **{"Cache-Control": "no-store"})  # SHADOW: trusted after it
    await settled(client)
    for _ in range(2):
        response, _ = await ask(client, chat("Can you tell me how to reset my password?"))
        assert response.headers["x-hookgate-cache"] == "HIT-SEMANTIC"  # not HIT: no exact copy was made
        await settled(client)


async def test_answers_with_tool_calls_or_an_unlisted_finish_reason_are_never_stored(gateway, redis_url, redis_prefix):
    client = await gateway(config(redis_url, redis_prefix))
    tools = [{"type": "function", "function": {"name": "reset_password", "parameters": {"type": "object", "properties": {}}}}]
    no_directive = "You are the help desk."
    response, _ = await ask(client, chat("Please reset_password for me", system=no_directive, tools=tools, tool_choice="required"))
    assert response.status == 200 and "x-hookgate-cache-entry" not in response.headers
    response, _ = await ask(client, chat("How do I reset my password?", system=f'{no_directive}\n#mock: content="Cut" finish_reason=length'))
    assert "x-hookgate-cache-entry" not in response.headers
    await settled(client)
    state = await (await client.get("/-/semantic-cache")).json()
    assert state["index"]["entries"] == 0


async def test_disagreeing_answers_keep_a_namespace_in_shadow_mode(gateway, redis_url, redis_prefix):
    shadow = {"min_observations": 2, "window": 5, "comparison": "exact", "audit_fraction": 0.0}
    client = await gateway(config(redis_url, redis_prefix, shadow=shadow))
    plain = "You are the help desk."  # the mock answers "mock: <the prompt>": paraphrases get different answers
    await ask(client, chat("How do I reset my password?", system=plain))
    await settled(client)
    for paraphrase in ("How can I reset my password?", "What is the way to reset my password?", "Can you tell me how to reset my password?"):
        response, _ = await ask(client, chat(paraphrase, system=plain), **{"Cache-Control": "no-store"})
        assert response.headers["x-hookgate-cache"] == "SHADOW"
        await settled(client)
    tenant = "key-" + hashlib.sha256(b"sk-plugin-test").hexdigest()[:16]
    state = await (await client.get("/-/semantic-cache")).json()
    assert state["namespaces"][tenant] == {"observations": 3, "agreement": 0.0, "trusted": False}


async def test_metrics_count_outcomes_per_namespace_with_bounded_labels(gateway, redis_url, redis_prefix):
    client = await gateway(config(redis_url, redis_prefix, pipeline=["metrics", "semantic_cache", "mock"], semantic={"metrics_max_namespaces": 2}))
    for tenant in range(4):
        await ask(client, chat(f"Where is office number {tenant}?"), key=f"sk-tenant-{tenant}")
    await ask(client, chat("hot", temperature=1.9))
    await settled(client)
    metrics = await (await client.get("/metrics")).text()
    lookups = [line for line in metrics.splitlines() if line.startswith("hookgate_semantic_cache_lookups_total{")]
    assert len({line.split('namespace="')[1].split('"')[0] for line in lookups}) == 3  # two named, then "other"
    assert any('namespace="other",outcome="miss"' in line for line in lookups)
    assert any('outcome="temperature"' in line for line in lookups)
    assert "hookgate_semantic_cache_embedding_seconds_count" in metrics
    assert 'hookgate_semantic_cache_stores_total{result="stored"} 4.0' in metrics


@pytest.mark.parametrize("header", [{"Cache-Control": "no-cache"}, {"Cache-Control": "no-store"}])
async def test_cache_control_is_honoured(gateway, redis_url, redis_prefix, header):
    client = await gateway(config(redis_url, redis_prefix))
    await ask(client, chat("How do I reset my password?"))
    await settled(client)
    response, _ = await ask(client, chat("How can I reset my password?"), **header)
    if "no-cache" in header["Cache-Control"]:
        assert response.headers["x-hookgate-cache"] == "BYPASS"  # no lookup; the fresh answer is stored
        assert "x-hookgate-cache-entry" in response.headers
    else:
        assert response.headers["x-hookgate-cache"] == "SHADOW" and "x-hookgate-cache-score" in response.headers
    await settled(client)
    state = await (await client.get("/-/semantic-cache")).json()
    assert state["index"]["entries"] == (2 if "no-cache" in header["Cache-Control"] else 1)
