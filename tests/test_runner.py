"""The async hook runner: order comes from plugins.toml, `first` truly short-circuits, the
provider chain can be re-invoked and cancelled, and what cannot work is rejected at start-up."""
from __future__ import annotations

import asyncio

import pytest
from structlog.testing import capture_logs

from conftest import completion, provider_plugin
from hookgate import PluginConfig, RateLimited, hookimpl
from hookgate.gateway import Gateway
from hookgate.config import ConfigError
from hookgate.runner import PipelineError

GOOD = {"model": "echo", "messages": [{"role": "user", "content": "hi"}]}


def recorder(label: str, journal: list[str]):
    """A plugin class that writes each hook call into ``journal``."""

    class Recorder:
        def __init__(self, config: PluginConfig) -> None:
            pass

        @hookimpl
        async def before_request(self, ctx):
            journal.append(f"{label}.before_request")

        @hookimpl
        async def cache_lookup(self, ctx):
            journal.append(f"{label}.cache_lookup")

        @hookimpl
        async def call_provider(self, ctx, call_next):
            journal.append(f"{label}.enter")
            response = await call_next(ctx)
            journal.append(f"{label}.exit")
            return response

        @hookimpl
        async def after_response(self, ctx, response):
            journal.append(f"{label}.after_response")

    return Recorder


@pytest.mark.parametrize("order", [("a", "b", "c"), ("c", "a", "b")])
async def test_hooks_run_in_the_order_plugins_toml_lists(gateway, order):
    journal: list[str] = []
    plugins = {name: recorder(name, journal) for name in ("a", "b", "c")}
    pipeline = ", ".join(f'"{name}"' for name in order)
    client = await gateway(f'[gateway]\npipeline = [{pipeline}, "echo"]', local=plugins)
    assert (await client.post("/v1/chat/completions", json=GOOD)).status == 200
    first, second, third = order
    assert journal == [
        *(f"{p}.before_request" for p in order),
        *(f"{p}.cache_lookup" for p in order),
        f"{first}.enter", f"{second}.enter", f"{third}.enter",  # first listed is outermost
        f"{third}.exit", f"{second}.exit", f"{first}.exit",
        *(f"{p}.after_response" for p in order),
    ]


async def test_first_stops_at_the_first_answer_and_later_caches_never_run(gateway):
    ran: list[str] = []

    class Hit:
        def __init__(self, config):
            pass

        @hookimpl
        async def cache_lookup(self, ctx):
            ran.append("hit")
            return completion("from cache")

    class Later:
        def __init__(self, config):
            pass

        @hookimpl
        async def cache_lookup(self, ctx):
            ran.append("later")

    client = await gateway('[gateway]\npipeline = ["hit", "later", "echo"]', local={"hit": Hit, "later": Later})
    response = await client.post("/v1/chat/completions", json=GOOD)
    assert response.headers["x-hookgate-cache"] == "HIT"
    assert (await response.json())["choices"][0]["message"]["content"] == "from cache"
    # pluggy's own firstresult would have taken the first coroutine object as the answer even on a
    # miss; the runner awaits each one before deciding, and never starts the later ones.
    assert ran == ["hit"]


async def test_a_miss_falls_through_every_cache_to_the_provider(gateway):
    journal: list[str] = []
    client = await gateway('[gateway]\npipeline = ["a", "b", "echo"]', local={"a": recorder("a", journal), "b": recorder("b", journal)})
    response = await client.post("/v1/chat/completions", json=GOOD)
    assert response.headers["x-hookgate-cache"] == "MISS"
    assert ["a.cache_lookup", "b.cache_lookup"] == [e for e in journal if e.endswith("cache_lookup")]


async def test_a_middleware_can_call_the_rest_of_the_chain_again(gateway):
    attempts: list[int] = []

    async def flaky(ctx):
        attempts.append(1)
        if len(attempts) < 3:
            raise RateLimited("try again")
        return completion(f"attempt {len(attempts)}")

    class Retry:
        def __init__(self, config):
            pass

        @hookimpl
        async def call_provider(self, ctx, call_next):
            for _ in range(4):
                try:
                    return await call_next(ctx)
                except RateLimited:
                    continue
            raise RateLimited("gave up")

    client = await gateway('[gateway]\npipeline = ["retry", "flaky"]', local={"retry": Retry, "flaky": provider_plugin("flaky", flaky)})
    response = await client.post("/v1/chat/completions", json={**GOOD, "model": "flaky"})
    assert response.status == 200
    assert (await response.json())["choices"][0]["message"]["content"] == "attempt 3"
    assert len(attempts) == 3


async def test_a_middleware_can_cancel_the_call_and_the_provider_sees_it(gateway):
    seen: list[str] = []

    async def slow(ctx):
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise

    class Deadline:
        def __init__(self, config):
            pass

        @hookimpl
        async def call_provider(self, ctx, call_next):
            from hookgate import GatewayTimeout

            try:
                return await asyncio.wait_for(call_next(ctx), 0.05)
            except TimeoutError:
                raise GatewayTimeout("too slow") from None

    client = await gateway('[gateway]\npipeline = ["deadline", "slow"]', local={"deadline": Deadline, "slow": provider_plugin("slow", slow)})
    response = await client.post("/v1/chat/completions", json={**GOOD, "model": "slow"})
    assert response.status == 504
    assert seen == ["cancelled"]


