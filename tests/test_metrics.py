"""metrics: what a Prometheus scrape of /metrics shows after known traffic, in one process and
across the workers of `hookgate serve --workers 2`."""
from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from decimal import Decimal

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import CHAT, completion, eventually, pipeline_config, provider_plugin, upstream_config
from hookgate import ClientKey, PermissionDenied, RateLimited, hookimpl
from hookgate.facts import CLIENT_KEY, COST_USD
from hookgate.rules import Produces
from hookgate.pipelines import Pipelines
from hookgate.server import PIPELINES, create_app
from hookgate.testing.openai_emulator import Fault
from servers import HOOKGATE, free_port

MODEL = "gen_ai_request_model"
PROVIDER = "gen_ai_provider_name"
STATUS = "http_response_status_code"
FAST_RETRY = {"backoff_base_seconds": 0.01, "backoff_cap_seconds": 0.02}


class Scrape:
    """One /metrics answer, parsed the way Prometheus parses it."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.samples = [sample for family in text_string_to_metric_families(text) for sample in family.samples]

    def value(self, name: str, **labels: str) -> float:
        """The sum of ``name``'s samples whose labels include ``labels`` (0 when there is none)."""
        return sum(s.value for s in self.samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))

    def label_values(self, name: str, label: str) -> set[str]:
        return {s.labels[label] for s in self.samples if s.name == name and label in s.labels}


async def scrape(client, **headers: str) -> Scrape:
    response = await client.get("/metrics", headers=headers)
    assert response.status == 200, await response.text()
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return Scrape(await response.text())


def ask(content: str, **extra) -> dict:
    return {**CHAT, "messages": [{"role": "user", "content": content}], **extra}


async def test_known_traffic_moves_every_counter(gateway, emulator):
    config = upstream_config(emulator, ["metrics", "memory_cache", "retry", "timeout"], retry=FAST_RETRY)
    client = await gateway(config)

    emulator.script(Fault(status=503), None)  # a retry, then the answer
    first = await client.post("/v1/chat/completions", json=ask("one"))
    assert first.status == 200 and first.headers["x-hookgate-attempts"] == "2"
    usage = (await first.json())["usage"]
    hit = await client.post("/v1/chat/completions", json=ask("one"))
    assert hit.headers["x-hookgate-cache"] == "HIT"
    stream = await client.post("/v1/chat/completions", json=ask("two", stream=True, stream_options={"include_usage": True}))
    assert stream.status == 200 and b"[DONE]" in await stream.read()
    emulator.script(Fault(status=429, code="insufficient_quota", error_type="insufficient_quota"))  # not retried
    assert (await client.post("/v1/chat/completions", json=ask("three"))).status == 429
    emulator.script(Fault(delay=2))
    slow = await client.post("/v1/chat/completions", json=ask("four"), headers={"x-hookgate-timeout": "0.4"})
    assert slow.status == 504
    assert (await client.post("/v1/chat/completions", json=ask("five", model="no-such-model"))).status == 404

    m = await scrape(client)
    served = {MODEL: "gpt-4o-mini", PROVIDER: "openai"}
    assert m.value("hookgate_requests_total", **served, **{STATUS: "200", "cache": "MISS"}) == 2
    assert m.value("hookgate_requests_total", **served, **{STATUS: "200", "cache": "HIT"}) == 1
    assert m.value("hookgate_requests_total", **served, **{STATUS: "429"}) == 1
    assert m.value("hookgate_requests_total", **served, **{STATUS: "504"}) == 1
    assert m.value("hookgate_requests_total", **{MODEL: "none", PROVIDER: "none", STATUS: "404"}) == 1, "unrouted: no client-chosen label"
    assert m.value("hookgate_requests_total") == 6
    assert m.value("hookgate_requests_in_flight") == 0

    assert m.value("hookgate_cache_lookups_total", result="hit", cache_plugin="memory_cache") == 1
    assert m.value("hookgate_cache_lookups_total", result="miss") == 4
    assert m.value("hookgate_upstream_attempts_total", **served, outcome="http_503") == 1
    assert m.value("hookgate_upstream_attempts_total", **served, outcome="ok") == 2
    assert m.value("hookgate_upstream_attempts_total", **served, outcome="http_429") == 1
    assert m.value("hookgate_upstream_attempts_total", **served, outcome="timeout") == 1
    assert m.value("hookgate_upstream_retries_total", **served) == 1
    assert m.value("hookgate_timeouts_total", **served) == 1
    assert m.value("hookgate_rate_limited_total", **served, error_code="insufficient_quota") == 1

    # Tokens: the two answers the upstream produced (the HIT spent none).
    assert m.value("gen_ai_client_token_usage_count", **served, gen_ai_token_type="input") == 2
    assert m.value("gen_ai_client_token_usage_sum", **served, gen_ai_token_type="input") >= 2 * usage["prompt_tokens"]
    assert m.value("gen_ai_client_token_usage_sum", **served, gen_ai_token_type="output") > 0

    assert m.value("gen_ai_server_request_duration_seconds_count") == 6
    assert m.value("gen_ai_server_request_duration_seconds_count", error_type="timeout") == 1
    timed_out = m.value("gen_ai_server_request_duration_seconds_sum", error_type="timeout")
    assert 0.4 <= timed_out < 1.5, "the 504 took about its 0.4 s deadline"
    assert m.value("gen_ai_server_time_to_first_token_seconds_count", **served, cache="MISS") == 1, "only the stream has a TTFT"
    assert m.value("hookgate_upstream_duration_seconds_count", **served) == 4, "every request that reached the provider, not the HIT"
    assert m.value("hookgate_plugin_hook_duration_seconds_count", hook="cache_lookup", plugin="memory_cache") == 5
    assert m.value("hookgate_plugin_hook_exceptions_total", hook="call_provider", plugin="timeout", exception="GatewayTimeout") == 1


