"""The semantic cache embedding with a model the gateway routes (``embedding_model``), here a
``[models.embed]`` route to the OpenAI emulator's ``text-embedding-3-small``.

The emulator's vectors are a hashed bag of words (``hookgate.testing.openai_emulator.embedding_for``):
equal for equal text (case aside), close for texts sharing most words. So an identical last turn
scores 1.0, "How can I reset my password?" scores ~0.86 against "How do I reset my password?",
and the guard still refuses a changed content word.
"""
from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np
import pytest

from conftest import eventually, pipeline_config, toml_value
from hookgate import InvalidRequest, ServiceUnavailable, UpstreamError
from hookgate.dispatch import embed
from hookgate.embeddings import GatewayEmbedder
from hookgate.testing.openai_emulator import Fault, OpenAIEmulator, embedding_for
from test_semantic_cache_plugin import ANSWER, TRUSTING, ask, chat, settled

DIMENSIONS = 256
PROMPT = "How do I reset my password?"


def routed_config(
    emulator: OpenAIEmulator,
    redis_url: str,
    prefix: str,
    *,
    pipeline: tuple[str, ...] = ("metrics", "semantic_cache", "mock", "openai"),
    embedding_model: str = "embed",
    upstream: str = "text-embedding-3-small",
    routes: dict[str, str] | None = None,
    **semantic: Any,
) -> str:
    """A gateway whose chat model is the mock and whose semantic cache embeds with ``embedding_model``,
    routed (``routes``: public name → upstream model, default ``{"embed": upstream}``) to the emulator."""
    section = {
        "redis_url": redis_url,
        "key_prefix": prefix,
        "shadow": TRUSTING,
        "operation_timeout_seconds": 1.0,
        "embedding_model": embedding_model,
        "embedding_dimensions": DIMENSIONS,
        "embedding_timeout_seconds": 5.0,  # generous: the machine is shared; the timeout test sets its own
        **semantic,
    }
    section = {key: value for key, value in section.items() if value is not None}
    text = pipeline_config(
        list(pipeline),
        semantic_cache=section,
        mock={"models": ["gpt-4o-mini"]},
        openai={"base_url": emulator.base_url, "api_key": "sk-upstream-secret-123", "models": ["text-embedding-3-small"]},
    )
    for name, model in (routes or {"embed": upstream}).items():
        text += f"[models.{toml_value(name)}]\nprovider = \"openai\"\nmodel = {toml_value(model)}\n"
    return text


def embedding_calls(emulator: OpenAIEmulator) -> list[dict[str, Any]]:
    return [request.body for request in emulator.stats.requests if isinstance(request.body, dict) and "input" in request.body]


async def metric(client, name: str) -> str:
    return await (await client.get("/metrics")).text()


def lookups(metrics: str, outcome: str) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("hookgate_semantic_cache_lookups_total{") and f'outcome="{outcome}"' in line
    )


async def test_the_emulator_embeds_the_last_turn_and_an_identical_one_becomes_a_semantic_hit(gateway, emulator, redis_url, redis_prefix):
    client = await gateway(routed_config(emulator, redis_url, redis_prefix))  # no exact cache: the identical turn reaches this tier
    response, _ = await ask(client, chat(PROMPT))
    assert response.status == 200 and response.headers["x-hookgate-cache"] == "MISS"
    assert embedding_calls(emulator) == [{"model": "text-embedding-3-small", "input": [PROMPT], "dimensions": DIMENSIONS}]
    await settled(client)
    response, _ = await ask(client, chat(PROMPT), **{"Cache-Control": "no-store"})
    assert response.headers["x-hookgate-cache"] == "SHADOW"  # agreed (exact comparison): the namespace is trusted after it
    await settled(client)
    response, body = await ask(client, chat(PROMPT))
    assert response.headers["x-hookgate-cache"] == "HIT-SEMANTIC"
    assert response.headers["x-hookgate-cache-score"] == "1.0000"
    assert ANSWER in body
    assert all(call["model"] == "text-embedding-3-small" for call in embedding_calls(emulator))
    assert set(emulator.stats.calls_by_path) == {"/v1/embeddings"}  # chat answers came from the mock
    metrics = await metric(client, "lookups")
    assert lookups(metrics, "surface") == 0  # its own embeddings requests are not lookups
    assert lookups(metrics, "hit") == 1 and lookups(metrics, "miss") == 1


async def test_a_paraphrase_is_a_semantic_hit_and_a_changed_content_word_is_not(gateway, emulator, redis_url, redis_prefix):
    client = await gateway(routed_config(emulator, redis_url, redis_prefix, pipeline=("memory_cache", "semantic_cache", "mock", "openai")))
    await ask(client, chat(PROMPT))
    await settled(client)
    response, _ = await ask(client, chat("how do i reset my PASSWORD?"), **{"Cache-Control": "no-store"})
    assert response.headers["x-hookgate-cache"] == "SHADOW"
    await settled(client)
    response, _ = await ask(client, chat("How can I reset my password?"))
    assert response.headers["x-hookgate-cache"] == "HIT-SEMANTIC"
    assert 0.75 < float(response.headers["x-hookgate-cache-score"]) < 1.0
    await settled(client)
    response, _ = await ask(client, chat("How do I reset my email?"))  # similar vectors, refused by the guard
    assert response.headers["x-hookgate-cache"] == "MISS"


