"""Routing: [models] maps public names to provider + upstream model + defaults, with aliases,
pattern routes and fallbacks; /v1/models lists exactly what is routable."""
from __future__ import annotations

import pytest

from conftest import CHAT, assert_conforms, pipeline_config
from hookgate.config import ConfigError
from hookgate.gateway import Gateway
from hookgate.testing.openai_emulator import Fault

# Every test runs once per transport of the openai provider (http, sdk): the same behaviour under both.
pytestmark = pytest.mark.usefixtures("upstream_transport")


def two_upstreams(primary, secondary, models: dict) -> str:
    return pipeline_config(
        ["memory_cache", "openai", "openai_compatible"],
        openai={"base_url": primary.base_url, "api_key": "sk-primary", "models": ["gpt-4o-mini"]},
        openai_compatible={"servers": {"backup": {"base_url": secondary.base_url, "models": ["backup-model"]}}},
    ) + models_toml(models)


def models_toml(models: dict) -> str:
    from conftest import toml_value

    lines = []
    for name, spec in models.items():
        lines.append(f'[models."{name}"]')
        lines.extend(f"{key} = {toml_value(value)}" for key, value in spec.items())
    return "\n".join(lines) + "\n"


@pytest.fixture
async def second_emulator():
    from hookgate.testing.openai_emulator import OpenAIEmulator

    async with OpenAIEmulator().serve() as emu:
        yield emu


async def test_a_route_sets_the_upstream_model_and_default_params(gateway, emulator, second_emulator):
    client = await gateway(two_upstreams(emulator, second_emulator, {
        "fast": {"provider": "openai", "model": "gpt-4o-mini", "params": {"temperature": 0.1, "max_tokens": 50}, "aliases": ["quick"]},
    }))
    for name in ("fast", "quick"):
        response = await client.post("/v1/chat/completions", json={**CHAT, "model": name, "max_tokens": 10})
        assert response.status == 200
        assert response.headers["x-hookgate-provider"] == "openai"
    sent = emulator.stats.requests[0].body
    assert sent["model"] == "gpt-4o-mini"
    assert sent["temperature"] == 0.1, "a route default"
    assert sent["max_tokens"] == 10, "the client's own value wins"
    assert emulator.stats.calls == 1, "an alias shares its route's cache entries"


async def test_pattern_routes_pass_the_rest_of_the_name_through(gateway, emulator, second_emulator):
    client = await gateway(two_upstreams(emulator, second_emulator, {"local/*": {"provider": "backup"}}))
    response = await client.post("/v1/chat/completions", json={**CHAT, "model": "local/any-model-name"})
    assert response.status == 200 and response.headers["x-hookgate-provider"] == "backup"
    assert second_emulator.stats.requests[-1].body["model"] == "any-model-name"
    assert (await client.post("/v1/chat/completions", json={**CHAT, "model": "local/"})).status == 404


async def test_v1_models_lists_exactly_what_is_routable(gateway, emulator, second_emulator):
    client = await gateway(two_upstreams(emulator, second_emulator, {
        "fast": {"provider": "openai", "model": "gpt-4o-mini", "aliases": ["quick"]},
        "local/*": {"provider": "backup"},
    }))
    body = await (await client.get("/v1/models")).json()
    assert_conforms("ListModelsResponse", body)
    listed = {m["id"]: m["owned_by"] for m in body["data"]}
    assert listed == {"gpt-4o-mini": "openai", "backup-model": "backup", "fast": "openai", "quick": "openai", "local/backup-model": "backup"}
    for model in listed:
        assert (await client.post("/v1/chat/completions", json={**CHAT, "model": model})).status == 200


async def test_a_failing_route_falls_back_and_says_which_answered(gateway, emulator, second_emulator):
    client = await gateway(two_upstreams(emulator, second_emulator, {
        "smart": {"provider": "openai", "model": "gpt-4o-mini", "fallbacks": ["backup-model"]},
    }))
    emulator.settings.fault = Fault(status=503)
    response = await client.post("/v1/chat/completions", json={**CHAT, "model": "smart"})
    assert response.status == 200
    assert response.headers["x-hookgate-provider"] == "backup"
    assert (await response.json())["model"] == "backup-model"
    assert (emulator.stats.calls, second_emulator.stats.calls) == (1, 1)