class SlowPlugin:
    """A third-party plugin that takes 60 ms in before_request and 30 ms of its own around the
    provider call."""

    def __init__(self, config) -> None:
        pass

    @hookimpl
    async def before_request(self, ctx):
        await asyncio.sleep(0.06)

    @hookimpl
    async def call_provider(self, ctx, call_next):
        await asyncio.sleep(0.03)
        return await call_next(ctx)


async def slow_answer(ctx):
    await asyncio.sleep(0.2)
    return completion("slow")


async def test_a_slow_plugin_shows_by_name_without_the_time_of_the_rest_of_the_chain(gateway):
    client = await gateway(
        '[gateway]\npipeline = ["metrics", "slow", "sleepy"]', local={"slow": SlowPlugin, "sleepy": provider_plugin("sleepy", slow_answer)}
    )
    assert (await client.post("/v1/chat/completions", json=ask("hi", model="sleepy"))).status == 200
    m = await scrape(client)
    assert 0.06 <= m.value("hookgate_plugin_hook_duration_seconds_sum", hook="before_request", plugin="slow") < 0.2
    middleware = m.value("hookgate_plugin_hook_duration_seconds_sum", hook="call_provider", plugin="slow")
    assert 0.03 <= middleware < 0.2, "its own 30 ms, not the provider's 200 ms"
    assert m.value("hookgate_plugin_hook_duration_seconds_bucket", hook="before_request", plugin="slow", le="0.05") == 0
    assert m.value("hookgate_plugin_hook_duration_seconds_sum", hook="before_request", plugin="metrics") < 0.01


class RejectWithHeader:
    """Rejects requests that carry ``x-reject`` with a 429, before routing."""

    def __init__(self, config) -> None:
        pass

    @hookimpl
    async def before_request(self, ctx):
        if "x-reject" in ctx.headers:
            raise RateLimited("Slow down.", code="too_many")


async def test_in_flight_goes_back_down_on_every_path(gateway):
    answers: list[asyncio.Future] = []

    async def held_answer(ctx):
        future = asyncio.get_running_loop().create_future()
        answers.append(future)
        return await future

    client = await gateway(
        '[gateway]\npipeline = ["early", "metrics", "late", "held"]',
        local={"early": RejectWithHeader, "late": RejectWithHeader, "held": provider_plugin("held", held_answer)},
    )
    body = ask("hi", model="held")
    running = asyncio.ensure_future(client.post("/v1/chat/completions", json=body))
    await eventually(lambda: len(answers) == 1)
    assert (await scrape(client)).value("hookgate_requests_in_flight") == 1
    answers[0].set_result(completion("done"))
    assert (await running).status == 200

    # A client that goes away while the provider is still thinking: its handler is cancelled.
    leaving = asyncio.ensure_future(client.post("/v1/chat/completions", json=body))
    await eventually(lambda: len(answers) == 2)
    leaving.cancel()
    await asyncio.gather(leaving, return_exceptions=True)
    await eventually(lambda: answers[1].cancelled())

    # Rejected before routing, by a plugin listed before metrics (never counted in flight) and by
    # one listed after it (counted, then brought back down by on_error).
    assert (await client.post("/v1/chat/completions", json=body, headers={"x-reject": "1"})).status == 429

    m = await scrape(client)
    assert m.value("hookgate_requests_in_flight") == 0
    assert m.value("hookgate_requests_total", **{STATUS: "499", MODEL: "held", PROVIDER: "held"}) == 1
    assert m.value("hookgate_requests_total", **{STATUS: "429", MODEL: "none", PROVIDER: "none"}) == 1
    assert m.value("hookgate_rate_limited_total", error_code="too_many") == 1


