"""The plugin contract a third party relies on: observers that see the same thing wherever they are
listed, ordering rules declared as data and enforced at start-up, typed facts, one ending per
request, one public surface, one Redis service, and configuration that reads only what it should."""
from __future__ import annotations

import asyncio
import importlib
import itertools
import signal
import time
from decimal import Decimal
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer
from structlog.testing import capture_logs

from conftest import CHAT, ROOT, eventually, upstream_config
from public_surface import import_problems, public_names
from hookgate import ClientKey, Completion, CompletionStream, StateKey, hookimpl
from hookgate.config import ConfigError
from hookgate.facts import COST_USD, USAGE
from hookgate.gateway import Gateway
from hookgate.registry import installed_plugins
from hookgate.rules import After, Before, Needs, Produces, Reads
from hookgate.server import create_app, current_gateway
from hookgate.testing.openai_emulator import Fault
from test_metrics import scrape

PRICE = {"gpt-4o-mini": {"input": "0.15", "output": "0.60"}}


# ----------------------------------------------------------------- observers and their place ---


class Journal:
    """An observer of every lifecycle event, recording what it saw."""

    seen: list[tuple[str, object]] = []

    def __init__(self, config) -> None:
        Journal.seen = []

    @hookimpl
    def request_started(self, ctx):
        self.seen.append(("started", ctx.request_id))

    @hookimpl
    def phase_started(self, phase):
        self.seen.append(("phase_started", phase))

    @hookimpl
    def phase_finished(self, phase, outcome):
        self.seen.append(("phase_finished", phase))

    @hookimpl
    def attempt_started(self, number):
        self.seen.append(("attempt_started", number))

    @hookimpl
    def attempt_finished(self, attempt):
        self.seen.append(("attempt_finished", attempt.outcome))

    @hookimpl
    def request_finished(self, ctx, outcome):
        self.seen.append(("finished", (outcome.status, outcome.cost_usd, ctx.get(USAGE, {}).get("total_tokens"))))


OBSERVERS = ("metrics", "request_log", "journal")
WORKERS = ("token_counter", "cost", "memory_cache", "retry", "timeout")


@pytest.mark.parametrize(
    "order",
    [
        [*OBSERVERS, *WORKERS],  # observers first: the documented order that used to lose the cost metric
        [*WORKERS, *OBSERVERS],
        ["token_counter", "metrics", "cost", "journal", "memory_cache", "retry", "request_log", "timeout"],
    ],
    ids=["observers-first", "observers-last", "interleaved"],
)
async def test_observers_give_the_same_numbers_wherever_they_are_listed(gateway, emulator, order):
    client = await gateway(upstream_config(emulator, order, cost={"prices": PRICE}, retry={"backoff_base_seconds": 0.01}), local={"journal": Journal})
    emulator.script(Fault(status=503), None)
    with capture_logs() as captured:
        first = await client.post("/v1/chat/completions", json=CHAT)
        again = await client.post("/v1/chat/completions", json=CHAT)
        missing = await client.post("/v1/chat/completions", json={**CHAT, "model": "nope"})
    assert (first.status, again.status, missing.status) == (200, 200, 404)
    cost = Decimal(first.headers["x-hookgate-cost-usd"])
    metrics = await scrape(client)
    assert metrics.value("hookgate_cost_usd_total", gen_ai_request_model="gpt-4o-mini") == pytest.approx(float(cost)), "whatever the order"
    assert metrics.value("hookgate_requests_in_flight") == 0
    assert metrics.value("hookgate_upstream_attempts_total", outcome="http_503") == 1
    assert metrics.value("hookgate_upstream_attempts_total", outcome="ok") == 1
    assert metrics.value("hookgate_requests_total") == 3
    finished = [value for event, value in Journal.seen if event == "finished"]
    assert finished[0][0] == 200 and finished[0][1] == cost and finished[0][2] > 0
    assert finished[1][:2] == (200, Decimal(0)), "a HIT costs nothing"
    assert finished[2][0] == 404
    assert [value for event, value in Journal.seen if event.startswith("attempt")] == [1, "http_503", 2, "ok"]
    logged = [line for line in captured if line.get("event") == "request"]
    assert [line["status"] for line in logged] == [200, 200, 404]
    assert logged[0]["cost_usd"] == str(cost) and logged[0]["attempts"] == ["http_503", "ok"]


def test_observer_events_are_documented_as_plain_functions():
    from hookgate import hookspecs

    for name in hookspecs.EVENT_HOOKS:
        assert not asyncio.iscoroutinefunction(getattr(hookspecs, name)), name


