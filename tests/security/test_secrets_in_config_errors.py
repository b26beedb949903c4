"""Threat: a secret in plugins.toml reaches a log, an error or an admin page.

Issue 10 items 6 and 8 (verified here, fixed on main): a plugins.toml with a non-UTF-8 byte next
to an ``api_key``, and ``HOOKGATE_PIPELINE='not json'``, give one line naming the file or the
variable, never the content (``check-config``, ``serve``); a ``base_url`` with ``user:password@``
is masked in ``/-/plugins`` and ``hookgate plugins --json``.
"""
from __future__ import annotations

import os
import subprocess

from servers import HOOKGATE

SECRET = "sk-in-the-file-31337"


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([HOOKGATE, *args], capture_output=True, text=True, timeout=60, env={**os.environ, **(env or {})})


def test_a_non_utf8_plugins_toml_is_one_line_without_its_content(tmp_path):
    path = tmp_path / "plugins.toml"
    path.write_bytes(f'[gateway]\npipeline = ["openai"]\n[plugins.openai]\napi_key = "{SECRET}\xff"\n'.encode("latin-1"))
    for command in (["check-config", str(path)], ["serve", "--config", str(path), "--port", "1"]):
        result = run(*command)
        assert result.returncode == 1
        assert len(result.stderr.strip().splitlines()) == 1 and str(path) in result.stderr
        assert SECRET not in result.stderr + result.stdout and "Traceback" not in result.stderr


def test_a_pipeline_variable_that_is_not_json_is_one_line_naming_it(tmp_path):
    path = tmp_path / "plugins.toml"
    path.write_text('[gateway]\npipeline = ["echo"]\n')
    result = run("check-config", str(path), env={"HOOKGATE_PIPELINE": "not json"})
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1 and "HOOKGATE_PIPELINE" in result.stderr and "Traceback" not in result.stderr


PASSWORD_URL = f"http://user:{SECRET}@127.0.0.1:9/v1"


def test_a_password_in_a_base_url_is_masked_in_plugins_json(tmp_path):
    path = tmp_path / "plugins.toml"
    path.write_text(f'[gateway]\npipeline = ["openai"]\n[plugins.openai]\nbase_url = "{PASSWORD_URL}"\n')
    result = run("plugins", "--config", str(path), "--json")
    assert result.returncode == 0 and "127.0.0.1:9" in result.stdout and SECRET not in result.stdout


async def test_a_password_in_a_base_url_is_masked_in_the_plugins_endpoint(gateway):
    client = await gateway(f'[gateway]\npipeline = ["openai"]\n[plugins.openai]\nbase_url = "{PASSWORD_URL}"\n')
    text = await (await client.get("/-/plugins")).text()
    assert "127.0.0.1:9" in text and SECRET not in text