async def test_a_client_leaving_mid_stream_is_not_left_in_flight(gateway):
    client = await gateway('[gateway]\npipeline = ["metrics", "echo"]\n[plugins.echo]\nchunk_delay_seconds = 0.1\n')
    response = await client.post("/v1/chat/completions", json=ask(" ".join(["word"] * 30), model="echo", stream=True))
    await response.content.readline()
    assert (await scrape(client)).value("hookgate_requests_in_flight") == 1
    response.close()  # the client goes away mid-stream
    for _ in range(100):  # the server notices at its next write
        m = await scrape(client)
        if m.value("hookgate_requests_in_flight") == 0:
            break
        await asyncio.sleep(0.02)
    assert m.value("hookgate_requests_in_flight") == 0
    assert m.value("hookgate_requests_total", **{MODEL: "echo", STATUS: "200"}) == 0, "a cut-off stream is not a success"
    assert m.value("hookgate_requests_total", **{MODEL: "echo", STATUS: "499"}) == 1


class PricedAndTenanted:
    """Stands in for the auth and cost plugins: names the tenant and prices each answer."""

    def __init__(self, config) -> None:
        pass

    rules = (Produces(CLIENT_KEY, "authenticate"), Produces(COST_USD, "after_response"))

    @hookimpl
    async def authenticate(self, headers):
        return ClientKey(id=headers.get("x-team", "anonymous"))

    @hookimpl
    async def after_response(self, ctx, response):
        ctx[COST_USD] = Decimal("0.0125")


async def test_cost_and_the_optional_tenant_label(gateway):
    client = await gateway(
        '[gateway]\npipeline = ["priced", "metrics", "echo"]\n[plugins.metrics]\ntenant_label = true\n', local={"priced": PricedAndTenanted}
    )
    for team in ("red", "red", "blue"):
        assert (await client.post("/v1/chat/completions", json=ask(f"hello {team}", model="echo"), headers={"x-team": team})).status == 200
    m = await scrape(client)
    assert m.value("hookgate_requests_total", tenant="red") == 2
    assert m.value("hookgate_cost_usd_total", **{PROVIDER: "echo", MODEL: "echo"}, tenant="red") == pytest.approx(0.025)
    assert m.value("gen_ai_client_token_usage_count", tenant="blue", gen_ai_token_type="output") == 1


async def test_label_values_are_bounded(gateway):
    client = await gateway(
        '[gateway]\npipeline = ["metrics", "echo"]\n[plugins.metrics]\nmax_label_values = 2\n[models."echo/*"]\nprovider = "echo"\n'
    )
    for name in ("echo/a", "echo/b", "echo/c", "echo/d", "invented-1", "invented-2"):
        await client.post("/v1/chat/completions", json=ask("hi", model=name))
    m = await scrape(client)
    assert m.label_values("hookgate_requests_total", MODEL) == {"echo/a", "echo/b", "other", "none"}
    assert m.value("hookgate_requests_total", **{MODEL: "other"}) == 2
    assert m.value("hookgate_requests_total", **{MODEL: "none", STATUS: "404"}) == 2


async def test_two_apps_in_one_process_share_nothing(gateway):
    config = '[gateway]\npipeline = ["metrics", "echo"]'
    busy, idle = await gateway(config), await gateway(config)
    for _ in range(3):
        await busy.post("/v1/chat/completions", json=ask("hi", model="echo"))
    assert (await scrape(busy)).value("hookgate_requests_total") == 3
    assert (await scrape(idle)).value("hookgate_requests_total") == 0


class AdminByHeader:
    def __init__(self, config) -> None:
        pass

    @hookimpl
    async def authorize_admin(self, request):
        if request.headers.get("x-admin") != "yes":
            raise PermissionDenied("Admins only.")


async def test_require_admin_asks_the_authorize_admin_hooks(gateway):
    client = await gateway(
        '[gateway]\npipeline = ["admin", "metrics", "echo"]\n[plugins.metrics]\nrequire_admin = true\npath = "/internal/metrics"\n',
        local={"admin": AdminByHeader},
    )
    refused = await client.get("/internal/metrics")
    assert refused.status == 403 and (await refused.json())["error"]["message"] == "Admins only."
    assert (await scrape_path(client, "/internal/metrics", {"x-admin": "yes"})).startswith("# HELP")
    assert (await client.get("/metrics")).status == 404


