"""hookgate's pytest plugin (hookgate.testing.pytest_plugin), as another project uses it: a tiny
project with no conftest and no asyncio settings, run in-process with pytester under
pytest-asyncio's strict and auto modes and with no async plugin at all."""
from __future__ import annotations

import os
import re
import shutil
import sys
import textwrap
import threading
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

QUIET = ("-W", "ignore:The configuration option \"asyncio_default_fixture_loop_scope\" is unset")
"""A project with no asyncio settings gets pytest-asyncio's own notice about its loop-scope
default; the fixtures need no such setting, so the notice is not this suite's concern."""

SYNC_TESTS = '''
import asyncio

import openai
import pytest


def test_sync_client(hookgate_openai):
    answer = hookgate_openai.chat.completions.create(model="mock", messages=[{"role": "user", "content": "hi"}])
    assert answer.choices[0].message.content == "mock: hi"


def test_the_async_client_works_from_any_loop(hookgate_async_openai):
    async def ask():
        answer = await hookgate_async_openai.chat.completions.create(model="mock", messages=[{"role": "user", "content": "yo"}])
        return answer.choices[0].message.content

    assert asyncio.run(ask()) == asyncio.run(ask()) == "mock: yo"


def test_errors_reach_the_sdk_at_once(hookgate_openai):
    with pytest.raises(openai.RateLimitError):
        hookgate_openai.chat.completions.create(model="mock", messages=[{"role": "user", "content": "#mock: status=429 retry_after=30"}])
'''

STRICT_TESTS = '''
import pytest


@pytest.mark.asyncio
async def test_async_client(hookgate_async_openai):
    answer = await hookgate_async_openai.chat.completions.create(model="mock", messages=[{"role": "user", "content": "hi"}])
    assert answer.choices[0].message.content == "mock: hi"


@pytest.mark.asyncio(loop_scope="module")
async def test_async_client_in_a_module_loop(hookgate_async_openai):
    stream = await hookgate_async_openai.chat.completions.create(
        model="mock", messages=[{"role": "user", "content": "#mock: stream_chunks=5"}], stream=True
    )
    assert len([chunk async for chunk in stream]) == 7
'''

AUTO_TESTS = '''
async def test_unmarked_async_test(hookgate_async_openai, hookgate_openai):
    answer = await hookgate_async_openai.chat.completions.create(model="mock", messages=[{"role": "user", "content": "hi"}])
    assert answer.choices[0].message.content == "mock: hi"
    assert hookgate_openai.models.list().data[0].id == "mock"
'''

ANYIO_TESTS = '''
import pytest


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.mark.anyio
async def test_under_anyio(hookgate_async_openai):
    answer = await hookgate_async_openai.chat.completions.create(model="mock", messages=[{"role": "user", "content": "hi"}])
    assert answer.choices[0].message.content == "mock: hi"
'''

OVERRIDES = '''
import openai
import pytest
from hookgate import hookimpl
from hookgate.testing.openai_emulator import Fault


class Stamp:
    """Adds x-stamp to every answer."""

    def __init__(self, config):
        pass

    @hookimpl
    async def before_request(self, ctx):
        ctx.response_headers["x-stamp"] = "stamped"


@pytest.fixture
def hookgate_plugins():
    return {"stamp": Stamp}


@pytest.fixture
def hookgate_config(hookgate_openai_emulator):
    return f"""
        [gateway]
        pipeline = ["stamp", "openai"]

        [plugins.openai]
        base_url = "{hookgate_openai_emulator.base_url}"
        api_key = "upstream-test-key"
        models = ["gpt-4o-mini"]
    """


def test_a_local_plugin_in_front_of_an_emulated_upstream(hookgate_openai, hookgate_openai_emulator):
    raw = hookgate_openai.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    assert raw.headers["x-stamp"] == "stamped"
    assert raw.parse().choices[0].message.content == "emulated: hi"
    hookgate_openai_emulator.script(Fault(status=429))
    with pytest.raises(openai.RateLimitError):
        hookgate_openai.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    assert hookgate_openai_emulator.stats.calls == 2


@pytest.mark.parametrize("hookgate_config", [{"gateway": {"pipeline": ["mock"]}, "plugins": {"mock": {"models": ["my-model"]}}}])
def test_a_dict_config_by_parametrize(hookgate_openai):
    assert hookgate_openai.chat.completions.create(model="my-model", messages=[{"role": "user", "content": "x"}]).model == "my-model"


def test_several_gateways_in_one_test(hookgate_start_gateway):
    first = hookgate_start_gateway('[gateway]\\npipeline = ["mock"]')
    second = hookgate_start_gateway({"gateway": {"pipeline": ["echo"]}})
    assert first.url != second.url
    assert second.openai().chat.completions.create(model="echo", messages=[{"role": "user", "content": "x"}]).choices[0].message.content == "echo: x"
'''

