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


# ------------------------------------------------- start-up, shutdown and reload messages ---


def serve(tmp_path, text: str, *args: str) -> tuple[subprocess.Popen, int]:
    port = free_port()
    config = tmp_path / "plugins.toml"
    config.write_text(text)
    process = subprocess.Popen([HOOKGATE, "serve", "--config", str(config), "--port", str(port), *args], stderr=subprocess.PIPE, text=True)
    wait_healthy(port, process)
    return process, port


def reload(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([HOOKGATE, "reload", *args], capture_output=True, text=True, timeout=60)


def test_hookgate_reload_waits_for_the_outcome_and_exits_1_with_the_reason(tmp_path):
    pid_file = tmp_path / "hg.pid"
    process, _ = serve(tmp_path, '[gateway]\npipeline = ["echo"]\n', "--pid-file", str(pid_file))
    config = tmp_path / "plugins.toml"
    try:
        config.write_text('[gateway]\npipeline = ["memory_cache", "echo"]\n')
        applied = reload("--pid-file", str(pid_file))
        assert applied.returncode == 0 and "reloaded" in applied.stdout, applied.stderr
        config.write_text("[gateway\nbroken")
        rejected = reload("--pid-file", str(pid_file))
        assert rejected.returncode == 1
        assert rejected.stderr.startswith("hookgate: error: reload rejected") and "not valid TOML" in rejected.stderr
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=20)
    assert not (tmp_path / "hg.pid.reload").exists(), "the status file goes with the pid file"


def test_hookgate_reload_by_pid_finds_a_server_without_a_pid_file(tmp_path):
    process, _ = serve(tmp_path, '[gateway]\npipeline = ["echo"]\n')
    try:
        (tmp_path / "plugins.toml").write_text('[gateway]\npipeline = ["nonexistent_plugin"]\n')
        by_pid = reload("--pid", str(process.pid))
        assert by_pid.returncode == 1 and "nonexistent_plugin" in by_pid.stderr
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=20)


def test_hookgate_reload_waits_for_every_worker(tmp_path):
    pid_file = tmp_path / "hg.pid"
    process, _ = serve(tmp_path, '[gateway]\npipeline = ["echo"]\n', "--pid-file", str(pid_file), "--workers", "2")
    try:
        for _ in range(100):  # both workers have said they started
            if all((tmp_path / f"hg.pid.reload.{i}").exists() for i in range(2)):
                break
            time.sleep(0.05)
        applied = reload("--pid-file", str(pid_file))
        assert applied.returncode == 0 and "2 workers" in applied.stdout, applied.stderr
        (tmp_path / "plugins.toml").write_text("not toml [")
        assert reload("--pid-file", str(pid_file)).returncode == 1
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=20)


def test_a_busy_port_is_one_line_naming_the_address(tmp_path):
    first, port = serve(tmp_path, '[gateway]\npipeline = ["echo"]\n')
    try:
        second = subprocess.run([HOOKGATE, "serve", "--config", str(tmp_path / "plugins.toml"), "--port", str(port)], capture_output=True, text=True, timeout=30)
        assert second.returncode == 1
        assert second.stderr.strip() == f"hookgate: error: cannot listen on 127.0.0.1:{port}: the address is already in use (another server on that port?)"
        workers = subprocess.run([HOOKGATE, "serve", "--config", str(tmp_path / "plugins.toml"), "--port", str(port), "--workers", "2"], capture_output=True, text=True, timeout=30)
        assert workers.returncode == 1 and workers.stderr.count("\n") == 1 and "already in use" in workers.stderr
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=20)


async def test_sigterm_logs_draining_with_requests_in_flight_and_stopped_with_counts(tmp_path):
    process, port = await asyncio.to_thread(serve, tmp_path, SLOW_ECHO)
    url = f"http://127.0.0.1:{port}"
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{url}/v1/chat/completions", json={**CHAT, "model": "echo"}) as response:
            assert response.status == 200
        streams = [asyncio.ensure_future(read_stream(session, url)) for _ in range(2)]
        await asyncio.sleep(0.5)  # both streams are running (each takes about 2 s)
        process.send_signal(signal.SIGTERM)
        bodies = await asyncio.gather(*streams)
    _, stderr = await asyncio.to_thread(process.communicate, timeout=20)
    assert all(body.endswith("data: [DONE]\n\n") for body in bodies)
    events = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    names = [event["event"] for event in events]
    assert names.index("listening") < names.index("draining") < names.index("stopped")
    draining = events[names.index("draining")]
    stopped = events[names.index("stopped")]
    assert draining["in_flight"] == 2
    assert stopped["responses"] >= 4 and stopped["unfinished"] == 0  # healthz, the chat, two streams
