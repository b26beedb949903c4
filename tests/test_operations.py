"""Operating the real server process: graceful shutdown, live reload by signal, workers, and
client disconnects under `hookgate serve` (not the test server)."""
from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time

import aiohttp

from conftest import CHAT, eventually, upstream_config
from servers import HOOKGATE, free_port, wait_healthy

STREAM = {"model": "echo", "messages": [{"role": "user", "content": " ".join(f"w{i}" for i in range(20))}], "stream": True}
SLOW_ECHO = '[gateway]\npipeline = ["memory_cache", "echo"]\nshutdown_grace_seconds = 10\n[plugins.echo]\nchunk_delay_seconds = 0.1\n'


async def read_stream(session: aiohttp.ClientSession, url: str) -> str:
    async with session.post(f"{url}/v1/chat/completions", json=STREAM) as response:
        return await response.text()


async def test_sigterm_lets_running_streams_finish_and_exits_0(gateway_process):
    server = gateway_process(SLOW_ECHO)
    async with aiohttp.ClientSession() as session:
        streams = [asyncio.ensure_future(read_stream(session, server.url)) for _ in range(3)]
        await asyncio.sleep(0.5)  # the streams are running (each takes about 2 s)
        started = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        bodies = await asyncio.gather(*streams)
    for body in bodies:
        assert body.endswith("data: [DONE]\n\n") and '"error"' not in body
        assert body.count("data: ") == 23  # 21 content chunks, the finish chunk, [DONE]
    returncode = await asyncio.to_thread(server.process.wait, 15)
    assert returncode == 0
    assert time.monotonic() - started < 10


async def test_sighup_reloads_without_dropping_a_request(tmp_path):
    config = tmp_path / "plugins.toml"
    config.write_text('[gateway]\npipeline = ["memory_cache", "echo"]\n')
    port = free_port()
    process = subprocess.Popen([HOOKGATE, "serve", "--config", str(config), "--port", str(port), "--pid-file", str(tmp_path / "hg.pid")], stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        await asyncio.to_thread(wait_healthy, port, process)
        async with aiohttp.ClientSession() as session:
            statuses: list[int] = []
            caches: list[str] = []
            stop = asyncio.Event()

            async def traffic() -> None:
                while not stop.is_set():
                    async with session.post(f"{url}/v1/chat/completions", json={**CHAT, "model": "echo"}) as response:
                        await response.read()
                        statuses.append(response.status)
                        caches.append(response.headers["x-hookgate-cache"])

            runners = [asyncio.ensure_future(traffic()) for _ in range(4)]
            await eventually(lambda: "HIT" in caches, timeout=5)
            config.write_text('[gateway]\npipeline = ["memory_cache", "echo"]\n[plugins.memory_cache]\nenabled = false\n')
            result = subprocess.run([HOOKGATE, "reload", "--pid-file", str(tmp_path / "hg.pid")], capture_output=True, text=True, timeout=30)
            assert result.returncode == 0, result.stderr
            marker = len(caches)
            await eventually(lambda: len(caches) > marker + 20 and caches[-1] == "BYPASS", timeout=10)
            config.write_text("[gateway\nbroken")
            os.kill(process.pid, signal.SIGHUP)
            marker = len(caches)
            await eventually(lambda: len(caches) > marker + 20, timeout=10)
            stop.set()
            await asyncio.gather(*runners)
        assert set(statuses) == {200}, "no request failed across the reloads"
        assert caches[-1] == "BYPASS", "the invalid file changed nothing"
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=15)
    assert '"event":"reloaded"' in stderr
    assert '"event":"reload_rejected"' in stderr and "not valid TOML" in stderr


async def test_a_client_disconnect_under_hookgate_serve_cancels_the_upstream_call(gateway_process, emulator):
    server = gateway_process(upstream_config(emulator, []))
    emulator.settings.fault = None
    emulator.settings.latency = 5
    async with aiohttp.ClientSession() as session:
        request = asyncio.ensure_future(session.post(f"{server.url}/v1/chat/completions", json=CHAT))
        await eventually(lambda: emulator.stats.in_flight == 1, timeout=5)
        request.cancel()
        await asyncio.gather(request, return_exceptions=True)
    await eventually(lambda: emulator.stats.cancelled == 1 and emulator.stats.in_flight == 0, timeout=2)


async def test_workers_share_one_port(tmp_path):
    config = tmp_path / "plugins.toml"
    config.write_text('[gateway]\npipeline = ["echo"]\n')
    port = free_port()
    process = subprocess.Popen([HOOKGATE, "serve", "--config", str(config), "--port", str(port), "--workers", "2"], stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    listening: list[dict] = []
    try:
        while len(listening) < 2:  # both workers report that they serve
            line = await asyncio.wait_for(asyncio.to_thread(process.stderr.readline), 20)
            assert line, "the server stopped"
            if '"event":"listening"' in line:
                listening.append(json.loads(line))
        async with aiohttp.ClientSession() as session:

            async def ask() -> int:
                async with session.post(f"{url}/v1/chat/completions", json={**CHAT, "model": "echo"}) as response:
                    await response.read()
                    return response.status

            assert set(await asyncio.gather(*(ask() for _ in range(50)))) == {200}
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=20)
    assert process.returncode == 0, stderr[-2000:]
    pids = {entry["pid"] for entry in listening}
    assert len(pids) == 2 and process.pid not in pids, "two worker processes, each with its own loop, on the one port"
