"""The two transports of the OpenAI-wire providers side by side: for the same upstream answer
(or failure), a client of the gateway receives the same bytes, headers included, whether the
openai provider runs on the shared HTTP pool (``transport = "http"``) or on the official SDK
(``"sdk"``); and the transports themselves raise the same GatewayError, so retry, breaker and
fallback decide alike. Plus what only the http transport has: the shared pool, its bounds, the
headers it sends."""
from __future__ import annotations

import asyncio
import re
import socket
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from conftest import ROOT, UPSTREAM_TRANSPORTS, pipeline_config
from hookgate import GatewayError
from hookgate.http import HTTP_SERVICE, HTTPService
from hookgate.provider_kit import HTTPTransport, SDKTransport, openai_wire_transport
from hookgate.providers.openai import OpenAIConfig
from hookgate.server import create_app, current_gateway
from hookgate.testing.openai_emulator import Fault, OpenAIEmulator
from hookgate.upstream import is_retriable, is_upstream_failure, should_fall_back

UPSTREAM_KEY = "sk-upstream-secret-123"
MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "compare the two transports"}]
PLAIN = {"model": "gpt-4o-mini", "messages": MESSAGES, "temperature": 0.3}
STREAMED = {**PLAIN, "stream": True, "stream_options": {"include_usage": True}}
WEATHER_TOOL = {"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}  # fmt: skip
TOOLS = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "call get_weather for Paris"}], "tools": [WEATHER_TOOL]}

VARYING_HEADERS = frozenset({"date", "x-request-id", "x-hookgate-overhead-ms", "server"})
"""Response headers that differ between any two requests (time, ids), whatever the transport."""
_CREATED = re.compile(rb'"created":\d+')
_WAITED = re.compile(rb"\d+\.\d+ s\b")  # the timeout plugin's measured wait, in its error messages
_RESET = re.compile(r"^x-ratelimit-reset-")


