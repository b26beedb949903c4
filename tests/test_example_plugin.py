"""A third-party plugin, installed as its own pip package (examples/hookgate-example-plugin), is
found through its entry point, configured in plugins.toml and runs in the chain."""
from __future__ import annotations

import openai
import pytest

from conftest import assert_conforms
from hookgate.registry import installed_plugins

PIPELINE = """
[gateway]
pipeline = ["word_guard", "memory_cache", "echo"]

[plugins.word_guard]
banned_words = ["password"]
header_value = "seen-by-guard"
"""


@pytest.fixture(autouse=True)
def require_the_example_package():
    if "word_guard" not in installed_plugins():
        pytest.fail("the example plugin is not installed: pip install -e examples/hookgate-example-plugin (the README's test command does)")


def test_it_is_discovered_through_its_entry_point():
    plugin = installed_plugins()["word_guard"]
    assert plugin.distribution == "hookgate-example-plugin"
    assert plugin.reference == "hookgate_example_plugin:WordGuard"


async def test_it_runs_in_the_chain_with_its_own_config(gateway, sdk):
    client = await gateway(PIPELINE)
    ok = await sdk(client).chat.completions.with_raw_response.create(model="echo", messages=[{"role": "user", "content": "hello"}])
    assert ok.headers["x-word-guard"] == "seen-by-guard"
    with pytest.raises(openai.BadRequestError) as caught:
        await sdk(client).chat.completions.create(model="echo", messages=[{"role": "user", "content": "my PASSWORD is"}])
    assert caught.value.body["code"] == "content_blocked"
    assert caught.value.body["param"] == "messages[0].content"
    assert_conforms("ErrorResponse", {"error": caught.value.body})


async def test_its_config_is_validated_and_overridable_from_the_environment(gateway, make_config, monkeypatch):
    from hookgate.config import ConfigError

    with pytest.raises(ConfigError, match=r"\[plugins.word_guard\] header_value"):
        make_config(PIPELINE.replace('"seen-by-guard"', '""'))
    monkeypatch.setenv("HOOKGATE_WORD_GUARD__BANNED_WORDS", '["hello"]')
    client = await gateway(PIPELINE)
    response = await client.post("/v1/chat/completions", json={"model": "echo", "messages": [{"role": "user", "content": "hello"}]})
    assert response.status == 400


async def test_switching_it_off_needs_no_code_change(gateway):
    client = await gateway(PIPELINE + "enabled = false\n")
    response = await client.post("/v1/chat/completions", json={"model": "echo", "messages": [{"role": "user", "content": "password"}]})
    assert response.status == 200 and "x-word-guard" not in response.headers


def test_a_plugin_can_add_a_command_to_the_hookgate_cli():
    import subprocess

    from servers import HOOKGATE

    blocked = subprocess.run([HOOKGATE, "word-guard", "my password", "--banned", "password"], capture_output=True, text=True, timeout=30)
    assert (blocked.returncode, blocked.stdout.strip()) == (1, "blocked: password")
    allowed = subprocess.run([HOOKGATE, "word-guard", "hello", "--banned", "password"], capture_output=True, text=True, timeout=30)
    assert (allowed.returncode, allowed.stdout.strip()) == (0, "allowed")
    listed = subprocess.run([HOOKGATE, "--help"], capture_output=True, text=True, timeout=30)
    assert "commands added by plugins:" in listed.stdout and "word-guard" in listed.stdout.split("commands added by plugins:")[1]
