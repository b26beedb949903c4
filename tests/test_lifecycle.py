"""Plugin lifecycle and routes: startup in order before serving, shutdown in reverse for exactly
the plugins that started, and plugin routes answering errors in OpenAI's shape."""
from __future__ import annotations

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from hookgate import PermissionDenied, hookimpl
from hookgate.server import create_app


def lifecycle_plugin(label: str, journal: list[str], *, fail_startup: bool = False):
    class Lifecycle:
        def __init__(self, config):
            pass

        @hookimpl
        async def startup(self, app):
            journal.append(f"{label}.startup")
            if fail_startup:
                raise RuntimeError("cannot reach my database")

        @hookimpl
        async def shutdown(self, app):
            journal.append(f"{label}.shutdown")

    return Lifecycle


async def test_startup_in_order_shutdown_in_reverse(make_config):
    journal: list[str] = []
    plugins = {name: lifecycle_plugin(name, journal) for name in ("a", "b", "c")}
    app = create_app(make_config('[gateway]\npipeline = ["b", "a", "c", "echo"]', local=plugins))
    async with TestClient(TestServer(app)) as client:
        assert journal == ["b.startup", "a.startup", "c.startup"]
        assert (await client.get("/healthz")).status == 200
    assert journal[3:] == ["c.shutdown", "a.shutdown", "b.shutdown"]


async def test_a_failed_startup_shuts_down_only_what_started(make_config):
    journal: list[str] = []
    plugins = {
        "a": lifecycle_plugin("a", journal),
        "b": lifecycle_plugin("b", journal, fail_startup=True),
        "c": lifecycle_plugin("c", journal),
    }
    app = create_app(make_config('[gateway]\npipeline = ["a", "b", "c", "echo"]', local=plugins))
    with pytest.raises(RuntimeError, match="cannot reach my database"):
        async with TestClient(TestServer(app)):
            pass
    assert journal == ["a.startup", "b.startup", "a.shutdown"]


async def test_a_failing_shutdown_does_not_stop_the_others(make_config):
    journal: list[str] = []

    class Broken:
        def __init__(self, config):
            pass

        @hookimpl
        async def shutdown(self, app):
            raise RuntimeError("boom")

    app = create_app(make_config('[gateway]\npipeline = ["a", "broken", "echo"]', local={"a": lifecycle_plugin("a", journal), "broken": Broken}))
    async with TestClient(TestServer(app)):
        pass
    assert journal == ["a.startup", "a.shutdown"]


async def test_plugins_add_routes_and_their_errors_are_openai_shaped(gateway):
    class Admin:
        def __init__(self, config):
            pass

        @hookimpl
        def register_routes(self, router):
            router.add_get("/admin/status", self.status)
            router.add_get("/admin/secret", self.secret)

        async def status(self, request):
            return web.json_response({"ok": True})

        async def secret(self, request):
            raise PermissionDenied("Admins only.")

    client = await gateway('[gateway]\npipeline = ["admin", "echo"]', local={"admin": Admin})
    assert await (await client.get("/admin/status")).json() == {"ok": True}
    denied = await client.get("/admin/secret")
    assert denied.status == 403
    assert (await denied.json())["error"]["type"] == "permission_error"
    assert denied.headers["x-request-id"]


async def test_two_apps_in_one_process_keep_separate_state(make_config):
    """State lives on the app: two gateways in one process do not share a cache."""
    config = make_config('[gateway]\npipeline = ["memory_cache", "echo"]')
    body = {"model": "echo", "messages": [{"role": "user", "content": "x"}]}
    async with TestClient(TestServer(create_app(config))) as one, TestClient(TestServer(create_app(config))) as two:
        await one.post("/v1/chat/completions", json=body)
        assert (await one.post("/v1/chat/completions", json=body)).headers["x-hookgate-cache"] == "HIT"
        assert (await two.post("/v1/chat/completions", json=body)).headers["x-hookgate-cache"] == "MISS"