async def scrape_path(client, path: str, headers: dict[str, str]) -> str:
    response = await client.get(path, headers=headers)
    assert response.status == 200
    return await response.text()


async def test_counters_carry_on_across_a_live_reload(aiohttp_client, make_config):
    config = make_config('[gateway]\npipeline = ["metrics", "echo"]')
    app = create_app(config, pipelines=lambda gateway: Pipelines(gateway, grace_seconds=1))
    client = await aiohttp_client(app)
    await client.post("/v1/chat/completions", json=ask("hi", model="echo"))
    await app[PIPELINES].reload(app, make_config('[gateway]\npipeline = ["metrics", "memory_cache", "echo"]'))
    await client.post("/v1/chat/completions", json=ask("hi", model="echo"))
    assert (await scrape(client)).value("hookgate_requests_total", **{MODEL: "echo"}) == 2, "same settings: the same counters"
    await app[PIPELINES].reload(app, make_config('[gateway]\npipeline = ["metrics", "echo"]\n[plugins.metrics]\ntenant_label = true\n'))
    assert (await scrape(client)).value("hookgate_requests_total") == 0, "new labels: new series, from zero"


async def test_concurrency_wait_is_measured(gateway, emulator):
    config = upstream_config(emulator, ["metrics", "concurrency"], concurrency={"limit": 1})
    client = await gateway(config)
    emulator.settings.latency = 0.1
    statuses = await asyncio.gather(*(client.post("/v1/chat/completions", json=ask(f"q{i}")) for i in range(2)))
    assert [r.status for r in statuses] == [200, 200]
    m = await scrape(client)
    assert m.value("hookgate_concurrency_wait_seconds_count", **{PROVIDER: "openai"}) == 2
    assert m.value("hookgate_concurrency_wait_seconds_sum", **{PROVIDER: "openai"}) >= 0.09, "the second waited for the first"


async def test_workers_add_up_in_one_scrape(tmp_path):
    """`hookgate serve --workers 2`: whichever worker answers /metrics reports both workers' requests."""
    metrics_dir = tmp_path / "prometheus"
    metrics_dir.mkdir()
    config = tmp_path / "plugins.toml"
    config.write_text(pipeline_config(["metrics", "echo"]))
    port = free_port()
    process = subprocess.Popen(
        [HOOKGATE, "serve", "--config", str(config), "--port", str(port), "--workers", "2"],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        listening = 0
        while listening < 2:
            line = await asyncio.wait_for(asyncio.to_thread(process.stderr.readline), 20)
            assert line, "the server stopped"
            listening += '"event":"listening"' in line
        requests = 40
        for i in range(requests):  # a new connection each time, so the kernel spreads them over both workers
            async with aiohttp.ClientSession() as session:
                async with session.post(f"{url}/v1/chat/completions", json=ask(f"n{i}", model="echo")) as response:
                    assert response.status == 200
        pids = {path.stem.split("_")[-1] for path in metrics_dir.glob("counter_*.db")}
        assert len(pids) == 2, "both workers served requests"
        for _ in range(4):
            async with aiohttp.ClientSession() as session:
                async with session.get(f"{url}/metrics") as response:
                    m = Scrape(await response.text())
            assert m.value("hookgate_requests_total", **{MODEL: "echo", STATUS: "200"}) == requests
            assert m.value("gen_ai_server_request_duration_seconds_count") == requests
            assert m.value("hookgate_requests_in_flight") == 0
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.to_thread(process.communicate, timeout=20)
    assert process.returncode == 0, stderr[-2000:]


class Collecting:
    """A plugin with metrics of its own, offered through register_metrics."""

    def __init__(self, config) -> None:
        self.hits = 0

    @hookimpl
    def register_metrics(self, register):
        register(self)

    @hookimpl
    async def after_response(self, ctx, response):
        self.hits += 1

    def collect(self):
        from prometheus_client.core import CounterMetricFamily

        family = CounterMetricFamily("collecting_answers", "Answers this plugin saw.")
        family.add_metric([], self.hits)
        yield family


async def test_a_plugin_offers_metrics_of_its_own_without_importing_metrics(gateway):
    client = await gateway('[gateway]\npipeline = ["collecting", "metrics", "echo"]', local={"collecting": Collecting})
    for _ in range(3):
        assert (await client.post("/v1/chat/completions", json=ask("hi", model="echo"))).status == 200
    m = await scrape(client)
    assert m.value("collecting_answers_total") == 3
    assert m.value("hookgate_requests_total") == 3, "the built-in families are still there"
