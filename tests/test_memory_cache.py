"""memory_cache as a client sees it: HIT/MISS/BYPASS, TTL, LRU, Cache-Control, what is never stored."""
from __future__ import annotations

import asyncio

import pytest

from conftest import ECHO_CACHED, completion, openai_upstream, provider_plugin
from hookgate import hookimpl
from hookgate.plugins.memory_cache import MemoryCache
from hookgate.testing.openai_emulator import Fault

GOOD = {"model": "echo", "messages": [{"role": "user", "content": "cache me"}]}


async def cache_of(client, body=GOOD, headers=None) -> str:
    response = await client.post("/v1/chat/completions", json=body, headers=headers or {})
    assert response.status == 200
    await response.read()
    return response.headers["x-hookgate-cache"]


async def test_miss_then_hit_with_age(gateway):
    client = await gateway(ECHO_CACHED)
    assert await cache_of(client) == "MISS"
    response = await client.post("/v1/chat/completions", json=GOOD)
    assert response.headers["x-hookgate-cache"] == "HIT"
    assert response.headers["age"] == "0"


async def test_entries_expire_after_the_ttl(gateway):
    client = await gateway('[gateway]\npipeline = ["memory_cache", "echo"]\n[plugins.memory_cache]\nttl_seconds = 0.2')
    assert await cache_of(client) == "MISS"
    assert await cache_of(client) == "HIT"
    await asyncio.sleep(0.3)
    assert await cache_of(client) == "MISS"


async def test_least_recently_used_entries_are_evicted(gateway):
    client = await gateway('[gateway]\npipeline = ["memory_cache", "echo"]\n[plugins.memory_cache]\nmax_entries = 2')
    bodies = [{"model": "echo", "messages": [{"role": "user", "content": f"q{i}"}]} for i in range(3)]
    await cache_of(client, bodies[0])
    await cache_of(client, bodies[1])
    assert await cache_of(client, bodies[0]) == "HIT"  # q0 is now the most recent
    await cache_of(client, bodies[2])  # evicts q1
    assert await cache_of(client, bodies[0]) == "HIT"
    assert await cache_of(client, bodies[1]) == "MISS"


async def test_cache_control_no_cache_and_no_store(gateway):
    client = await gateway(ECHO_CACHED)
    assert await cache_of(client, headers={"Cache-Control": "no-store"}) == "MISS"
    assert await cache_of(client) == "MISS", "no-store: nothing was written"
    assert await cache_of(client, headers={"Cache-Control": "no-cache"}) == "BYPASS"
    assert await cache_of(client) == "HIT"


async def test_answers_are_scoped_per_client_key_unless_shared(gateway):
    client = await gateway(ECHO_CACHED)
    assert await cache_of(client, headers={"Authorization": "Bearer sk-alice"}) == "MISS"
    assert await cache_of(client, headers={"Authorization": "Bearer sk-bob"}) == "MISS"
    assert await cache_of(client, headers={"Authorization": "Bearer sk-alice"}) == "HIT"
    shared = await gateway('[gateway]\npipeline = ["memory_cache", "echo"]\n[plugins.memory_cache]\nshared = true')
    await cache_of(shared, headers={"Authorization": "Bearer sk-alice"})
    assert await cache_of(shared, headers={"Authorization": "Bearer sk-bob"}) == "HIT"


async def test_errors_are_never_stored(gateway, emulator):
    client = await gateway(openai_upstream(emulator, pipeline='"memory_cache", "openai"'))
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]}
    emulator.script(Fault(status=500))
    assert (await client.post("/v1/chat/completions", json=body)).status == 502
    response = await client.post("/v1/chat/completions", json=body)
    assert response.status == 200 and response.headers["x-hookgate-cache"] == "MISS"
    assert emulator.stats.calls == 2


async def test_a_stream_cut_off_midway_is_never_stored(gateway, emulator):
    client = await gateway(openai_upstream(emulator, pipeline='"memory_cache", "openai"'))
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "a b c d e"}], "stream": True}
    emulator.script(Fault(drop_after=2))
    broken = await client.post("/v1/chat/completions", json=body)
    assert b'"error"' in await broken.read()
    again = await client.post("/v1/chat/completions", json=body)
    await again.read()
    assert again.headers["x-hookgate-cache"] == "MISS"
    assert emulator.stats.calls == 2


@pytest.mark.parametrize(("finish_reason", "stored"), [("stop", True), ("content_filter", False)])
async def test_only_configured_finish_reasons_are_stored(gateway, finish_reason, stored):
    async def fixed(ctx):
        return completion("...", finish_reason=finish_reason)

    client = await gateway('[gateway]\npipeline = ["memory_cache", "fixed"]', local={"fixed": provider_plugin("fixed", fixed)})
    body = {"model": "fixed", "messages": [{"role": "user", "content": "x"}]}
    await cache_of(client, body)
    assert await cache_of(client, body) == ("HIT" if stored else "MISS")


async def test_entries_above_the_size_cap_are_not_stored(gateway):
    client = await gateway('[gateway]\npipeline = ["memory_cache", "echo"]\n[plugins.memory_cache]\nmax_entry_bytes = 600')
    small = {"model": "echo", "messages": [{"role": "user", "content": "hi"}]}
    large = {"model": "echo", "messages": [{"role": "user", "content": "word " * 200}]}
    await cache_of(client, small)
    await cache_of(client, large)
    assert await cache_of(client, small) == "HIT"
    assert await cache_of(client, large) == "MISS"