@pytest.mark.parametrize("failure", ["error", "hang"])
async def test_an_embedding_that_fails_or_hangs_skips_the_tier_and_the_request_is_served(gateway, emulator, redis_url, redis_prefix, failure):
    client = await gateway(routed_config(emulator, redis_url, redis_prefix, embedding_timeout_seconds=0.5))
    emulator.settings.fault = Fault(status=500) if failure == "error" else Fault(hang=True)
    started = time.monotonic()
    response, body = await ask(client, chat(PROMPT))
    assert response.status == 200 and response.headers["x-hookgate-cache"] == "MISS" and ANSWER in body
    assert "x-hookgate-cache-entry" not in response.headers  # nothing to store without a vector
    if failure == "hang":
        assert time.monotonic() - started < 3.0  # the embedding timeout, not the upstream's
    metrics = await metric(client, "lookups")
    assert lookups(metrics, "embedder" if failure == "error" else "embedder_timeout") == 1
    emulator.settings.fault = None
    response, _ = await ask(client, chat(PROMPT))
    assert response.status == 200 and "x-hookgate-cache-entry" in response.headers  # embedded and stored once it answers


async def test_switching_or_rerouting_the_embedding_model_never_matches_old_vectors(gateway, emulator, redis_url, redis_prefix):
    # Both upstream models give the emulator's same vectors at the same length: only the partition
    # keeps them apart.
    first = await gateway(routed_config(emulator, redis_url, redis_prefix, pipeline=("semantic_cache", "mock", "openai")))
    await ask(first, chat(PROMPT))
    await settled(first)
    await ask(first, chat(PROMPT), **{"Cache-Control": "no-store"})  # SHADOW, agreed: the namespace is trusted
    await settled(first)

    same = await gateway(routed_config(emulator, redis_url, redis_prefix, pipeline=("semantic_cache", "mock", "openai")))
    response, _ = await ask(same, chat(PROMPT))
    assert response.headers["x-hookgate-cache"] == "HIT-SEMANTIC"  # another instance, the same model: the entry is found

    large = {"embed": "text-embedding-3-small", "embed-large": "text-embedding-3-large"}
    other_model = await gateway(routed_config(emulator, redis_url, redis_prefix, pipeline=("semantic_cache", "mock", "openai"), embedding_model="embed-large", routes=large))
    rerouted = await gateway(routed_config(emulator, redis_url, redis_prefix, pipeline=("semantic_cache", "mock", "openai"), upstream="text-embedding-3-large"))
    for client in (other_model, rerouted):
        response, _ = await ask(client, chat(PROMPT), **{"Cache-Control": "no-store"})
        assert response.status == 200 and response.headers["x-hookgate-cache"] == "MISS"
    assert embedding_calls(emulator)[-1]["model"] == "text-embedding-3-large"


async def test_without_configured_dimensions_the_first_answer_sets_the_index_length(gateway, emulator, redis_url, redis_prefix):
    client = await gateway(routed_config(emulator, redis_url, redis_prefix, embedding_dimensions=None))
    assert (await (await client.get("/-/semantic-cache")).json())["backend"] is None
    response, _ = await ask(client, chat(PROMPT))
    assert response.status == 200 and response.headers["x-hookgate-cache"] == "MISS"
    assert "dimensions" not in embedding_calls(emulator)[0]
    assert lookups(await metric(client, "lookups"), "not_ready") == 1
    for _ in range(200):  # the index is built in the background from the learned length
        if (await (await client.get("/-/semantic-cache")).json())["backend"] == "local":
            break
        await asyncio.sleep(0.02)
    response, _ = await ask(client, chat(PROMPT))
    assert "x-hookgate-cache-entry" in response.headers
    await settled(client)
    response, _ = await ask(client, chat(PROMPT), **{"Cache-Control": "no-store"})
    assert response.headers["x-hookgate-cache"] == "SHADOW"  # found: 1536-dimension vectors, the model's own


async def test_concurrent_texts_are_batched_into_fewer_requests_with_unit_vectors_in_order(gateway, emulator):
    client = await gateway(
        pipeline_config(["openai"], openai={"base_url": emulator.base_url, "api_key": "sk-upstream-secret-123", "models": ["text-embedding-3-small"]})
    )
    embedder = GatewayEmbedder(client.app, "text-embedding-3-small", caller="test", dimensions=64, timeout=5.0, batch_size=8, max_in_flight=1)
    texts = [f"text number {i}" for i in range(20)]
    results = await asyncio.gather(*(embedder.embed([text]) for text in texts))
    for text, result in zip(texts, results):
        expected = np.array(embedding_for(text, 64), dtype=np.float32)
        assert np.allclose(result.vectors[0], expected, atol=1e-6)
    calls = embedding_calls(emulator)
    assert len(calls) < len(texts) and max(len(call["input"]) for call in calls) <= 8
    assert sorted(text for call in calls for text in call["input"]) == sorted(texts)
    await embedder.aclose()


