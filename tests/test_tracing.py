"""tracing: the spans an OpenTelemetry backend receives for known traffic (the SDK's in-memory
exporter, and a real OTLP/HTTP receiver), with their GenAI attributes and their nesting."""
from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap

from aiohttp import web
from opentelemetry import trace as otel_trace
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind, StatusCode

from conftest import CHAT, upstream_config
from hookgate import RateLimited, hookimpl
from hookgate.server import current_gateway
from hookgate.testing.openai_emulator import Fault

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PARENT_ID = "b7ad6b7169203331"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"
MEMORY = {"exporter": "memory"}
FAST_RETRY = {"backoff_base_seconds": 0.01, "backoff_cap_seconds": 0.02}
RELIABLE = ["memory_cache", "retry", "timeout", "tracing"]
ROUTE_FAST = '[models.fast]\nprovider = "openai"\nmodel = "gpt-4o-mini"\n'


def tracing_plugin(client):
    return current_gateway(client.server.app).runner.plugins["tracing"]


def finished_spans(client) -> list:
    return list(tracing_plugin(client).memory_exporter.get_finished_spans())


class Trace:
    """The finished spans of one trace, navigable by name and parent."""

    def __init__(self, spans: list) -> None:
        self.spans = spans
        self.by_id = {span.context.span_id: span for span in spans}

    def named(self, name: str) -> list:
        return [span for span in self.spans if span.name == name]

    def one(self, name: str):
        found = self.named(name)
        assert len(found) == 1, f"{name!r}: {[s.name for s in self.spans]}"
        return found[0]

    def parent(self, span):
        return self.by_id.get(span.parent.span_id) if span.parent else None

    def server(self):
        (server,) = [span for span in self.spans if span.kind == SpanKind.SERVER]
        return server


def ask(content: str, **extra) -> dict:
    return {**CHAT, "messages": [{"role": "user", "content": content}], **extra}


async def test_a_retried_request_is_one_trace_of_phases_hooks_and_attempts(gateway, emulator):
    client = await gateway(upstream_config(emulator, RELIABLE, retry=FAST_RETRY, tracing=MEMORY) + ROUTE_FAST)
    emulator.script(Fault(status=503), None)
    response = await client.post(
        "/v1/chat/completions", json=ask("a secret prompt", model="fast", temperature=0.5, max_tokens=50), headers={"traceparent": TRACEPARENT}
    )
    assert response.status == 200
    usage = (await response.json())["usage"]
    trace = Trace(finished_spans(client))

    request = trace.server()
    assert request.name == "chat fast"
    assert f"{request.context.trace_id:032x}" == TRACE_ID, "the client's trace continues"
    assert f"{request.parent.span_id:016x}" == PARENT_ID
    assert {span.context.trace_id for span in trace.spans} == {request.context.trace_id}
    assert dict(request.attributes).items() >= {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "fast",
        "gen_ai.response.model": "gpt-4o-mini",
        "gen_ai.request.temperature": 0.5,
        "gen_ai.request.max_tokens": 50,
        "gen_ai.usage.input_tokens": usage["prompt_tokens"],
        "gen_ai.usage.output_tokens": usage["completion_tokens"],
        "http.response.status_code": 200,
        "hookgate.cache": "MISS",
        "hookgate.attempts": 2,
    }.items()
    assert request.attributes["gen_ai.response.finish_reasons"] == ("stop",)

    phases = [trace.one(name) for name in ("before_request", "cache_lookup", "call_provider", "after_response")]
    for earlier, later in zip(phases, phases[1:]):
        assert trace.parent(earlier) is request and earlier.end_time <= later.start_time, f"{earlier.name} before {later.name}"
    assert request.start_time <= phases[0].start_time and phases[-1].end_time <= request.end_time, "the request span holds its phases"
    assert trace.parent(trace.one("cache_lookup memory_cache")).name == "cache_lookup"
    assert trace.parent(trace.one("after_response memory_cache")).name == "after_response"
    call_provider = trace.one("call_provider")
    assert {event.name for event in call_provider.events} == {"middleware retry", "middleware timeout"}

    failed, answered = sorted(trace.named("chat gpt-4o-mini"), key=lambda span: span.start_time)
    for attempt in (failed, answered):
        assert attempt.kind == SpanKind.CLIENT and trace.parent(attempt) is call_provider
        assert attempt.attributes["gen_ai.provider.name"] == "openai" and attempt.attributes["gen_ai.request.model"] == "gpt-4o-mini"
    assert failed.status.status_code == StatusCode.ERROR and failed.attributes["error.type"] == "503"
    assert failed.attributes["hookgate.attempt"] == 1 and answered.attributes["hookgate.attempt"] == 2
    assert answered.status.status_code == StatusCode.UNSET
    assert answered.attributes["gen_ai.usage.output_tokens"] == usage["completion_tokens"]
    assert failed.end_time <= answered.start_time

    recorded = " ".join(str(value) for span in trace.spans for value in span.attributes.values())
    assert "secret prompt" not in recorded, "prompts are never recorded"