@dataclass(frozen=True)
class Seen:
    """What the client of the gateway received, with what differs between any two requests
    masked: the ``created`` time and the seconds a timeout waited."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes


def masked_headers(headers: Any) -> tuple[tuple[str, str], ...]:
    kept = []
    for name, value in headers.items():
        name = name.lower()
        if name in VARYING_HEADERS:
            continue
        kept.append((name, "<time>" if _RESET.match(name) else value))
    return tuple(sorted(kept))


def provider_section(emulator_url: str, transport: str) -> dict[str, Any]:
    return {"base_url": emulator_url, "api_key": UPSTREAM_KEY, "models": ["gpt-4o-mini"], "transport": transport}


async def seen_by_client(
    gateway: Any, transport: str, body: dict[str, Any], *, faults: tuple[Fault | None, ...] = (), pipeline: tuple[str, ...] = (),
    base_url: str | None = None, sections: dict[str, dict[str, Any]] | None = None, requests: int = 1,
) -> tuple[list[Seen], OpenAIEmulator]:
    """``requests`` answers to ``body`` from a gateway whose openai provider uses ``transport``,
    in front of a fresh emulator scripted with ``faults`` (so both transports see the same ids)."""
    async with OpenAIEmulator().serve() as emulator:
        emulator.script(*faults)
        config = pipeline_config([*pipeline, "openai"], **(sections or {}), openai=provider_section(base_url or emulator.base_url, transport))
        client = await gateway(config)
        answers = []
        for _ in range(requests):
            response = await client.post("/v1/chat/completions", json=body, headers={"Authorization": "Bearer sk-client-1"})
            raw = await response.read()
            masked = _WAITED.sub(b"<seconds>", _CREATED.sub(b'"created":0', raw))
            answers.append(Seen(response.status, masked_headers(response.headers), masked))
        return answers, emulator


async def both(gateway: Any, body: dict[str, Any], **kwargs: Any) -> dict[str, list[Seen]]:
    return {transport: (await seen_by_client(gateway, transport, body, **kwargs))[0] for transport in UPSTREAM_TRANSPORTS}


# ---------------------------------------------------------------------- the same bytes out ---


@pytest.mark.parametrize("body", [PLAIN, STREAMED, {**PLAIN, "stream": True}, TOOLS, {**TOOLS, "stream": True}], ids=["json", "sse-usage", "sse", "tools", "tools-sse"])
async def test_answers_reach_the_client_byte_for_byte_alike(gateway, body):
    seen = await both(gateway, body)
    assert seen["http"] == seen["sdk"]
    answer = seen["http"][0]
    assert answer.status == 200 and answer.body.count(b"gpt-4o-mini") >= 1
    if body.get("stream"):
        assert answer.body.endswith(b"data: [DONE]\n\n") and answer.body.count(b"data: ") > 3


async def test_the_upstream_receives_the_same_request_and_the_gateways_key(gateway):
    sent = {}
    for transport in UPSTREAM_TRANSPORTS:
        _, emulator = await seen_by_client(gateway, transport, {**PLAIN, "brand_new_param": [1, 2]})
        request = emulator.stats.requests[-1]
        sent[transport] = request.body
        assert request.headers["Authorization"] == f"Bearer {UPSTREAM_KEY}"
        assert request.headers["Content-Type"] == "application/json"
    assert sent["http"] == sent["sdk"] == {**PLAIN, "brand_new_param": [1, 2]}


ERROR_FAULTS = [
    Fault(status=400, message="bad tool schema", code="invalid_tool"),
    Fault(status=401), Fault(status=403), Fault(status=404), Fault(status=408), Fault(status=409), Fault(status=422),
    Fault(status=429, retry_after=3), Fault(status=429, code="insufficient_quota"),
    Fault(status=500), Fault(status=502), Fault(status=503, retry_after=7), Fault(status=504), Fault(status=529, retry_after=1),
    Fault(malformed=True), Fault(drop_after=0),
]  # fmt: skip


@pytest.mark.parametrize("fault", ERROR_FAULTS, ids=lambda f: f"status={f.status}" if f.status else ("malformed" if f.malformed else "dropped"))
@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
async def test_upstream_failures_reach_the_client_alike(gateway, fault, stream):
    seen = await both(gateway, {**PLAIN, "stream": stream}, faults=(fault,))
    assert seen["http"] == seen["sdk"]
    answer = seen["http"][0]
    if fault.status is not None:
        assert answer.status == {400: 400, 404: 404, 409: 409, 422: 422, 429: 429, 408: 504, 503: 503, 529: 503}.get(fault.status, 502)
    if fault.retry_after is not None:
        assert dict(answer.headers)["retry-after"] == str(int(fault.retry_after))
    assert UPSTREAM_KEY.encode() not in answer.body


async def test_an_unreachable_upstream_reaches_the_client_alike(gateway):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    seen = await both(gateway, PLAIN, base_url=f"http://127.0.0.1:{port}/v1")
    assert seen["http"] == seen["sdk"]
    assert seen["http"][0].status == 502 and b"upstream_unreachable" in seen["http"][0].body


@pytest.mark.parametrize(
    ("fault", "timeout"),
    [(Fault(drop_after=2), {}), (Fault(stall_after=2), {"chunk_gap_seconds": 0.3}), (Fault(hang=True), {"per_attempt_seconds": 0.3})],
    ids=["cut-mid-stream", "stalled-mid-stream", "hung"],
)
async def test_streams_that_fail_reach_the_client_alike_and_free_the_upstream(gateway, fault, timeout):
    seen = {}
    for transport in UPSTREAM_TRANSPORTS:
        answers, emulator = await seen_by_client(gateway, transport, {**PLAIN, "stream": True}, faults=(fault,), pipeline=("timeout",), sections={"timeout": timeout})
        seen[transport] = answers
        if fault.drop_after is None:  # ended by the timeout plugin: the upstream call is cancelled
            assert emulator.stats.cancelled == 1 and emulator.stats.in_flight == 0
    assert seen["http"] == seen["sdk"]
    answer = seen["http"][0]
    if fault.hang:
        assert answer.status == 504
    else:
        assert answer.status == 200 and answer.body.count(b'"object":"chat.completion.chunk"') == 2 and b'"error"' in answer.body


async def test_the_gateways_own_headers_are_alike(gateway):
    """The rate limiter's x-ratelimit-* headers and the cache header, over several requests."""
    sections = {"rate_limit": {"requests_per_minute": 100, "key_prefix": "hgtest:transports"}, "memory_cache": {}}
    seen = await both(gateway, PLAIN, pipeline=("rate_limit", "memory_cache"), sections=sections, requests=3)
    assert seen["http"] == seen["sdk"]
    headers = [dict(answer.headers) for answer in seen["http"]]
    assert [h["x-ratelimit-remaining-requests"] for h in headers] == ["99", "98", "97"]
    assert [h["x-hookgate-cache"] for h in headers] == ["MISS", "HIT", "HIT"]


