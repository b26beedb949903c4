"""Threat: an operator changes the port (or host) in plugins.toml and reloads; the reload says
"reloaded" and the server silently keeps listening where it was.

Issue 10 item 8 / issue 19 item 5: a reload that moves ``[gateway] host`` or ``port`` is now
rejected with a message saying a restart is needed, and ``hookgate reload`` exits 1 with it.
"""
from __future__ import annotations

import signal
import subprocess
import urllib.request

import pytest

from hookgate.config import load_config
from hookgate.pipelines import ReloadFailed
from hookgate.server import PIPELINES, create_app
from servers import HOOKGATE, free_port, wait_healthy


async def test_a_reload_that_moves_the_port_is_rejected(tmp_path, aiohttp_client):
    path = tmp_path / "plugins.toml"
    path.write_text('[gateway]\npipeline = ["echo"]\nport = 8101\n')
    client = await aiohttp_client(create_app(load_config(path)))
    pipelines = client.server.app[PIPELINES]
    for moved in ('port = 8102', 'host = "0.0.0.0"\nport = 8101'):
        path.write_text(f'[gateway]\npipeline = ["echo", "mock"]\n{moved}\n')
        with pytest.raises(ReloadFailed) as rejected:
            await pipelines.reload(client.server.app, load_config(path))
        assert "restart" in str(rejected.value) and "127.0.0.1:8101" in str(rejected.value)
        assert list(pipelines.current.config.pipeline) == ["echo"]  # nothing changed


def test_hookgate_reload_exits_1_naming_the_address(tmp_path):
    port = free_port()
    config = tmp_path / "plugins.toml"
    config.write_text(f'[gateway]\npipeline = ["echo"]\nport = {port}\n')
    pid_file = tmp_path / "hg.pid"
    process = subprocess.Popen([HOOKGATE, "serve", "--config", str(config), "--pid-file", str(pid_file)], stderr=subprocess.PIPE, text=True)
    try:
        wait_healthy(port, process)
        config.write_text(f'[gateway]\npipeline = ["echo"]\nport = {port + 1}\n')
        result = subprocess.run([HOOKGATE, "reload", "--pid-file", str(pid_file)], capture_output=True, text=True, timeout=60)
        assert result.returncode == 1
        assert "reload rejected" in result.stderr and f"a reload cannot move it to 127.0.0.1:{port + 1}" in result.stderr
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
            assert response.status == 200  # still serving where it was
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=20)
