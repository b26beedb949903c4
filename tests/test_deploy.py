"""deploy/: nginx balancing three gateway instances that share one Redis, as an operator runs
them. A prompt answered through one instance is a HIT on the others, and a concurrency limit
holds across all three together."""
from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
import time
import tomllib
from pathlib import Path

import aiohttp
import pytest

from conftest import ROOT, pipeline_config, toml_value
from servers import free_port

DEPLOY = ROOT / "deploy"


def instance_config(emulator, redis_url: str, prefix: str, *, limit: int) -> str:
    """deploy/plugins.toml, pointed at the test's emulator, Redis and key prefix."""
    document = tomllib.loads((DEPLOY / "plugins.toml").read_text())
    sections = document["plugins"]
    sections["redis_cache"] = {**sections["redis_cache"], "key_prefix": prefix}
    sections["concurrency"] = {**sections["concurrency"], "limit": limit, "redis_url": redis_url, "key_prefix": f"{prefix}:concurrency", "max_wait_seconds": 20}
    sections["openai"] = {"base_url": emulator.base_url, "api_key": "sk-deploy", "models": ["gpt-4o-mini"]}
    text = pipeline_config(document["gateway"]["pipeline"], **sections)
    return text.replace("[gateway]\n", f"[gateway]\nlog_format = {toml_value(document['gateway']['log_format'])}\n", 1)


@pytest.fixture
def nginx():
    binary = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
    if binary is None:
        message = "nginx is not installed (Debian package nginx-light); .ci/run installs it"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    processes: list[subprocess.Popen] = []

    def start(ports: list[int]) -> str:
        prefix = tempfile.mkdtemp(prefix="hookgate-nginx-")
        listen = free_port()
        config = (DEPLOY / "nginx.conf").read_text()
        for placeholder, value in {"@PREFIX@": prefix, "@LISTEN@": listen, "@PORT_A@": ports[0], "@PORT_B@": ports[1], "@PORT_C@": ports[2]}.items():
            config = config.replace(placeholder, str(value))
        path = Path(prefix) / "nginx.conf"
        path.write_text(config)
        process = subprocess.Popen([binary, "-p", prefix, "-c", str(path)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        processes.append(process)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                import socket

                socket.create_connection(("127.0.0.1", listen), timeout=0.2).close()
                return f"http://127.0.0.1:{listen}"
            except OSError:
                if process.poll() is not None:
                    raise AssertionError(f"nginx exited: {process.stderr.read()}")
                time.sleep(0.05)
        raise AssertionError("nginx did not start")

    yield start
    for process in processes:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture
async def deployment(gateway_process, nginx, emulator, redis_url, redis_prefix):
    config = instance_config(emulator, redis_url, redis_prefix, limit=2)
    instances = [gateway_process(config, env={"REDIS_URL": redis_url}) for _ in range(3)]
    return nginx([instance.port for instance in instances])


async def test_a_prompt_answered_through_one_instance_is_a_hit_on_the_others(deployment, emulator):
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "shared across instances"}]}
    answered_by: set[str] = set()
    caches: list[str] = []
    async with aiohttp.ClientSession() as session:
        for _ in range(9):
            async with session.post(f"{deployment}/v1/chat/completions", json=body) as response:
                assert response.status == 200
                await response.read()
                caches.append(response.headers["x-hookgate-cache"])
                answered_by.add(response.headers["X-Upstream-Instance"])
        async with session.post(f"{deployment}/v1/chat/completions", json={**body, "stream": True}) as response:
            text = await response.text()
            assert response.headers["x-hookgate-cache"] == "HIT" and text.endswith("data: [DONE]\n\n")
    assert len(answered_by) == 3, "nginx spread the requests over the three instances"
    assert caches[0] == "MISS" and caches[1:] == ["HIT"] * 8
    assert emulator.stats.calls == 1


async def test_a_concurrency_limit_holds_across_all_three(deployment, emulator):
    emulator.settings.latency = 0.2
    answered_by: set[str] = set()
    async with aiohttp.ClientSession() as session:

        async def ask(i: int) -> int:
            body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"distinct prompt {i}"}]}
            async with session.post(f"{deployment}/v1/chat/completions", json=body) as response:
                await response.read()
                answered_by.add(response.headers["X-Upstream-Instance"])
                return response.status

        statuses = await asyncio.gather(*(ask(i) for i in range(18)))
    assert statuses == [200] * 18
    assert len(answered_by) == 3
    assert emulator.stats.peak_in_flight == 2, "one limit of 2 for the three instances together"