async def test_no_fallback_for_errors_about_the_request(gateway, emulator, second_emulator):
    client = await gateway(two_upstreams(emulator, second_emulator, {"smart": {"provider": "openai", "model": "gpt-4o-mini", "fallbacks": ["backup-model"]}}))
    emulator.settings.fault = Fault(status=400)
    assert (await client.post("/v1/chat/completions", json={**CHAT, "model": "smart"})).status == 400
    assert second_emulator.stats.calls == 0


async def test_streams_fall_back_only_before_the_first_byte(gateway, emulator, second_emulator):
    client = await gateway(two_upstreams(emulator, second_emulator, {"smart": {"provider": "openai", "model": "gpt-4o-mini", "fallbacks": ["backup-model"]}}))
    emulator.script(Fault(status=502))
    response = await client.post("/v1/chat/completions", json={**CHAT, "model": "smart", "stream": True})
    assert response.status == 200 and response.headers["x-hookgate-provider"] == "backup"
    assert b"[DONE]" in await response.read()

    emulator.script(Fault(drop_after=2))
    response = await client.post("/v1/chat/completions", json={**CHAT, "model": "smart", "stream": True, "messages": [{"role": "user", "content": "a b c d e f"}]})
    body = await response.read()
    assert response.headers["x-hookgate-provider"] == "openai"
    assert b'"error"' in body, "after the first chunk the stream ends with an error instead"
    assert second_emulator.stats.calls == 1


@pytest.mark.parametrize(
    ("models", "section", "key", "reason"),
    [
        ({"x": {"provider": "nope"}}, "models.x", "provider", "no enabled provider is named 'nope'"),
        ({"x": {"provider": "openai", "fallbacks": ["ghost"]}}, "models.x", "fallbacks", "'ghost' is not a routable model"),
        ({"p/*": {"provider": "openai", "model": "y"}}, "models.p/*", "model", "pattern route"),
    ],
)
def test_bad_routes_are_start_up_errors(make_config, models, section, key, reason):
    with pytest.raises(ConfigError) as caught:
        Gateway(make_config('[gateway]\npipeline = ["openai"]\n' + models_toml(models)))
    assert (caught.value.section, caught.value.key) == (section, key)
    assert reason in caught.value.reason


def test_an_unknown_key_in_a_route_is_a_config_error(make_config):
    with pytest.raises(ConfigError) as caught:
        make_config('[gateway]\npipeline = ["echo"]\n[models.x]\nprovider = "echo"\nfallback = ["y"]\n')
    assert (caught.value.section, caught.value.key) == ("models.x", "fallback")


async def test_an_open_circuit_sends_requests_to_the_fallback(gateway, emulator, second_emulator):
    config = pipeline_config(
        ["circuit_breaker", "openai", "openai_compatible"],
        circuit_breaker={"failure_threshold": 1, "open_seconds": 30},
        openai={"base_url": emulator.base_url, "api_key": "sk-primary", "models": ["gpt-4o-mini"]},
        openai_compatible={"servers": {"backup": {"base_url": second_emulator.base_url, "models": ["backup-model"]}}},
    ) + models_toml({"smart": {"provider": "openai", "model": "gpt-4o-mini", "fallbacks": ["backup-model"]}})
    client = await gateway(config)
    emulator.settings.fault = Fault(status=500)
    for _ in range(3):
        response = await client.post("/v1/chat/completions", json={**CHAT, "model": "smart"})
        assert response.status == 200 and response.headers["x-hookgate-provider"] == "backup"
    assert emulator.stats.calls == 1, "after the first failure the open circuit skips the primary"
    assert second_emulator.stats.calls == 3


async def test_a_provider_without_a_key_falls_back(gateway, second_emulator, monkeypatch):
    monkeypatch.delenv("HG_TEST_NO_KEY", raising=False)
    config = pipeline_config(
        ["openai", "openai_compatible"],
        openai={"api_key_env": "HG_TEST_NO_KEY", "models": ["gpt-4o-mini"]},
        openai_compatible={"servers": {"backup": {"base_url": second_emulator.base_url, "models": ["backup-model"]}}},
    ) + models_toml({"smart": {"provider": "openai", "model": "gpt-4o-mini", "fallbacks": ["backup-model"]}})
    client = await gateway(config)
    response = await client.post("/v1/chat/completions", json={**CHAT, "model": "smart"})
    assert response.status == 200 and response.headers["x-hookgate-provider"] == "backup"