async def test_a_hit_cannot_be_corrupted_by_a_later_plugin(gateway):
    class Exclaim:
        """Edits every answer it sees; with a shared cached object the edits would pile up."""

        def __init__(self, config):
            pass

        @hookimpl
        async def after_response(self, ctx, response):
            response.body["choices"][0]["message"]["content"] += "!"

    client = await gateway('[gateway]\npipeline = ["memory_cache", "exclaim", "echo"]', local={"exclaim": Exclaim})
    for _ in range(3):
        response = await client.post("/v1/chat/completions", json=GOOD)
        assert (await response.json())["choices"][0]["message"]["content"] == "echo: cache me!"
    assert response.headers["x-hookgate-cache"] == "HIT"


class LaterCache:
    """A second-tier cache that always hits, with an answer 7 s old (as redis_cache would)."""

    def __init__(self, config):
        pass

    @hookimpl
    async def cache_lookup(self, ctx):
        ctx.response_headers["age"] = "7"
        return completion("from the later cache")


def observed() -> tuple[type[MemoryCache], list[MemoryCache]]:
    """memory_cache itself, keeping its instances so that a test can look at the entries."""
    instances: list[MemoryCache] = []

    class ObservedMemoryCache(MemoryCache):
        def __init__(self, config):
            super().__init__(config)
            instances.append(self)

    return ObservedMemoryCache, instances


async def test_fills_itself_from_a_later_caches_hit_keeping_its_age(gateway):
    memory = observed()
    plugins = {"memory_cache": memory[0], "later": LaterCache}
    client = await gateway('[gateway]\npipeline = ["memory_cache", "later", "echo"]', local=plugins)
    [cache] = memory[1]
    first = await client.post("/v1/chat/completions", json=GOOD)
    assert first.headers["x-hookgate-cache"] == "HIT" and len(cache) == 1
    second = await client.post("/v1/chat/completions", json=GOOD)
    assert (await second.json())["choices"][0]["message"]["content"] == "from the later cache"
    assert second.headers["age"] == "7", "the entry's age, not the time it reached memory"


async def test_a_later_caches_hit_older_than_the_ttl_is_not_kept(gateway):
    memory, instances = observed()
    config = '[gateway]\npipeline = ["memory_cache", "later", "echo"]\n[plugins.memory_cache]\nttl_seconds = 5'
    client = await gateway(config, local={"memory_cache": memory, "later": LaterCache})
    await cache_of(client)
    assert len(instances[0]) == 0


async def test_its_own_hits_are_never_stored_again(gateway):
    memory, instances = observed()
    client = await gateway(ECHO_CACHED, local={"memory_cache": memory})
    await cache_of(client)
    [entry] = instances[0]._entries.values()
    assert await cache_of(client) == "HIT"
    [after] = instances[0]._entries.values()
    assert after is entry, "a hit re-stored would restart its TTL and live forever"


async def test_a_client_ttl_can_shorten_but_not_lengthen_the_entry(gateway):
    memory, instances = observed()
    config = '[gateway]\npipeline = ["memory_cache", "echo"]\n[plugins.memory_cache]\nttl_seconds = 60'
    client = await gateway(config, local={"memory_cache": memory})
    for content, ttl, expected in (("short", "0.2", 0.2), ("long", "3600", 60)):
        body = {"model": "echo", "messages": [{"role": "user", "content": content}]}
        await cache_of(client, body, headers={"x-hookgate-cache-ttl": ttl})
        expires_at, stored_at, _ = list(instances[0]._entries.values())[-1]
        assert expires_at - stored_at == pytest.approx(expected)


async def test_no_cache_replaces_the_entry_with_the_fresh_answer(gateway):
    answers = iter(["first", "second"])

    async def changing(ctx):
        return completion(next(answers))

    client = await gateway('[gateway]\npipeline = ["memory_cache", "changing"]', local={"changing": provider_plugin("changing", changing)})
    body = {"model": "changing", "messages": [{"role": "user", "content": "x"}]}
    await cache_of(client, body)
    assert await cache_of(client, body, headers={"Cache-Control": "max-age=0, No-Cache"}) == "BYPASS"
    response = await client.post("/v1/chat/completions", json=body)
    assert (await response.json())["choices"][0]["message"]["content"] == "second"


async def test_a_fallback_routes_answer_is_stored_under_its_own_key(gateway, emulator):
    from conftest import CHAT, pipeline_config
    from hookgate.testing.openai_emulator import OpenAIEmulator

    async with OpenAIEmulator().serve() as backup:
        config = pipeline_config(
            ["memory_cache", "openai", "openai_compatible"],
            openai={"base_url": emulator.base_url, "api_key": "sk-primary", "models": ["gpt-4o-mini"]},
            openai_compatible={"servers": {"backup": {"base_url": backup.base_url, "models": ["backup-model"]}}},
        ) + '[models."smart"]\nprovider = "openai"\nmodel = "gpt-4o-mini"\nfallbacks = ["backup-model"]\n'
        client = await gateway(config)
        emulator.settings.fault = Fault(status=503)
        assert await cache_of(client, {**CHAT, "model": "smart"}) == "MISS"  # answered by the backup
        emulator.settings.fault = None
        response = await client.post("/v1/chat/completions", json={**CHAT, "model": "smart"})
        assert response.headers["x-hookgate-cache"] == "MISS", "the backup's answer was not stored for smart"
        assert (await response.json())["model"] == "gpt-4o-mini"
        assert await cache_of(client, {**CHAT, "model": "backup-model"}) == "HIT"