def test_an_async_event_observer_is_refused_at_start_up(make_config):
    class Slow:
        def __init__(self, config):
            pass

        @hookimpl
        async def request_finished(self, ctx, outcome):
            pass

    with pytest.raises(Exception, match="request_finished: must be a plain 'def'"):
        Gateway(make_config('[gateway]\npipeline = ["slow", "echo"]', local={"slow": Slow}))


# --------------------------------------------------------------------------- one ending each ---


class Endings:
    """Counts the phase hooks and events that end a request."""

    counts: dict[str, int] = {}

    def __init__(self, config) -> None:
        Endings.counts = {"after_response": 0, "on_error": 0, "request_finished": 0}

    @hookimpl
    async def after_response(self, ctx, response):
        self.counts["after_response"] += 1

    @hookimpl
    async def on_error(self, ctx, error):
        self.counts["on_error"] += 1
        self.counts["error_status"] = error.status

    @hookimpl
    def request_finished(self, ctx, outcome):
        self.counts["request_finished"] += 1
        self.counts["status"] = outcome.status


def streaming_provider(*, stop_after: int | None = None):
    from conftest import provider_plugin

    async def complete(ctx):
        async def chunks():
            for index in range(3):
                if stop_after is not None and index == stop_after:
                    await asyncio.Event().wait()  # never sends the rest
                yield {
                    "id": "c", "object": "chat.completion.chunk", "created": 0, "model": "s",
                    "choices": [{"index": 0, "delta": {"content": f"part {index} "}, "finish_reason": "stop" if index == 2 else None}],
                }  # fmt: skip

        return CompletionStream(chunks())

    return provider_plugin("s", complete)


@pytest.mark.parametrize(
    "path",
    ["json", "stream relay", "cache replay", "drain", "client disconnect", "broken stream"],
)
async def test_each_request_ends_exactly_once(make_config, path):
    toml = '[gateway]\npipeline = ["endings", "memory_cache", "s"]'
    provider = streaming_provider(stop_after=1 if path == "client disconnect" else None)
    if path == "broken stream":
        from conftest import provider_plugin

        async def complete(ctx):
            async def chunks():
                yield {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "s", "choices": [{"index": 0, "delta": {"content": "a"}}]}
                raise RuntimeError("the upstream broke")

            return CompletionStream(chunks())

        provider = provider_plugin("s", complete)
    app = create_app(make_config(toml, local={"endings": Endings, "s": provider}))
    async with TestClient(TestServer(app, handler_cancellation=True)) as client:
        body = {"model": "s", "messages": [{"role": "user", "content": "hi"}], "stream": path != "drain" and path != "json"}
        if path == "json":
            body = {**body, "stream": False}
            app_gateway = current_gateway(app)
            app_gateway.providers["s"].complete = _json_answer  # type: ignore[method-assign]
        if path == "cache replay":
            assert (await client.post("/v1/chat/completions", json={**body, "stream": False})).status == 200
            await eventually(lambda: Endings.counts["request_finished"] == 1)
            Endings.counts.update(after_response=0, on_error=0, request_finished=0)
        if path == "client disconnect":
            response = await client.post("/v1/chat/completions", json=body)
            assert response.status == 200
            await response.content.readany()
            response.close()
            await eventually(lambda: Endings.counts["request_finished"] == 1)
            assert Endings.counts == {"after_response": 0, "on_error": 1, "error_status": 499, "request_finished": 1, "status": 499}
            return
        response = await client.post("/v1/chat/completions", json=body)
        await response.read()
        await eventually(lambda: Endings.counts["request_finished"] == 1)
    counts = Endings.counts
    if path == "broken stream":
        assert (counts["after_response"], counts["on_error"], counts["request_finished"]) == (0, 1, 1)
    else:
        assert (counts["after_response"], counts["on_error"], counts["request_finished"]) == (1, 0, 1), path
        assert counts["status"] == 200


async def _json_answer(ctx):
    return Completion({
        "id": "j", "object": "chat.completion", "created": 0, "model": "s",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "whole"}, "finish_reason": "stop"}],
    })  # fmt: skip


# ---------------------------------------------------------------------------------- rules ---