async def test_before_request_can_reject_and_later_plugins_are_skipped(gateway):
    journal: list[str] = []

    class Gatekeeper:
        def __init__(self, config):
            pass

        @hookimpl
        async def before_request(self, ctx):
            raise RateLimited("slow down", headers={"Retry-After": "7"})

    client = await gateway('[gateway]\npipeline = ["gate", "after", "echo"]', local={"gate": Gatekeeper, "after": recorder("after", journal)})
    response = await client.post("/v1/chat/completions", json=GOOD)
    assert response.status == 429
    assert response.headers["Retry-After"] == "7"
    assert (await response.json())["error"]["code"] == "rate_limit_exceeded"
    assert journal == []


async def test_a_plugin_that_crashes_gives_a_500_with_the_request_id_and_logs_the_traceback(gateway):
    class Buggy:
        def __init__(self, config):
            pass

        @hookimpl
        async def before_request(self, ctx):
            raise KeyError("internal detail")

    client = await gateway('[gateway]\npipeline = ["buggy", "echo"]', local={"buggy": Buggy})
    with capture_logs() as logs:
        response = await client.post("/v1/chat/completions", json=GOOD, headers={"x-request-id": "req-abc"})
    assert response.status == 500
    error = (await response.json())["error"]
    assert "req-abc" in error["message"]
    assert "internal detail" not in error["message"] and "Traceback" not in error["message"]
    failure = next(entry for entry in logs if entry["event"] == "request_failed")
    assert failure["request_id"] == "req-abc"
    assert "buggy" in str(failure["exc_info"])
    assert (await client.post("/v1/chat/completions", json=GOOD)).status == 500, "still serving"


async def test_on_error_observers_cannot_break_the_error_response(gateway):
    class BadObserver:
        def __init__(self, config):
            pass

        @hookimpl
        async def on_error(self, ctx, error):
            raise RuntimeError("observer bug")

    client = await gateway('[gateway]\npipeline = ["observer", "echo"]', local={"observer": BadObserver})
    response = await client.post("/v1/chat/completions", json={**GOOD, "model": "nope"})
    assert response.status == 404


# --------------------------------------------------------------- rejected at start-up --------


def _plugin(**hooks):
    return type("P", (), {"__init__": lambda self, config: None, **hooks})


def test_a_sync_implementation_of_an_async_hook_is_rejected(make_config):
    def before_request(self, ctx):
        pass

    with pytest.raises(PipelineError, match="must be 'async def'"):
        Gateway(make_config('[gateway]\npipeline = ["p"]', local={"p": _plugin(before_request=hookimpl(before_request))}))


def test_an_async_implementation_of_a_startup_hook_is_rejected(make_config):
    async def register_providers(self, register):
        pass

    with pytest.raises(PipelineError, match="must be a plain 'def'"):
        Gateway(make_config('[gateway]\npipeline = ["p"]', local={"p": _plugin(register_providers=hookimpl(register_providers))}))


def test_pluggy_wrappers_and_ordering_flags_are_rejected(make_config):
    def wrapping(self, ctx):
        yield

    async def before_request(self, ctx):
        pass

    for hook, message in [(hookimpl(wrapper=True)(wrapping), "wrappers"), (hookimpl(tryfirst=True)(before_request), "tryfirst")]:
        with pytest.raises(PipelineError, match=message):
            Gateway(make_config('[gateway]\npipeline = ["p"]', local={"p": _plugin(before_request=hook)}))


def test_an_unknown_hook_name_is_rejected(make_config):
    async def before_requets(self, ctx):  # a typo must not be silently ignored
        pass

    with pytest.raises(PipelineError, match="before_requets"):
        Gateway(make_config('[gateway]\npipeline = ["p"]', local={"p": _plugin(before_requets=hookimpl(before_requets))}))


def test_two_providers_claiming_one_model_is_rejected(make_config):
    echo2 = provider_plugin("echo", completion)
    echo2.name = "echo2"

    with pytest.raises(ConfigError, match="served by both 'echo' and 'echo2'; choose one"):
        Gateway(make_config('[gateway]\npipeline = ["echo", "echo2"]', local={"echo2": echo2}))
    resolved = Gateway(make_config('[gateway]\npipeline = ["echo", "echo2"]\n[models.echo]\nprovider = "echo2"', local={"echo2": echo2}))
    assert resolved.routes.resolve("echo").provider.name == "echo2"


def test_a_plugin_can_refuse_a_pipeline_it_cannot_work_in(make_config):
    seen: list[tuple[list[str], str]] = []

    class First:
        def __init__(self, config):
            pass

        @hookimpl
        def check_pipeline(self, pipeline, name):
            seen.append((pipeline, name))
            if pipeline[0] != name:
                raise ValueError(f"list {name} first")

    Gateway(make_config('[gateway]\npipeline = ["gatekeeper", "echo"]', local={"gatekeeper": First}))
    assert seen == [(["gatekeeper", "echo"], "gatekeeper")]
    with pytest.raises(ConfigError) as caught:
        Gateway(make_config('[gateway]\npipeline = ["echo", "gatekeeper"]', local={"gatekeeper": First}))
    assert (caught.value.section, caught.value.key) == ("gateway", "pipeline")
    assert caught.value.reason == "plugin 'gatekeeper': list gatekeeper first"