async def test_a_stream_attempt_ends_with_the_stream_and_carries_its_usage(gateway, emulator):
    client = await gateway(upstream_config(emulator, RELIABLE, tracing=MEMORY))
    emulator.settings.chunk_latency = 0.01
    response = await client.post("/v1/chat/completions", json=ask("stream it", stream=True, stream_options={"include_usage": True}))
    assert b"[DONE]" in await response.read()
    trace = Trace(finished_spans(client))
    attempts = [span for span in trace.spans if span.kind == SpanKind.CLIENT]
    assert len(attempts) == 1
    attempt = attempts[0]
    assert attempt.attributes["gen_ai.usage.output_tokens"] > 0
    assert attempt.attributes["gen_ai.response.finish_reasons"] == ("stop",)
    assert 0 < attempt.attributes["gen_ai.response.time_to_first_chunk"] < (attempt.end_time - attempt.start_time) / 1e9
    request = trace.server()
    assert request.attributes["gen_ai.request.stream"] is True
    assert request.attributes["gen_ai.usage.output_tokens"] == attempt.attributes["gen_ai.usage.output_tokens"]
    assert attempt.end_time <= request.end_time


async def test_a_hit_calls_no_provider_and_failures_mark_the_request(gateway, emulator):
    client = await gateway(upstream_config(emulator, RELIABLE, retry={"max_attempts": 1}, tracing=MEMORY))
    await client.post("/v1/chat/completions", json=ask("twice"))
    await client.post("/v1/chat/completions", json=ask("twice"))
    emulator.script(Fault(status=500))
    assert (await client.post("/v1/chat/completions", json=ask("broken"))).status == 502
    assert (await client.post("/v1/chat/completions", json=ask("x", model="no-such-model"))).status == 404
    requests = [span for span in finished_spans(client) if span.kind == SpanKind.SERVER]
    attempts = [span for span in finished_spans(client) if span.kind == SpanKind.CLIENT]
    assert len(requests) == 4 and len(attempts) == 2, "the HIT and the 404 asked no provider"

    hit = requests[1].attributes
    assert hit["hookgate.cache"] == "HIT" and hit["hookgate.cache_source"] == "memory_cache"
    assert "gen_ai.usage.input_tokens" not in hit, "a HIT spent no tokens"
    assert requests[2].status.status_code == StatusCode.ERROR and requests[2].attributes["http.response.status_code"] == 502
    not_found = requests[3]
    assert not_found.name == "chat" and not_found.attributes["error.type"] == "model_not_found"
    assert not_found.status.status_code == StatusCode.UNSET, "a 4xx is the client's doing"
    assert "gen_ai.provider.name" not in not_found.attributes


class RejectEverything:
    def __init__(self, config) -> None:
        pass

    @hookimpl
    async def before_request(self, ctx):
        raise RateLimited("Slow down.")


