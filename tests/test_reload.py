"""Live reload: a new pipeline takes over new requests, running ones finish on the old one, and
an invalid file changes nothing."""
from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from hookgate import hookimpl
from hookgate.config import load_config
from hookgate.pipelines import Pipelines, ReloadFailed
from hookgate.registry import InstalledPlugin, installed_plugins
from hookgate.server import PIPELINES, create_app

BODY = {"model": "echo", "messages": [{"role": "user", "content": "hi there"}]}


class Stamp:
    """Stamps answers and serves /stamp, to see which pipeline answered."""

    stops: list[str] = []

    def __init__(self, config):
        pass

    @hookimpl
    async def before_request(self, ctx):
        ctx.response_headers["x-stamp"] = "on"

    @hookimpl
    def register_routes(self, router):
        router.add_get("/stamp", self.stamp)

    async def stamp(self, request):
        return web.json_response({"stamp": True})

    @hookimpl
    async def shutdown(self):
        Stamp.stops.append("stamp")


def loader(path: Path):
    available = {**installed_plugins(), "stamp": InstalledPlugin.local("stamp", Stamp)}
    return lambda: load_config(path, available=available)


@pytest.fixture
async def reloadable(tmp_path):
    path = tmp_path / "plugins.toml"
    path.write_text('[gateway]\npipeline = ["stamp", "echo"]\n[plugins.echo]\nchunk_delay_seconds = 0.05\n')
    config = loader(path)()
    app = create_app(config, pipelines=lambda gateway: Pipelines(gateway, load=loader(path), grace_seconds=5))
    async with TestClient(TestServer(app)) as client:
        yield client, app, path


async def test_toggling_a_plugin_takes_effect_without_a_restart(reloadable):
    client, app, path = reloadable
    Stamp.stops = []
    assert (await client.post("/v1/chat/completions", json=BODY)).headers["x-stamp"] == "on"
    assert (await client.get("/stamp")).status == 200
    path.write_text(path.read_text() + "[plugins.stamp]\nenabled = false\n")
    await app[PIPELINES].reload(app)
    response = await client.post("/v1/chat/completions", json=BODY)
    assert response.status == 200 and "x-stamp" not in response.headers
    assert (await client.get("/stamp")).status == 404, "its route went with it"
    await asyncio.sleep(0.1)
    assert Stamp.stops == ["stamp"], "the replaced pipeline was shut down"


async def test_running_streams_finish_on_the_old_pipeline(reloadable):
    client, app, path = reloadable
    long_stream = {**BODY, "stream": True, "messages": [{"role": "user", "content": " ".join(["w"] * 20)}]}
    streams = [await client.post("/v1/chat/completions", json=long_stream) for _ in range(3)]
    path.write_text(path.read_text() + "[plugins.stamp]\nenabled = false\n")
    await app[PIPELINES].reload(app)
    for response in streams:
        body = await response.text()
        assert response.headers["x-stamp"] == "on" and body.endswith("data: [DONE]\n\n")
    assert "x-stamp" not in (await client.post("/v1/chat/completions", json=BODY)).headers


@pytest.mark.parametrize("broken", ["[gateway\n", '[gateway]\npipeline = ["stamp", "nope"]\n', '[gateway]\npipeline = ["echo"]\n[plugins.echo]\nmodels = 3\n'])
async def test_an_invalid_file_changes_nothing(reloadable, broken):
    client, app, path = reloadable
    before = app[PIPELINES].current
    path.write_text(broken)
    with pytest.raises(ReloadFailed):
        await app[PIPELINES].reload(app)
    assert app[PIPELINES].current is before
    assert (await client.post("/v1/chat/completions", json=BODY)).headers["x-stamp"] == "on"