async def test_readyz_reports_each_plugin_and_fails_while_one_is_unavailable(gateway, monkeypatch):
    from hookgate import Readiness

    monkeypatch.delenv("HG_TEST_NO_KEY", raising=False)
    state = {"status": "ok"}

    class Dependency:
        def __init__(self, config):
            pass

        @hookimpl
        async def check_ready(self, app):
            return Readiness(state["status"], f"database is {state['status']}")

    class Crashing:
        def __init__(self, config):
            pass

        @hookimpl
        async def check_ready(self):
            if state["status"] == "crash":
                raise ConnectionError("boom")

    toml = '[gateway]\npipeline = ["dep", "crashing", "echo", "openai"]\n[plugins.openai]\napi_key_env = "HG_TEST_NO_KEY"'
    client = await gateway(toml, local={"dep": Dependency, "crashing": Crashing})
    response = await client.get("/readyz")
    body = await response.json()
    assert response.status == 200 and body["status"] == "degraded"
    assert body["checks"]["dep"] == {"status": "ok", "detail": "database is ok"}
    assert body["checks"]["openai"]["status"] == "degraded" and "HG_TEST_NO_KEY" in body["checks"]["openai"]["detail"]
    state["status"] = "unavailable"
    response = await client.get("/readyz")
    assert response.status == 503 and (await response.json())["status"] == "unavailable"
    state["status"] = "crash"
    body = await (await client.get("/readyz")).json()
    assert body["checks"]["crashing"]["status"] == "unavailable"
    assert "boom" not in str(body)


async def test_readyz_is_ready_when_nothing_reports(gateway):
    client = await gateway('[gateway]\npipeline = ["echo"]')
    response = await client.get("/readyz")
    assert response.status == 200 and await response.json() == {"status": "ready", "checks": {}}


async def test_hook_observers_see_each_plugins_own_time(gateway):
    import asyncio

    seen: list[tuple[str, str, float, str]] = []

    class Observer:
        def __init__(self, config):
            pass

        @hookimpl
        def register_hook_observers(self, register):
            register(lambda hook, plugin, seconds, outcome: seen.append((hook, plugin, seconds, outcome)))

    class SlowMiddleware:
        def __init__(self, config):
            pass

        @hookimpl
        async def call_provider(self, ctx, call_next):
            await asyncio.sleep(0.05)
            return await call_next(ctx)

    class SlowProvider:
        name = "slowp"

        def __init__(self, config):
            pass

        @hookimpl
        def register_providers(self, register):
            register(self)

        def models(self):
            return ["slowp"]

        async def complete(self, ctx):
            from conftest import completion

            await asyncio.sleep(0.2)
            return completion("late")

    client = await gateway('[gateway]\npipeline = ["observer", "slow", "memory_cache", "slowp"]', local={"observer": Observer, "slow": SlowMiddleware, "slowp": SlowProvider})
    body = {"model": "slowp", "messages": [{"role": "user", "content": "x"}]}
    assert (await client.post("/v1/chat/completions", json=body)).status == 200
    assert (await client.post("/v1/chat/completions", json=body)).status == 200
    by_key = {(hook, plugin, outcome): seconds for hook, plugin, seconds, outcome in seen}
    middleware = by_key[("call_provider", "slow", "ok")]
    assert 0.04 < middleware < 0.15, "its own sleep, not the provider's 0.2 s"
    assert ("cache_lookup", "memory_cache", "hit") in by_key
    assert ("after_response", "memory_cache", "ok") in by_key


async def test_plugins_endpoint_shows_the_pipeline_with_secrets_masked(gateway):
    client = await gateway('[gateway]\npipeline = ["memory_cache", "echo", "openai"]\n[plugins.openai]\napi_key = "sk-shown-nowhere-42"')
    response = await client.get("/-/plugins")
    report = await response.json()
    assert response.status == 200
    assert report["pipeline"] == ["memory_cache", "echo", "openai"]
    assert report["hooks"]["cache_lookup"] == ["memory_cache"]
    openai = next(p for p in report["plugins"] if p["name"] == "openai")
    assert openai["config"]["api_key"] == "**********"
    assert "sk-shown-nowhere-42" not in await response.text()


async def test_admin_endpoints_ask_authorize_admin(gateway):
    from hookgate import AuthenticationFailed

    class AdminKey:
        def __init__(self, config):
            pass

        @hookimpl
        async def authorize_admin(self, request):
            if request.headers.get("Authorization") != "Bearer admin-secret":
                raise AuthenticationFailed("Admin key required.")

    client = await gateway('[gateway]\npipeline = ["admin", "echo"]', local={"admin": AdminKey})
    denied = await client.get("/-/plugins")
    assert denied.status == 401 and (await denied.json())["error"]["type"] == "authentication_error"
    assert (await client.get("/-/plugins", headers={"Authorization": "Bearer admin-secret"})).status == 200