async def test_a_vector_of_the_wrong_length_or_count_is_an_upstream_error(gateway, emulator):
    client = await gateway(
        pipeline_config(["openai"], openai={"base_url": emulator.base_url, "api_key": "sk-upstream-secret-123", "models": ["text-embedding-3-small"]})
    )
    embedder = GatewayEmbedder(client.app, "text-embedding-3-small", caller="test", timeout=5.0)
    assert embedder.dimensions == 0
    await embedder.embed(["learn the length"])
    assert embedder.dimensions == 1536
    for answer in ({"data": [{"index": 0, "embedding": [1.0, 0.0]}]}, {"data": []}, {"data": [{"index": 0, "embedding": [0.0] * 1536}]}):
        with pytest.raises(UpstreamError) as raised:
            embedder._vectors_of(answer, 1)  # the length learned, no vector, a zero vector
        assert raised.value.code == "invalid_embeddings" and raised.value.status == 502
    await embedder.aclose()


async def test_dispatch_embed_validates_like_a_client_request(gateway, emulator):
    client = await gateway(
        pipeline_config(["openai"], openai={"base_url": emulator.base_url, "api_key": "sk-upstream-secret-123", "models": ["text-embedding-3-small"]})
    )
    answer = await embed(client.app, {"model": "text-embedding-3-small", "input": ["one", "two"]}, caller="test")
    assert [item["index"] for item in answer.body["data"]] == [0, 1]
    assert emulator.stats.requests[-1].headers.get("x-hookgate-internal") is None  # the mark stays in the gateway
    for bad, param in (({"model": "text-embedding-3-small", "input": []}, "input"), ({"model": "text-embedding-3-small", "input": ["ok", ""]}, "input[1]"), ({"input": ["x"]}, "model")):
        with pytest.raises(InvalidRequest) as raised:
            await embed(client.app, bad, caller="test")
        assert raised.value.param == param


async def test_an_unrouted_embedding_model_degrades_readiness_and_requests_are_served(gateway, emulator, redis_url, redis_prefix):
    client = await gateway(routed_config(emulator, redis_url, redis_prefix, embedding_model="no-such-embedder"))
    body = await (await client.get("/readyz")).json()
    assert body["checks"]["semantic_cache"]["status"] == "degraded" and "no-such-embedder" in body["checks"]["semantic_cache"]["detail"]
    response, text = await ask(client, chat(PROMPT))
    assert response.status == 200 and response.headers["x-hookgate-cache"] == "MISS" and ANSWER in text
    assert lookups(await metric(client, "lookups"), "embedder") == 1


async def test_a_prompt_embedded_before_is_answered_by_the_exact_cache_of_the_embeddings_surface(gateway, emulator, redis_url, redis_prefix):
    client = await gateway(routed_config(emulator, redis_url, redis_prefix, pipeline=("memory_cache", "semantic_cache", "mock", "openai")))
    for system in ("You are the help desk.", "You are the front desk."):  # two partitions, one last turn
        response, _ = await ask(client, chat(PROMPT, system=system))
        assert response.status == 200
    assert len(embedding_calls(emulator)) == 1


async def test_closing_the_embedder_fails_its_callers_at_once(gateway, emulator):
    client = await gateway(
        pipeline_config(["openai"], openai={"base_url": emulator.base_url, "api_key": "sk-upstream-secret-123", "models": ["text-embedding-3-small"]})
    )
    emulator.settings.fault = Fault(hang=True)
    embedder = GatewayEmbedder(client.app, "text-embedding-3-small", caller="test", timeout=30.0, max_in_flight=1)
    sent, waiting = asyncio.ensure_future(embedder.embed(["out"])), asyncio.ensure_future(embedder.embed(["queued"]))
    await eventually(lambda: emulator.stats.in_flight > 0)
    started = time.monotonic()
    await embedder.aclose()
    for call in (sent, waiting):
        with pytest.raises(ServiceUnavailable):
            await call
    assert time.monotonic() - started < 5.0


@pytest.mark.parametrize(
    "section, reason",
    [
        ({"embedding_dimensions": 256}, "embedding_dimensions needs embedding_model"),
        ({"embedding_model": "embed", "embedder": {"threads": 2}}, "embedder configures the offline model"),
        ({"embedding_model": "embed", "embedding_timeout_seconds": 0}, "embedding_timeout_seconds"),
    ],
)
def test_contradictory_embedding_settings_fail_at_start_up(make_config, section, reason):
    from hookgate.config import ConfigError

    with pytest.raises(ConfigError) as raised:
        make_config(pipeline_config(["semantic_cache", "mock"], semantic_cache=section))
    assert reason in str(raised.value)
