"""The groq and openai_compatible providers against local emulators, under both transports
(the shared HTTP pool and their official SDKs), seen from the openai SDK on the client side."""
from __future__ import annotations

import openai
import pytest

from conftest import assert_conforms, pipeline_config
from hookgate.testing.groq_emulator import groq_emulator
from hookgate.testing.openai_emulator import Fault, OpenAIEmulator

MESSAGES = [{"role": "user", "content": "hello fast world"}]


@pytest.fixture
async def groq_upstream():
    async with groq_emulator().serve() as emu:
        yield emu


def groq_config(emu, **extra) -> str:
    return pipeline_config(["groq"], groq={"base_url": emu.base_url, "api_key": "gsk-secret-groq", **extra})


@pytest.mark.usefixtures("upstream_transport")
async def test_groq_answers_json_and_streams(gateway, sdk, groq_upstream):
    client = sdk(await gateway(groq_config(groq_upstream)))
    raw = await client.chat.completions.with_raw_response.create(model="llama-3.1-8b-instant", messages=MESSAGES)
    completion = raw.parse()
    assert_conforms("CreateChatCompletionResponse", completion.model_dump(mode="json", exclude_unset=True))
    assert completion.choices[0].message.content == "emulated: hello fast world"
    assert raw.headers["x-hookgate-provider"] == "groq"
    sent = groq_upstream.stats.requests[-1]
    assert sent.headers["Authorization"] == "Bearer gsk-secret-groq"
    chunks = [c async for c in await client.chat.completions.create(
        model="llama-3.1-8b-instant", messages=MESSAGES, stream=True, stream_options={"include_usage": True})]
    for chunk in chunks:
        assert_conforms("CreateChatCompletionStreamResponse", chunk.model_dump(mode="json", exclude_unset=True))
    assert chunks[-1].usage.total_tokens > 0


@pytest.mark.usefixtures("upstream_transport")
async def test_groq_pattern_route(gateway, sdk, groq_upstream):
    config = groq_config(groq_upstream) + '[models."groq/*"]\nprovider = "groq"\n'
    client = sdk(await gateway(config))
    await client.chat.completions.create(model="groq/some-new-model", messages=MESSAGES)
    assert groq_upstream.stats.requests[-1].body["model"] == "some-new-model"


@pytest.mark.usefixtures("upstream_transport")
@pytest.mark.parametrize(("fault", "status"), [(Fault(status=429, retry_after=4), 429), (Fault(status=401), 502), (Fault(status=500), 502), (Fault(status=400), 400)])
async def test_groq_errors(gateway, sdk, groq_upstream, fault, status):
    client = sdk(await gateway(groq_config(groq_upstream)))
    groq_upstream.script(fault)
    with pytest.raises(openai.APIStatusError) as caught:
        await client.chat.completions.create(model="llama-3.1-8b-instant", messages=MESSAGES)
    assert caught.value.status_code == status
    assert "gsk-secret-groq" not in str(caught.value.body)
    if status == 429:
        assert caught.value.response.headers["retry-after"] == "4"
    assert groq_upstream.stats.calls == 1, "the SDK does not retry by itself"


@pytest.mark.usefixtures("upstream_transport")
async def test_groq_without_a_key_is_503_naming_the_variable(gateway, sdk, monkeypatch):
    monkeypatch.delenv("GROQ_API_KEY", raising=False)
    client = sdk(await gateway('[gateway]\npipeline = ["groq"]\n'))
    with pytest.raises(openai.APIStatusError) as caught:
        await client.chat.completions.create(model="llama-3.1-8b-instant", messages=MESSAGES)
    assert caught.value.status_code == 503 and "GROQ_API_KEY" in caught.value.message


async def test_several_openai_compatible_servers(gateway, sdk, monkeypatch, upstream_transport):
    monkeypatch.setenv("HG_TEST_TOGETHER_KEY", "tk-secret-1")
    monkeypatch.delenv("HG_TEST_UNSET_KEY", raising=False)
    async with OpenAIEmulator().serve() as vllm, OpenAIEmulator().serve() as together:
        config = pipeline_config(["openai_compatible"], openai_compatible={"servers": {
            "vllm": {"base_url": vllm.base_url, "models": ["llama-local"], "transport": upstream_transport},
            "together": {"base_url": together.base_url, "api_key_env": "HG_TEST_TOGETHER_KEY", "models": ["llama-remote"], "transport": upstream_transport},
            "other": {"base_url": together.base_url, "api_key_env": "HG_TEST_UNSET_KEY", "models": ["needs-key"], "transport": upstream_transport},
        }})
        client = sdk(await gateway(config))
        raw = await client.chat.completions.with_raw_response.create(model="llama-local", messages=MESSAGES)
        assert raw.headers["x-hookgate-provider"] == "vllm"
        raw = await client.chat.completions.with_raw_response.create(model="llama-remote", messages=MESSAGES)
        assert raw.headers["x-hookgate-provider"] == "together"
        assert together.stats.requests[-1].headers["Authorization"] == "Bearer tk-secret-1"
        assert vllm.stats.calls == 1 and together.stats.calls == 1
        with pytest.raises(openai.APIStatusError) as caught:
            await client.chat.completions.create(model="needs-key", messages=MESSAGES)
        assert caught.value.status_code == 503 and "HG_TEST_UNSET_KEY" in caught.value.message


async def test_every_sdk_client_is_built_with_max_retries_0(make_config, monkeypatch):
    from aiohttp.test_utils import TestClient, TestServer

    from hookgate.server import create_app, current_gateway

    monkeypatch.setenv("OPENAI_API_KEY", "sk-x")
    monkeypatch.setenv("GROQ_API_KEY", "gsk-x")
    config = make_config(pipeline_config(
        ["openai", "groq", "openai_compatible"], openai={"transport": "sdk"}, groq={"transport": "sdk"},
        openai_compatible={"servers": {"local": {"base_url": "http://127.0.0.1:9/v1", "models": ["m"], "transport": "sdk"}}},
    ))
    app = create_app(config)
    async with TestClient(TestServer(app)):
        providers = current_gateway(app).providers
        clients = [provider.transport.client for provider in providers.values()]
        assert len(clients) == 3 and all(client is not None for client in clients)
        assert [client.max_retries for client in clients] == [0, 0, 0]