# ------------------------------------------------------------ the same GatewayError raised ---


def described(error: GatewayError) -> tuple[Any, ...]:
    decisions = (is_retriable(error), is_upstream_failure(error), should_fall_back(error))
    return (type(error), error.status, error.code, error.upstream_status, dict(error.headers), error.to_body(), decisions)


async def raised(transport: str, base_url: str, *, stream: bool, request_timeout: float = 600.0) -> tuple[Any, ...] | str:
    config = OpenAIConfig(base_url=base_url, api_key=UPSTREAM_KEY, transport=transport, request_timeout_seconds=request_timeout)
    upstream = openai_wire_transport("openai", config)
    http = HTTPService()
    await upstream.start(http)
    payload = orjson.dumps({**PLAIN, "stream": stream})
    try:
        if not stream:
            await upstream.post_json("/chat/completions", payload)
            return "answered"
        response = await upstream.post_stream("/chat/completions", payload)
        try:
            async for _ in upstream.events(response):
                pass
        finally:
            await response.aclose()
        return "streamed"
    except GatewayError as error:
        return described(error)
    finally:
        await upstream.close()
        await http.close()


@pytest.mark.parametrize("fault", [*ERROR_FAULTS, Fault(drop_after=2), Fault(hang=True), Fault(stall_after=1)], ids=repr)
@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
async def test_every_failure_is_the_same_gateway_error_under_both_transports(emulator, fault, stream):
    results = {}
    for transport in UPSTREAM_TRANSPORTS:
        emulator.script(fault)
        # hang and stall end by the call's own read limit here (no timeout plugin around it);
        # every other fault gets a limit a loaded machine cannot reach (0.3 s made a 401 a timeout)
        limit = 0.3 if fault.hang or fault.stall_after is not None else 10.0
        results[transport] = await raised(transport, emulator.base_url, stream=stream, request_timeout=limit)
    assert results["http"] == results["sdk"]
    assert isinstance(results["http"], tuple), "every one of these faults is an error"


async def test_connection_failures_are_the_same_gateway_error_under_both_transports():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        refused = f"http://127.0.0.1:{s.getsockname()[1]}/v1"
    for base_url in (refused, "http://no-such-host.invalid/v1"):
        results = {t: await raised(t, base_url, stream=False) for t in UPSTREAM_TRANSPORTS}
        assert results["http"] == results["sdk"]
        assert results["http"][2] == "upstream_unreachable" and results["http"][6] == (True, True, True)


# ------------------------------------------------------------------ what only http does ---


@pytest.mark.parametrize(("transport", "cls"), [("http", HTTPTransport), ("sdk", SDKTransport)])
def test_the_transport_setting_picks_the_transport(transport, cls):
    assert isinstance(openai_wire_transport("openai", OpenAIConfig(api_key="sk-x", transport=transport)), cls)


@pytest.mark.parametrize("config", ["plugins.toml", "all-openai-wire"])
def test_the_http_transport_is_the_default_and_needs_no_sdk_import(config, tmp_path):
    """Starting the repository's plugins.toml, or every OpenAI-wire provider at its defaults,
    imports no SDK (nor the HTTP libraries only the SDKs use)."""
    if config == "plugins.toml":
        path = ROOT / "plugins.toml"
    else:
        path = tmp_path / "plugins.toml"
        path.write_text(pipeline_config(
            ["openai", "groq", "openai_compatible"], openai={"api_key": "sk-x"}, groq={"api_key": "gsk-x"},
            openai_compatible={"servers": {"local": {"base_url": "http://127.0.0.1:9/v1", "models": ["m"]}}},
        ))  # fmt: skip
    script = textwrap.dedent("""
        import asyncio, sys
        from hookgate.config import load_config
        from hookgate.server import create_app, current_gateway
        from aiohttp.test_utils import TestClient, TestServer
        async def main():
            app = create_app(load_config(sys.argv[1]))
            async with TestClient(TestServer(app)):
                for provider in current_gateway(app).providers.values():
                    assert type(provider).__name__ == "EchoProvider" or type(provider.transport).__name__ == "HTTPTransport"
        asyncio.run(main())
        heavy = sorted(m for m in ("openai", "httpx2", "httpx", "groq", "anthropic") if m in sys.modules)
        print(",".join(heavy) or "none")
    """)
    done = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "none"