def builtin_order_rules() -> list[tuple[str, object]]:
    """Every ordering rule a built-in plugin declares, as (plugin, rule)."""
    found = []
    for name, plugin in sorted(installed_plugins().items()):
        if plugin.distribution != "hookgate":
            continue
        for rule in getattr(plugin.load(), "rules", ()):
            # A fact read in a hook where some built-in also produces it binds the order; one
            # produced earlier (a key in authenticate, read in before_request) cannot be misordered.
            if isinstance(rule, (After, Before)) or (isinstance(rule, (Reads, Needs)) and _producer_of(rule.fact, rule.hook)):
                found.append((name, rule))
    return found


def _installed_answering_to(target: str) -> str:
    """A built-in plugin named ``target``, else the first that declares ``target`` as a role
    (``Before("cache")`` is broken by listing any cache first)."""
    plugins = installed_plugins()
    if target in plugins:
        return target
    return next(name for name, plugin in sorted(plugins.items()) if plugin.distribution == "hookgate" and target in getattr(plugin.load(), "roles", ()))


def _producer_of(fact, hook) -> str | None:
    for name, plugin in sorted(installed_plugins().items()):
        for rule in getattr(plugin.load(), "rules", ()):
            if isinstance(rule, Produces) and rule.fact is fact and rule.hook == hook:
                return name
    return None


@pytest.mark.parametrize("plugin, rule", builtin_order_rules(), ids=lambda value: value if isinstance(value, str) else value.describe())
def test_breaking_a_declared_rule_fails_start_up_naming_both_plugins(make_config, emulator, plugin, rule):
    if isinstance(rule, (After, Before)):
        other = _installed_answering_to(rule.plugin)
        pipeline = [plugin, other] if isinstance(rule, After) else [other, plugin]
    else:
        other = _producer_of(rule.fact, rule.hook)
        pipeline = [plugin, other]
    extra = {"cost": {}} if "budget" in pipeline and "cost" not in pipeline else {}
    if "budget" in pipeline and "cost" not in pipeline:
        pipeline.append("cost")
    config = make_config(upstream_config(emulator, pipeline, **extra))
    with pytest.raises(ConfigError) as caught:
        Gateway(config)
    assert (caught.value.section, caught.value.key) == ("gateway", "pipeline")
    assert plugin in caught.value.reason and other in caught.value.reason, caught.value.reason
    Gateway(make_config(upstream_config(emulator, list(reversed(pipeline)), **extra)))  # the other way round starts


def test_a_fact_no_enabled_plugin_produces_is_refused_with_a_hint(make_config, emulator):
    with pytest.raises(ConfigError) as caught:
        Gateway(make_config(upstream_config(emulator, ["token_counter", "budget"])))
    assert "budget needs worst_case_cost_usd in before_request, which no enabled plugin produces; enable cost" in caught.value.reason


def test_a_third_party_declares_rules_and_roles_the_same_way(make_config):
    NOTE: StateKey[str] = StateKey("example.note", str)

    class Writer:
        rules = (Produces(NOTE, "before_request"),)

        def __init__(self, config):
            pass

        @hookimpl
        async def before_request(self, ctx):
            ctx[NOTE] = "written"

    class Reader:
        roles = ("auditor",)
        rules = (Needs(NOTE, "before_request", why="it audits the note"),)

        def __init__(self, config):
            pass

        @hookimpl
        async def before_request(self, ctx):
            assert ctx[NOTE] == "written"

    class Outsider:
        rules = (After("auditor", why="audits first"),)

        def __init__(self, config):
            pass

    local = {"writer": Writer, "reader": Reader, "outsider": Outsider}
    Gateway(make_config('[gateway]\npipeline = ["writer", "reader", "outsider", "echo"]', local=local))
    with pytest.raises(ConfigError, match="reader reads example.note in before_request, which writer produces there: list writer before reader"):
        Gateway(make_config('[gateway]\npipeline = ["reader", "writer", "echo"]', local=local))
    with pytest.raises(ConfigError, match=r"outsider must run after reader \(audits first\)"):
        Gateway(make_config('[gateway]\npipeline = ["writer", "outsider", "reader", "echo"]', local=local))


async def test_hookgate_plugins_and_the_pipeline_endpoint_show_the_rules(gateway):
    client = await gateway('[gateway]\npipeline = ["retry", "circuit_breaker", "echo"]')
    report = await (await client.get("/-/plugins")).json()
    breaker = next(p for p in report["plugins"] if p["name"] == "circuit_breaker")
    assert "runs after retry in call_provider (each attempt is judged, not the whole request)" in breaker["rules"]


# ---------------------------------------------------------------------------- typed facts ---


def test_the_context_keeps_only_what_the_core_owns():
    from hookgate import RequestContext

    fields = set(RequestContext.__dataclass_fields__)
    assert not fields & {"client_key", "usage", "cost_usd", "log_fields", "state", "deadline"}