ANTHROPIC_TESTS = '''
import pytest


@pytest.fixture
def hookgate_config():
    # The built-in anthropic_messages surface, answered by the mock provider through the translation.
    return {"gateway": {"pipeline": ["mock"]}}


def test_anthropic_clients_are_bound_to_the_gateway(hookgate_anthropic, hookgate_async_anthropic):
    import asyncio

    message = hookgate_anthropic.messages.create(model="mock", max_tokens=10, messages=[{"role": "user", "content": "hi"}])
    assert message.content[0].text == "mock: hi"

    async def ask():
        return await hookgate_async_anthropic.messages.create(model="mock", max_tokens=10, messages=[{"role": "user", "content": "yo"}])

    assert asyncio.run(ask()).content[0].text == "mock: yo"


def test_the_anthropic_and_groq_emulators_are_served(hookgate_anthropic_emulator, hookgate_groq_emulator):
    import anthropic
    import groq

    claude = anthropic.Anthropic(base_url=hookgate_anthropic_emulator.base_url, api_key="upstream-test-key", max_retries=0)
    message = claude.messages.create(model="claude-x", max_tokens=10, messages=[{"role": "user", "content": "hi"}])
    assert message.content[0].text == "emulated: hi"
    llama = groq.Groq(base_url=hookgate_groq_emulator.base_url, api_key="upstream-test-key", max_retries=0)
    answer = llama.chat.completions.create(model="llama-3.1-8b-instant", messages=[{"role": "user", "content": "hi"}])
    assert answer.choices[0].message.content == "emulated: hi"
    assert (hookgate_anthropic_emulator.stats.calls, hookgate_groq_emulator.stats.calls) == (1, 1)
    claude.close()
    llama.close()
'''

REDIS_TESTS = '''
import os

import redis

SEEN = []


def test_writes_under_its_prefix(hookgate_redis_url, hookgate_redis_prefix):
    client = redis.Redis.from_url(hookgate_redis_url)
    client.set(hookgate_redis_prefix + "key", "value")
    assert client.get(hookgate_redis_prefix + "key") == b"value"
    client.close()
    SEEN.append(hookgate_redis_prefix)


def test_the_previous_tests_keys_are_gone(hookgate_redis_url, hookgate_redis_prefix):
    client = redis.Redis.from_url(hookgate_redis_url)
    assert SEEN and hookgate_redis_prefix != SEEN[0]
    assert client.exists(SEEN[0] + "key") == 0
    client.close()


def test_it_uses_redis_url_when_set(hookgate_redis_url):
    assert hookgate_redis_url == os.environ.get("REDIS_URL", hookgate_redis_url)
'''


def run(pytester: pytest.Pytester, tests: str, *args: str, mode: str | None = None, name: str = "test_app.py") -> pytest.RunResult:
    """Run ``tests`` as a project with no conftest and no configuration but the asyncio mode."""
    pytester.makefile(".py", **{name.removesuffix(".py"): textwrap.dedent(tests)})
    if mode is not None:
        pytester.makeini(f"[pytest]\nasyncio_mode = {mode}\nasyncio_default_fixture_loop_scope = function\n")
    return pytester.runpytest_inprocess("-p", "no:cacheprovider", "-W", "error::pytest.PytestUnraisableExceptionWarning", *QUIET, *args)


def loop_threads() -> int:
    return sum(thread.name == "hookgate-test-loop" for thread in threading.enumerate())


def test_sync_fixtures_need_no_async_plugin_and_the_loop_ends_with_the_session(pytester):
    before = loop_threads()
    result = run(pytester, SYNC_TESTS, "-p", "no:asyncio", "-p", "no:aiohttp", "-p", "no:anyio")
    result.assert_outcomes(passed=3)
    assert loop_threads() == before