async def test_http_sends_auth_organization_and_project_and_no_sdk_headers(emulator):
    config = OpenAIConfig(base_url=emulator.base_url, api_key=UPSTREAM_KEY, organization="org-1", project="proj-2")
    upstream = openai_wire_transport("openai", config, organization=config.organization, project=config.project)
    http = HTTPService()
    await upstream.start(http)
    try:
        await upstream.post_json("/chat/completions", orjson.dumps(PLAIN))
    finally:
        await http.close()
    headers = emulator.stats.requests[-1].headers
    assert headers["Authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert (headers["OpenAI-Organization"], headers["OpenAI-Project"]) == ("org-1", "proj-2")
    assert not [name for name in headers if name.lower().startswith("x-stainless")]


async def test_a_keyless_server_is_called_without_authorization(gateway, emulator):
    config = pipeline_config(["openai_compatible"], openai_compatible={"servers": {"local": {"base_url": emulator.base_url, "models": ["m"]}}})
    client = await gateway(config)
    response = await client.post("/v1/chat/completions", json={"model": "m", "messages": MESSAGES})
    assert response.status == 200
    assert "Authorization" not in emulator.stats.requests[-1].headers


def raw_upstream(body: bytes, *, chunks: list[bytes] | None = None, compress: bool = False) -> web.Application:
    """An upstream answering every chat call with ``body`` (gzipped when the client accepts it
    and ``compress``), or streaming ``chunks`` as SSE."""

    async def answer(request: web.Request) -> web.StreamResponse:
        if chunks is None:
            response = web.Response(body=body, content_type="application/json")
            if compress:
                response.enable_compression()
            return response
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for chunk in chunks:
            await response.write(chunk)
        return response

    app = web.Application()
    app.router.add_post("/v1/chat/completions", answer)
    return app


CHUNK = b'{"id":"c1","object":"chat.completion.chunk","created":0,"model":"m","choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":"stop"}]}'


@pytest.mark.parametrize(
    ("body", "chunks"),
    [
        (b'{"id":"x","object":"chat.completion","choices":[1, 2]}', None),
        (b'{"id":"x","object":"chat.completion","choices":"none"}', None),
        (b'[{"choices":[]}]', None),
        (b"", [b'data: {"id":"c","choices":["text"]}\n\n', b"data: [DONE]\n\n"]),
        (b"", [b'data: {"id":"c","choices":{"0":{}}}\n\n', b"data: [DONE]\n\n"]),
    ],
    ids=["choices-of-numbers", "choices-a-string", "a-list", "chunk-choices-of-strings", "chunk-choices-an-object"],
)
@pytest.mark.parametrize("transport", UPSTREAM_TRANSPORTS)
async def test_an_answer_whose_choices_are_not_objects_is_a_502(gateway, aiohttp_server, body, chunks, transport):
    stream = chunks is not None
    server = await aiohttp_server(raw_upstream(body, chunks=chunks))
    client = await gateway(pipeline_config(["openai"], openai=provider_section(str(server.make_url("/v1")), transport)))
    response = await client.post("/v1/chat/completions", json={**PLAIN, "stream": stream})
    body = await response.read()
    if stream:  # the first chunk is the bad one: nothing was sent yet, so it is a plain HTTP error
        assert response.status == 502 and b"upstream_malformed" in body
    else:
        assert response.status == 502 and orjson.loads(body)["error"]["code"] == "upstream_malformed"


@pytest.mark.parametrize("transport", UPSTREAM_TRANSPORTS)
async def test_events_split_anywhere_between_reads_and_crlf_line_ends_are_read_alike(gateway, aiohttp_server, transport):
    stream = (b"data: " + CHUNK + b"\r\n\r\n") * 3 + b": a comment\r\n\r\ndata: [DONE]\r\n\r\n"
    pieces = [stream[i : i + 7] for i in range(0, len(stream), 7)]
    server = await aiohttp_server(raw_upstream(b"", chunks=pieces))
    client = await gateway(pipeline_config(["openai"], openai=provider_section(str(server.make_url("/v1")), transport)))
    response = await client.post("/v1/chat/completions", json={**PLAIN, "stream": True})
    body = await response.read()
    assert response.status == 200
    assert body == (b"data: " + CHUNK + b"\n\n") * 3 + b"data: [DONE]\n\n"


async def test_a_compressed_answer_is_read_and_bounded_once_decompressed(gateway, aiohttp_server):
    answer = {"id": "x", "object": "chat.completion", "created": 0, "model": "m", "padding": "x" * 20_000, "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "zipped", "refusal": None}, "finish_reason": "stop", "logprobs": None}]}  # fmt: skip
    server = await aiohttp_server(raw_upstream(orjson.dumps(answer), compress=True))
    for limit, status in ((1 << 20, 200), (8192, 502)):  # 20 kB unzipped, well under 8 kB zipped
        section = {**provider_section(str(server.make_url("/v1")), "http"), "max_response_bytes": limit}
        client = await gateway(pipeline_config(["openai"], openai=section))
        response = await client.post("/v1/chat/completions", json=PLAIN)
        assert response.status == status
        if status == 200:
            assert (await response.json())["choices"][0]["message"]["content"] == "zipped"


async def test_http_bounds_the_answer_it_reads(gateway, aiohttp_server):
    big = b'{"id":"x","object":"chat.completion","choices":[],"padding":"' + b"x" * 5000 + b'"}'
    json_server = await aiohttp_server(raw_upstream(big))
    sse_server = await aiohttp_server(raw_upstream(b"", chunks=[b"data: " + b"x" * 3000, b"y" * 3000]))
    for server, stream in ((json_server, False), (sse_server, True)):
        section = {**provider_section(str(server.make_url("/v1")), "http"), "max_response_bytes": 4096}
        client = await gateway(pipeline_config(["openai"], openai=section))
        response = await client.post("/v1/chat/completions", json={**PLAIN, "stream": stream})
        assert response.status == 502
        assert orjson.loads(await response.read())["error"]["code"] == "upstream_too_large"


# ---------------------------------------------------------------------- the shared pool ---


async def started(app: web.Application) -> TestClient:
    client = TestClient(TestServer(app))
    await client.start_server()
    return client


def with_app_pool(app: web.Application) -> HTTPService:
    """The app's HTTP service: create_app's own once it installs one, else installed here the
    way it will (its cleanup entry before the plugins', so it closes after they shut down)."""
    if HTTP_SERVICE in app:
        return app[HTTP_SERVICE]
    service = app[HTTP_SERVICE] = HTTPService(max_connections=8)
    app.cleanup_ctx.insert(0, service.lifecycle)
    return service


async def test_every_http_provider_of_an_app_shares_its_pool_until_the_app_stops(make_config, emulator):
    config = make_config(pipeline_config(
        ["openai", "groq", "openai_compatible"], openai=provider_section(emulator.base_url, "http"), groq={"api_key": "gsk-x"},
        openai_compatible={"servers": {"a": {"base_url": emulator.base_url, "models": ["a"]}, "b": {"base_url": emulator.base_url, "models": ["b"]}}},
    ))  # fmt: skip
    app = create_app(config)
    service = with_app_pool(app)
    assert not service.opened, "made by the first provider that needs it, not with the app"
    client = await started(app)
    try:
        for model in ("gpt-4o-mini", "a", "b"):
            assert (await client.post("/v1/chat/completions", json={**PLAIN, "model": model})).status == 200
        sessions = {provider.transport._session for provider in current_gateway(app).providers.values()}
        assert sessions == {service.session()}
    finally:
        await client.close()
    assert not service.opened


async def test_without_an_app_pool_each_plugin_closes_its_own_at_shutdown(make_config, emulator):
    app = create_app(make_config(pipeline_config(["openai"], openai=provider_section(emulator.base_url, "http"))))
    if HTTP_SERVICE in app:  # an app made by other means than create_app
        del app[HTTP_SERVICE]
    client = await started(app)
    try:
        assert (await client.post("/v1/chat/completions", json=PLAIN)).status == 200
        plugin = current_gateway(app).runner.plugins["openai"]
        session = plugin.transport._session
        assert session is not None and not session.closed
    finally:
        await client.close()
    assert session.closed


async def test_an_app_without_http_providers_opens_no_pool(make_config):
    app = create_app(make_config(pipeline_config(["echo"])))
    service = with_app_pool(app)
    client = await started(app)
    try:
        assert (await client.post("/v1/chat/completions", json={**PLAIN, "model": "echo"})).status == 200
        assert not service.opened
    finally:
        await client.close()


@pytest.mark.parametrize("transport", UPSTREAM_TRANSPORTS)
async def test_a_proxy_from_the_environment_is_used_unless_no_proxy_names_the_host(gateway, emulator, monkeypatch, transport):
    """HTTP_PROXY is read as the SDKs read it (the emulator stands in for the proxy: it answers
    the absolute-form request a client sends through a proxy)."""
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    proxy = emulator.base_url.removesuffix("/v1")
    monkeypatch.setenv("HTTP_PROXY", proxy)
    client = await gateway(pipeline_config(["openai"], openai=provider_section("http://upstream.invalid/v1", transport)))
    assert (await client.post("/v1/chat/completions", json=PLAIN)).status == 200
    assert emulator.stats.calls == 1
    monkeypatch.setenv("NO_PROXY", "upstream.invalid")
    client = await gateway(pipeline_config(["openai"], openai=provider_section("http://upstream.invalid/v1", transport)))
    assert (await client.post("/v1/chat/completions", json=PLAIN)).status == 502
    assert emulator.stats.calls == 1


# ------------------------------------------------------------ the anthropic provider's two ---

CLAUDE = "claude-sonnet-4-6"
ASK_CLAUDE = {"model": CLAUDE, "max_tokens": 64, "messages": [{"role": "user", "content": "compare the two transports"}]}
_MESSAGE_IDS = re.compile(rb'"(msg|toolu)_[A-Za-z0-9]+"')


async def seen_through_anthropic(gateway: Any, transport: str, path: str, body: dict[str, Any], fault: Any = None) -> Seen:
    """What a client receives from ``path`` when the anthropic provider uses ``transport``, in
    front of a fresh Anthropic emulator scripted with ``fault``."""
    from hookgate.testing.anthropic_emulator import AnthropicEmulator

    async with AnthropicEmulator().serve() as claude:
        if fault is not None:
            claude.script(fault)
        section = {"base_url": claude.base_url, "api_key": UPSTREAM_KEY, "models": [CLAUDE], "transport": transport}
        client = await gateway(pipeline_config(["anthropic"], anthropic=section))
        headers = {"x-api-key": "sk-client-1", "anthropic-version": "2023-06-01"}
        response = await client.post(path, json=body, headers=headers)
        raw = _MESSAGE_IDS.sub(b'"<id>"', _CREATED.sub(b'"created":0', await response.read()))
        assert claude.stats.requests[-1].headers["Authorization"] == f"Bearer {UPSTREAM_KEY}"
        return Seen(response.status, masked_headers(response.headers), raw)


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
@pytest.mark.parametrize(("path", "body"), [("/v1/messages", ASK_CLAUDE), ("/v1/chat/completions", {"model": CLAUDE, "messages": ASK_CLAUDE["messages"]})],
                         ids=["messages-passed-through", "chat-translated"])  # fmt: skip
async def test_anthropic_answers_reach_the_client_alike_under_both_transports(gateway, path, body, stream):
    seen = {transport: await seen_through_anthropic(gateway, transport, path, {**body, "stream": stream}) for transport in UPSTREAM_TRANSPORTS}
    assert seen["http"] == seen["sdk"]
    assert seen["http"].status == 200 and b"transports" in seen["http"].body


@pytest.mark.parametrize("status", [400, 401, 404, 429, 500, 529])
async def test_anthropic_failures_reach_the_client_alike_under_both_transports(gateway, status):
    from hookgate.testing.anthropic_emulator import Fault as ClaudeFault

    seen = {
        transport: await seen_through_anthropic(gateway, transport, "/v1/messages", ASK_CLAUDE, ClaudeFault(status=status, retry_after=2))
        for transport in UPSTREAM_TRANSPORTS
    }
    assert seen["http"] == seen["sdk"]
    assert seen["http"].status >= 400 and b'"type":"error"' in seen["http"].body.replace(b" ", b"")