async def test_facts_are_typed_keys_and_a_missing_one_says_which(gateway):
    seen = {}

    class Peek:
        def __init__(self, config):
            pass

        @hookimpl
        async def after_response(self, ctx, response):
            seen["usage"] = ctx[USAGE]
            seen["cost"] = ctx.get(COST_USD, "absent")
            try:
                ctx[COST_USD]
            except KeyError as error:
                seen["error"] = str(error)

    client = await gateway('[gateway]\npipeline = ["token_counter", "peek", "echo"]', local={"peek": Peek})
    assert (await client.post("/v1/chat/completions", json={"model": "echo", "messages": [{"role": "user", "content": "hi"}]})).status == 200
    assert seen["usage"]["total_tokens"] > 0 and seen["cost"] == "absent" and "cost_usd is not set" in seen["error"]


# ------------------------------------------------------------------------ public surface ---


PLUGIN_SOURCES = sorted(
    [
        *(ROOT / "plugins").glob("*.py"),
        *(ROOT / "providers").glob("*.py"),
        *(ROOT / "examples").rglob("hookgate_*/*.py"),
        *(ROOT / "examples" / "cookbook").glob("*.py"),
    ]
)


@pytest.mark.parametrize("path", PLUGIN_SOURCES, ids=lambda path: str(path.relative_to(ROOT)))
def test_plugins_import_only_the_public_surface(path: Path):
    problems = import_problems(path)
    assert not problems, f"{path.relative_to(ROOT)}: " + "; ".join(problems)


def test_every_public_module_declares_its_surface():
    for module_name, names in public_names().items():
        module = importlib.import_module(module_name)
        assert module.__doc__, f"{module_name} has no docstring"
        if module_name != "hookgate.testing":
            assert names, f"{module_name} has no __all__"
        for name in names:
            assert hasattr(module, name), f"{module_name}.__all__ names {name}, which it does not define"


# ------------------------------------------------------------------------ one Redis service ---


async def test_plugins_naming_one_redis_share_one_client(make_config, redis_url, redis_prefix):
    toml = f"""
        [gateway]
        pipeline = ["api_keys", "token_counter", "rate_limit", "cost", "budget", "usage", "redis_cache", "echo"]
        [plugins.api_keys]
        redis = true
        redis_url = "{redis_url}"
        key_prefix = "{redis_prefix}:keys"
        [plugins.rate_limit]
        redis_url = "{redis_url}"
        key_prefix = "{redis_prefix}:rl"
        [plugins.budget]
        redis_url = "{redis_url}"
        key_prefix = "{redis_prefix}:b"
        [plugins.usage]
        redis_url = "{redis_url}"
        key_prefix = "{redis_prefix}:u"
        [plugins.redis_cache]
        redis_url = "{redis_url}"
        key_prefix = "{redis_prefix}"
    """
    from hookgate.redis import redis_service

    app = create_app(make_config(toml))
    async with TestClient(TestServer(app)):
        servers = redis_service(app).servers
        assert len(servers) == 1, "one client, one pool, one guard for every plugin"
        plugins = current_gateway(app).runner.plugins
        assert {id(plugins[name].redis) for name in ("api_keys", "rate_limit", "budget", "usage", "redis_cache")} == {id(servers[0])}


async def test_readyz_answers_within_a_second_and_a_half_while_redis_hangs(make_config, redis_server, redis_prefix):
    toml = f"""
        [gateway]
        pipeline = ["token_counter", "rate_limit", "cost", "budget", "usage", "redis_cache", "echo"]
        [plugins.rate_limit]
        redis_url = "{redis_server.url}"
        requests_per_minute = 100
        [plugins.budget]
        redis_url = "{redis_server.url}"
        [plugins.usage]
        redis_url = "{redis_server.url}"
        [plugins.redis_cache]
        redis_url = "{redis_server.url}"
        key_prefix = "{redis_prefix}"
    """
    app = create_app(make_config(toml))
    async with TestClient(TestServer(app)) as client:
        assert (await client.get("/readyz")).status == 200
        redis_server.process.send_signal(signal.SIGSTOP)  # accepts connections, never answers
        try:
            started = time.monotonic()
            ready = await client.get("/readyz")
            took = time.monotonic() - started
            assert took < 1.5, f"/readyz took {took:.2f} s"
            body = await ready.json()
            assert body["status"] in ("degraded", "unavailable")
            # After the guard has seen Redis fail, every Redis-backed plugin takes its path fast.
            for _ in range(3):
                await client.post("/v1/chat/completions", json={"model": "echo", "messages": [{"role": "user", "content": "x"}]})
            started = time.monotonic()
            response = await client.post("/v1/chat/completions", json={"model": "echo", "messages": [{"role": "user", "content": "y"}]})
            took = time.monotonic() - started
            assert response.status in (200, 503) and took < 0.3, f"{response.status} after {took:.2f} s"
        finally:
            redis_server.process.send_signal(signal.SIGCONT)