def test_async_tests_under_pytest_asyncio_strict_mode(pytester):
    pytester.makepyfile(test_sync=SYNC_TESTS)
    result = run(pytester, STRICT_TESTS, mode="strict")
    result.assert_outcomes(passed=5)


def test_async_tests_under_pytest_asyncio_auto_mode(pytester):
    result = run(pytester, AUTO_TESTS, mode="auto")
    result.assert_outcomes(passed=1)


def test_async_tests_under_anyio(pytester):
    result = run(pytester, ANYIO_TESTS, "-p", "no:asyncio", "-p", "no:aiohttp")  # pytest-aiohttp needs pytest-asyncio
    result.assert_outcomes(passed=1)


def test_config_plugins_and_emulators_are_overridable_fixtures(pytester):
    result = run(pytester, OVERRIDES)
    result.assert_outcomes(passed=3)


def test_anthropic_clients_and_the_other_emulators(pytester):
    result = run(pytester, ANTHROPIC_TESTS)
    result.assert_outcomes(passed=2)


def test_fixtures_are_documented_in_pytest_fixtures(pytester):
    result = pytester.runpytest_inprocess("--fixtures", "-p", "no:cacheprovider", *QUIET)
    listing = result.stdout.str()
    for name in ("hookgate_gateway", "hookgate_openai", "hookgate_async_openai", "hookgate_anthropic", "hookgate_redis_url", "hookgate_openai_emulator"):
        assert f"{name} " in listing or f"{name}\n" in listing, name
    assert "A gateway serving ``hookgate_config``" in listing


def test_the_tutorials_test_passes_as_written(pytester):
    """docs/writing_plugins.md, section 6, copied into a fresh project: a plugin class tested
    before it is a package (the whole tutorial, in a fresh venv, is tests/test_tutorial.py)."""
    tutorial = (Path(__file__).resolve().parents[1] / "docs" / "writing_plugins.md").read_text()
    section = tutorial[tutorial.index("## 6. Test it"):]
    [code] = re.findall(r"```python\n(.*?)```", section.split("\n## ")[0], flags=re.DOTALL)
    run(pytester, code, name="test_word_guard.py").assert_outcomes(passed=1)


def test_a_bad_config_fails_the_test_naming_the_key(pytester):
    result = run(pytester, '''
        def test_bad(hookgate_start_gateway):
            hookgate_start_gateway({"gateway": {"pipeline": ["mock"]}, "plugins": {"mock": {"max_delay_ms": -1}}})
    ''')
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*plugins.mock*max_delay_ms*"])


# ------------------------------------------------------------------------------------- Redis ---


def test_redis_starts_its_own_server_and_cleans_the_prefix(pytester, monkeypatch):
    if shutil.which("redis-server") is None and os.environ.get("CI") != "true":
        pytest.skip("redis-server is not installed (Debian package redis-server)")
    monkeypatch.delenv("REDIS_URL", raising=False)
    run(pytester, REDIS_TESTS).assert_outcomes(passed=3)


def test_redis_uses_redis_url(pytester, monkeypatch, redis_url):
    monkeypatch.setenv("REDIS_URL", redis_url)
    run(pytester, REDIS_TESTS).assert_outcomes(passed=3)


@pytest.mark.parametrize(("ci", "outcome"), [("true", "errors"), ("", "skipped")])
def test_a_missing_redis_server_fails_under_ci_and_skips_with_its_reason_otherwise(pytester, monkeypatch, ci, outcome):
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.setenv("PATH", str(pytester.path))  # no redis-server on it
    monkeypatch.setenv("CI", ci)
    result = run(pytester, REDIS_TESTS, "-rs")
    result.assert_outcomes(**{outcome: 3})
    result.stdout.fnmatch_lines(["*redis-server is not installed*apt-get install redis-server*"])


def test_an_unreachable_redis_url_fails_loudly(pytester, monkeypatch):
    from hookgate.testing.redis_server import free_port

    monkeypatch.setenv("REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")
    result = run(pytester, REDIS_TESTS)
    result.assert_outcomes(errors=3)
    result.stdout.fnmatch_lines(["*REDIS_URL is set but nothing answers*"])


def test_the_plugin_imports_nothing_heavy():
    """Every pytest run of a project with hookgate installed imports the plugin: keep it cheap."""
    import subprocess

    code = "import hookgate.testing.pytest_plugin, sys; print(sorted(m for m in ('openai', 'aiohttp', 'anthropic', 'hookgate.server') if m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "[]"