async def test_a_rejection_by_a_plugin_listed_earlier_is_still_traced(gateway):
    client = await gateway(
        '[gateway]\npipeline = ["reject", "tracing", "echo"]\n[plugins.tracing]\nexporter = "memory"\n', local={"reject": RejectEverything}
    )
    assert (await client.post("/v1/chat/completions", json=ask("hi", model="echo"))).status == 429
    trace = Trace(finished_spans(client))
    request = trace.server()
    assert request.attributes["error.type"] == "rate_limit_exceeded" and request.attributes["http.response.status_code"] == 429
    rejected = trace.one("before_request reject")
    assert rejected.status.status_code == StatusCode.ERROR and rejected.attributes["hookgate.hook.outcome"] == "RateLimited"
    assert trace.parent(trace.parent(rejected)) is request
    assert [span.name for span in trace.spans if trace.parent(span) is request] == ["before_request", "on_error"]


async def test_sampling_follows_the_ratio_and_a_sampled_parent(gateway):
    client = await gateway('[gateway]\npipeline = ["tracing", "echo"]\n[plugins.tracing]\nexporter = "memory"\nsample_ratio = 0\n')
    await client.post("/v1/chat/completions", json=ask("unsampled", model="echo"))
    assert finished_spans(client) == []
    await client.post("/v1/chat/completions", json=ask("sampled upstream", model="echo"), headers={"traceparent": TRACEPARENT})
    assert {f"{span.context.trace_id:032x}" for span in finished_spans(client)} == {TRACE_ID}


async def test_each_app_has_its_own_tracer_provider(gateway):
    config = '[gateway]\npipeline = ["tracing", "echo"]\n[plugins.tracing]\nexporter = "memory"\n'
    first, second = await gateway(config), await gateway(config)
    await first.post("/v1/chat/completions", json=ask("hi", model="echo"))
    assert len(finished_spans(first)) > 0 and finished_spans(second) == []
    assert not isinstance(otel_trace.get_tracer_provider(), TracerProvider), "the global provider was left alone"


async def test_spans_reach_an_otlp_receiver_with_the_configured_headers(gateway, aiohttp_server):
    received: list[tuple[dict, ExportTraceServiceRequest]] = []

    async def collect(request: web.Request) -> web.Response:
        export = ExportTraceServiceRequest()
        export.ParseFromString(await request.read())
        received.append(({k.lower(): v for k, v in request.headers.items()}, export))
        return web.Response(body=b"", content_type="application/x-protobuf")

    receiver = web.Application()
    receiver.router.add_post("/v1/traces", collect)
    server = await aiohttp_server(receiver)
    client = await gateway(f"""
        [gateway]
        pipeline = ["tracing", "echo"]
        [plugins.tracing]
        endpoint = "{server.make_url('/v1/traces')}"
        headers = {{ authorization = "Bearer collector-token" }}
        service_name = "gateway-under-test"
        resource_attributes = {{ "deployment.environment.name" = "test" }}
    """)
    await client.post("/v1/chat/completions", json=ask("hi", model="echo"))
    assert await asyncio.to_thread(tracing_plugin(client).provider.force_flush, 5000)
    headers, export = received[0]
    assert headers["authorization"] == "Bearer collector-token"
    resource = {a.key: a.value.string_value for a in export.resource_spans[0].resource.attributes}
    assert resource["service.name"] == "gateway-under-test" and resource["deployment.environment.name"] == "test"
    names = {span.name for rs in export.resource_spans for ss in rs.scope_spans for span in ss.spans}
    assert {"chat echo", "before_request", "call_provider", "after_response"} <= names


def test_without_opentelemetry_start_up_fails_with_a_clear_message(tmp_path):
    config = tmp_path / "plugins.toml"
    config.write_text('[gateway]\npipeline = ["tracing", "echo"]\n')
    script = textwrap.dedent(f"""
        import sys

        class NoOpenTelemetry:
            def find_spec(self, name, path=None, target=None):
                if name == "opentelemetry" or name.startswith("opentelemetry."):
                    raise ModuleNotFoundError(f"No module named {{name!r}}")
                return None

        sys.meta_path.insert(0, NoOpenTelemetry())
        from hookgate.cli import main
        main(["check-config", {str(config)!r}])
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "plugin 'tracing' needs OpenTelemetry" in result.stderr and "pip install 'hookgate[tracing]'" in result.stderr