# --------------------------------------------------------------------------- configuration ---


@pytest.mark.parametrize("variable", ["BASE_URL", "API_KEY", "MODELS", "ENABLED", "REDIS_URL_X", "PORT"])
def test_no_unprefixed_variable_changes_any_setting(make_config, monkeypatch, variable):
    toml = """
        [gateway]
        pipeline = ["openai_compatible"]
        [plugins.openai_compatible.servers.local]
        base_url = "http://127.0.0.1:8000/v1"
        models = ["llama"]
    """
    before = make_config(toml)
    monkeypatch.setenv(variable, "http://evil.example/v1" if variable != "ENABLED" else "false")
    after = make_config(toml)
    assert after.plugins[0].config.model_dump() == before.plugins[0].config.model_dump()
    assert after.gateway.model_dump() == before.gateway.model_dump()


def test_a_misspelt_hookgate_variable_is_an_error_naming_it(make_config, monkeypatch):
    monkeypatch.setenv("HOOKGATE_MEMORY_CACHE__TTL_SECOND", "5")
    with pytest.raises(ConfigError) as caught:
        make_config('[gateway]\npipeline = ["memory_cache", "echo"]')
    assert caught.value.variable == "HOOKGATE_MEMORY_CACHE__TTL_SECOND" and "ttl_seconds" in caught.value.reason
    monkeypatch.delenv("HOOKGATE_MEMORY_CACHE__TTL_SECOND")
    monkeypatch.setenv("HOOKGATE_MEMROY_CACHE__TTL_SECONDS", "5")
    with pytest.raises(ConfigError, match="HOOKGATE_MEMROY_CACHE__TTL_SECONDS: names no installed plugin"):
        make_config('[gateway]\npipeline = ["memory_cache", "echo"]')
    monkeypatch.delenv("HOOKGATE_MEMROY_CACHE__TTL_SECONDS")
    monkeypatch.setenv("HOOKGATE_PROT", "9000")
    with pytest.raises(ConfigError, match="HOOKGATE_PROT: names no \\[gateway\\] setting"):
        make_config('[gateway]\npipeline = ["echo"]')


def test_nested_settings_come_from_prefixed_variables_only(make_config, monkeypatch):
    monkeypatch.setenv("HOOKGATE_OPENAI_COMPATIBLE__SERVERS__LOCAL__BASE_URL", "http://127.0.0.1:9999/v1")
    config = make_config(
        '[gateway]\npipeline = ["openai_compatible"]\n[plugins.openai_compatible.servers.local]\nbase_url = "http://127.0.0.1:8000/v1"\nmodels = ["m"]'
    )
    assert config.plugins[0].config.servers["local"].base_url == "http://127.0.0.1:9999/v1"


def test_the_gateway_section_accepts_both_documented_variable_forms(make_config, monkeypatch):
    monkeypatch.setenv("HOOKGATE_GATEWAY__PIPELINE", '["memory_cache", "echo"]')
    assert make_config('[gateway]\npipeline = ["echo"]').pipeline == ("memory_cache", "echo")
    monkeypatch.setenv("HOOKGATE_PIPELINE", "not json")
    with pytest.raises(ConfigError, match="environment variable HOOKGATE_PIPELINE: must be JSON"):
        make_config('[gateway]\npipeline = ["echo"]')


def test_a_table_for_a_plugin_not_in_the_pipeline_is_a_warning(make_config):
    config = make_config('[gateway]\npipeline = ["echo"]\n[plugins.memory_cache]\nttl_seconds = 5')
    assert config.warnings == [f"{config.source}: [plugins.memory_cache] configures a plugin that is in neither [gateway] pipeline nor surfaces (it has no effect)"]


def test_unused_names_are_not_all_listed_for_nothing():
    # The permutation test above needs every observer to be a real plugin.
    assert set(OBSERVERS) - {"journal"} <= set(installed_plugins())
    assert list(itertools.islice(builtin_order_rules(), 1)), "built-ins declare rules"
