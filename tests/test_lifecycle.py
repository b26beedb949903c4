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
        def register_routes(self, app):
            app.router.add_get("/admin/status", self.status)
            app.router.add_get("/admin/secret", self.secret)

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

    monkeypatch.delenv("HOOKGATE_TEST_NO_KEY", raising=False)
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

    toml = '[gateway]\npipeline = ["dep", "crashing", "echo", "openai"]\n[plugins.openai]\napi_key_env = "HOOKGATE_TEST_NO_KEY"'
    client = await gateway(toml, local={"dep": Dependency, "crashing": Crashing})
    response = await client.get("/readyz")
    body = await response.json()
    assert response.status == 200 and body["status"] == "degraded"
    assert body["checks"]["dep"] == {"status": "ok", "detail": "database is ok"}
    assert body["checks"]["openai"]["status"] == "degraded" and "HOOKGATE_TEST_NO_KEY" in body["checks"]["openai"]["detail"]
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
