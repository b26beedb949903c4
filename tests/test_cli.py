"""The command line is a contract: `hookgate serve|plugins|check-config` and `python app.py`,
run as real processes the way scripts and deployments run them."""
from __future__ import annotations

import json
import re
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from conftest import ROOT
from servers import HOOKGATE, free_port, wait_healthy

def run(*args: str, cwd: Path = ROOT, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([HOOKGATE, *args], cwd=cwd, capture_output=True, text=True, timeout=60, env={**os.environ, **(env or {})})


def chat(port: int, content: str) -> tuple[dict, dict]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/chat/completions",
        data=json.dumps({"model": "echo", "messages": [{"role": "user", "content": content}]}).encode(),
        headers={"Content-Type": "application/json", "Authorization": "Bearer sk-client-secret-999"},
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.load(response), dict(response.headers)


@pytest.fixture
def serve():
    processes: list[subprocess.Popen] = []

    def start(*command: str, cwd: Path = ROOT, env: dict | None = None) -> subprocess.Popen:
        process = subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})})
        processes.append(process)
        return process

    yield start
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()


def test_serve_with_the_repository_config_answers_and_caches(serve):
    port = free_port()
    process = serve(HOOKGATE, "serve", "--port", str(port), env={"OPENAI_API_KEY": ""})
    wait_healthy(port, process)
    body, headers = chat(port, "hello from a script")
    assert body["choices"][0]["message"]["content"] == "echo: hello from a script"
    assert headers["x-hookgate-cache"] == "MISS"
    assert chat(port, "hello from a script")[1]["x-hookgate-cache"] == "HIT"
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=10)
    assert process.returncode == 0
    assert "listening" in stderr and "request_log" in stderr, "the resolved pipeline is logged at start"
    assert '"cache":"HIT"' in stderr, "one JSON request line per request"
    assert "sk-client-secret-999" not in stderr


def test_python_app_py_is_the_same_as_serve(serve, tmp_path):
    config = tmp_path / "plugins.toml"
    config.write_text('[gateway]\npipeline = ["echo"]\n')
    port = free_port()
    process = serve(sys.executable, "app.py", "--config", str(config), "--port", str(port))
    wait_healthy(port, process)
    assert chat(port, "x")[1]["x-hookgate-cache"] == "BYPASS"


def test_serve_reads_host_port_and_config_from_the_environment(serve, tmp_path):
    config = tmp_path / "custom.toml"
    config.write_text('[gateway]\npipeline = ["echo"]\n')
    port = free_port()
    process = serve(HOOKGATE, "serve", cwd=tmp_path, env={"HOOKGATE_CONFIG": str(config), "HOOKGATE_PORT": str(port), "HOOKGATE_HOST": "127.0.0.1"})
    wait_healthy(port, process)
    assert chat(port, "x")[1]["x-hookgate-provider"] == "echo"


def test_serve_without_any_plugins_toml_uses_the_built_in_defaults(serve, tmp_path):
    port = free_port()
    process = serve(HOOKGATE, "serve", "--port", str(port), cwd=tmp_path, env={"HOOKGATE_CONFIG": ""})
    wait_healthy(port, process)
    chat(port, "x")
    assert chat(port, "x")[1]["x-hookgate-cache"] == "HIT"


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        ("[gateway\n", "not valid TOML"),
        ('[gateway]\npipeline = ["echo", "nope"]\n', "[gateway] pipeline: unknown plugin 'nope'"),
        ('[gateway]\npipeline = ["memory_cache", "echo"]\n[plugins.memory_cache]\nttl_seconds = "soon"\n', "[plugins.memory_cache] ttl_seconds:"),
        ('[gateway]\npipeline = ["memory_cache", "echo"]\n[plugins.memory_cache]\nsize = 3\n', "[plugins.memory_cache] size: unknown key"),
    ],
)
def test_a_broken_config_stops_serve_and_check_config_with_one_clear_line(tmp_path, toml, expected):
    path = tmp_path / "plugins.toml"
    path.write_text(toml)
    for result in (run("serve", "--config", str(path), "--port", str(free_port())), run("check-config", str(path))):
        assert result.returncode == 1
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert str(path) in lines[0] and expected in lines[0]
        assert "Traceback" not in result.stderr


def test_check_config_warns_of_a_table_for_a_plugin_not_in_the_pipeline_and_strict_refuses_it(tmp_path):
    path = tmp_path / "plugins.toml"
    path.write_text('[gateway]\npipeline = ["echo"]\n[plugins.memory_cache]\nttl_seconds = 42\n')
    lenient = run("check-config", str(path))
    assert lenient.returncode == 0 and f"{path}: OK" in lenient.stdout
    assert lenient.stderr.strip() == f"warning: {path}: [plugins.memory_cache] configures a plugin that is in neither [gateway] pipeline nor surfaces (it has no effect)"
    strict = run("check-config", str(path), "--strict")
    assert strict.returncode == 1 and "OK" not in strict.stdout
    assert strict.stderr.strip().splitlines()[-1] == (
        f"error: {path}: [plugins.memory_cache] configures a plugin that is in neither [gateway] pipeline nor surfaces (it has no effect); --strict refuses warnings"
    )
    assert run("check-config", "plugins.toml", "--strict").returncode == 0, "the repository's own config has nothing to warn of"


def test_check_config_accepts_the_repository_config():
    result = run("check-config", "plugins.toml")
    assert result.returncode == 0, result.stderr
    assert "plugins.toml: OK" in result.stdout
    assert "pipeline: request_log -> memory_cache -> retry -> circuit_breaker -> concurrency -> timeout -> echo -> openai" in result.stdout


def test_plugins_lists_installed_enabled_order_and_schemas(tmp_path):
    path = tmp_path / "plugins.toml"
    path.write_text('[gateway]\npipeline = ["memory_cache", "request_log", "echo"]\n[plugins.memory_cache]\nttl_seconds = 42\n')
    result = run("plugins", "--config", str(path))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "pipeline: memory_cache -> request_log -> echo" in out
    assert re.search(r"^  memory_cache +enabled #1 +hookgate ", out, re.M)
    assert re.search(r"^  openai +not in pipeline +hookgate ", out, re.M)
    assert re.search(r"^  after_response +memory_cache$", out, re.M)
    assert re.search(r"^  request_finished +request_log$", out, re.M)
    assert re.search(r"^    ttl_seconds +number += 42\.0 ", out, re.M), "the effective value, not the default"
    assert re.search(r"^    max_entries +integer += 10000 ", out, re.M), "a default where the file says nothing"
    columns = {line.index("= ") for line in out.splitlines() if line.startswith("    ") and "= " in line and "[plugins.memory_cache]" not in line}
    assert columns, "aligned value columns"
    report = json.loads(run("plugins", "--config", str(path), "--json").stdout)
    by_name = {p["name"]: p for p in report["plugins"]}
    assert by_name["memory_cache"]["enabled"] and by_name["memory_cache"]["position"] == 1
    assert by_name["memory_cache"]["config"]["ttl_seconds"] == 42.0
    assert "ttl_seconds" in by_name["memory_cache"]["config_schema"]["properties"]
    assert report["hooks"]["cache_lookup"] == ["memory_cache"]


def test_plugins_masks_secrets_in_effective_values(tmp_path):
    path = tmp_path / "plugins.toml"
    path.write_text('[gateway]\npipeline = ["openai"]\n[plugins.openai]\napi_key = "sk-very-secret-777"\n')
    result = run("plugins", "--config", str(path), "--json")
    assert result.returncode == 0
    assert "sk-very-secret-777" not in result.stdout
