"""Shared fixtures: isolated gateway apps, the official OpenAI SDK pointed at them, and the
conformance checks against OpenAI's published schema and Anthropic's SDK-derived one
(both shipped in tests/conformance)."""
from __future__ import annotations

import os
import re
import sys
import textwrap
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, Awaitable, Callable

import openai
import pytest

from conformance.anthropic_schema import anthropic_errors_for
from conformance.openai_schema import errors_for
from hookgate.config import GatewayConfig, load_config
from hookgate.registry import InstalledPlugin, installed_plugins
from hookgate.server import create_app
from hookgate.testing.openai_emulator import OpenAIEmulator
from no_skips_in_ci import pytest_make_collect_report, pytest_runtest_makereport  # noqa: F401 (hooks)
from servers import PROCESS_LOGS, GatewayProcess, PgvectorServer, RedisServer, start_gateway

pytest_plugins = ("pytester",)  # tests/test_no_skips_in_ci.py runs pytest on its own examples

ROOT = Path(__file__).resolve().parents[1]


def assert_conforms(schema: str, body: Any) -> None:
    """Fail with every way ``body`` breaks OpenAI's published schema ``schema``
    (tests/conformance/openai-openapi.json)."""
    problems = errors_for(schema, body)
    assert problems == [], f"{schema} violations:\n" + "\n".join(problems)


def assert_anthropic_conforms(name: str, body: Any) -> None:
    """Fail with every way ``body`` breaks Anthropic's wire shape ``name`` (``"Message"``, a
    stream event's ``"RawMessageStartEvent"``..., ``"MessageTokensCount"``, ``"ErrorResponse"``)
    as the ``anthropic`` SDK's types define it, unknown fields included
    (tests/conformance/anthropic-messages.schema.json)."""
    problems = anthropic_errors_for(name, body)
    assert problems == [], f"Anthropic {name} violations:\n" + "\n".join(problems)


@pytest.fixture
def make_config(tmp_path: Path) -> Callable[..., GatewayConfig]:
    """Write a plugins.toml from text and load it; ``local`` adds in-process plugins by name."""

    def make(toml: str, *, local: dict[str, Any] | None = None) -> GatewayConfig:
        path = tmp_path / "plugins.toml"
        path.write_text(textwrap.dedent(toml))
        available = installed_plugins()
        for name, target in (local or {}).items():
            available[name] = InstalledPlugin.local(name, target)
        return load_config(path, available=available)

    return make


@pytest.fixture
def gateway(aiohttp_client, make_config) -> Callable[..., Awaitable[Any]]:
    """Start an isolated gateway app for a plugins.toml text; returns aiohttp's test client."""

    async def start(toml: str, *, local: dict[str, Any] | None = None):
        return await aiohttp_client(create_app(make_config(toml, local=local)))

    return start


@pytest.fixture
async def sdk():
    """The official OpenAI SDK pointed at a test gateway, as an application would use it."""
    clients: list[openai.AsyncOpenAI] = []

    def make(client, api_key: str = "sk-client-test", **options: Any) -> openai.AsyncOpenAI:
        sdk_client = openai.AsyncOpenAI(base_url=str(client.make_url("/v1")), api_key=api_key, max_retries=0, **options)
        clients.append(sdk_client)
        return sdk_client

    yield make
    for sdk_client in clients:
        await sdk_client.close()


ECHO_ONLY = """
[gateway]
pipeline = ["echo"]
"""

ECHO_CACHED = """
[gateway]
pipeline = ["memory_cache", "echo"]
"""


@pytest.fixture
async def emulator() -> AsyncIterator[OpenAIEmulator]:
    """A local OpenAI API (hookgate.testing.openai_emulator) on a free port."""
    async with OpenAIEmulator().serve() as emu:
        yield emu


UPSTREAM_TRANSPORTS = ("http", "sdk")
"""The transports of the upstream providers (``[plugins.openai] transport``, groq's, anthropic's)."""


@pytest.fixture(params=UPSTREAM_TRANSPORTS)
def upstream_transport(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test once per transport of the openai, groq and anthropic providers, chosen as an
    operator would, through ``HOOKGATE_<PLUGIN>__TRANSPORT`` (so every config the test writes
    gets it). Use it module-wide with ``pytestmark = pytest.mark.usefixtures("upstream_transport")``."""
    for plugin in ("OPENAI", "GROQ", "ANTHROPIC"):
        monkeypatch.setenv(f"HOOKGATE_{plugin}__TRANSPORT", request.param)
    return request.param


def openai_upstream(emulator: OpenAIEmulator, *, pipeline: str = '"openai"', extra: str = "") -> str:
    """A plugins.toml whose openai provider talks to the emulator."""
    return f"""
        [gateway]
        pipeline = [{pipeline}]

        [plugins.openai]
        base_url = "{emulator.base_url}"
        api_key = "sk-upstream-secret-123"
        models = ["gpt-4o-mini"]
        {extra}
    """


async def eventually(condition: Callable[[], bool], timeout: float = 2.0) -> None:
    """Server-side bookkeeping (a cancellation, a log line) lands a loop turn or two after the
    client sees its answer; wait for it rather than sleeping a fixed time."""
    import asyncio

    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


def provider_plugin(model: str, complete: Callable[[Any], Awaitable[Any]]) -> type:
    """A plugin class registering a provider named and serving ``model``, answering with
    ``await complete(ctx)``; pass it to the ``gateway`` fixture's ``local``."""
    from hookgate import hookimpl

    class LocalProvider:
        name = model

        def __init__(self, config: Any) -> None:
            pass

        @hookimpl
        def register_providers(self, register):
            register(self)

        def models(self) -> list[str]:
            return [model]

        async def complete(self, ctx):
            return await complete(ctx)

    return LocalProvider


def completion(content: str, *, model: str = "test", finish_reason: str = "stop"):
    """A minimal valid ``chat.completion`` answer."""
    from hookgate import Completion

    return Completion({
        "id": "chatcmpl-test", "object": "chat.completion", "created": 0, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content, "refusal": None},
                     "finish_reason": finish_reason, "logprobs": None}],
    })


# ----------------------------------------------------------------------------- real servers ---


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A real Redis: ``$REDIS_URL`` when set, else a server started for this test session.

    Tests sharing it must namespace their keys with the ``redis_prefix`` fixture and never flush.
    """
    if os.environ.get("REDIS_URL"):
        yield os.environ["REDIS_URL"]
        return
    server = RedisServer().start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def pgvector_url() -> Iterator[str]:
    """A PostgreSQL with the pgvector extension: ``$PGVECTOR_URL`` when set, else one started for
    this test session (tests/servers.py ``PgvectorServer``). Tests use schemas of their own."""
    if os.environ.get("PGVECTOR_URL"):
        yield os.environ["PGVECTOR_URL"]
        return
    server = PgvectorServer().start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def redis_prefix() -> str:
    """A key prefix no other test uses."""
    return f"hgtest:{uuid.uuid4().hex[:12]}"


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A redis-server owned by this test alone, which it may kill and restart."""
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def gateway_process() -> Iterator[Callable[..., GatewayProcess]]:
    """Start ``hookgate serve`` processes from config text; all are stopped after the test."""
    started: list[GatewayProcess] = []

    def start(config_text: str, **kwargs: Any) -> GatewayProcess:
        gateway = start_gateway(textwrap.dedent(config_text), **kwargs)
        started.append(gateway)
        return gateway

    yield start
    for gateway in started:
        gateway.stop()


def pipeline_config(pipeline: list[str], **sections: dict[str, Any]) -> str:
    """plugins.toml text for a pipeline and its plugin tables."""
    lines = ["[gateway]", f"pipeline = {toml_value(pipeline)}"]
    for name, values in sections.items():
        lines.append(f"[plugins.{name}]")
        lines.extend(f"{key} = {toml_value(value)}" for key, value in values.items())
    return "\n".join(lines) + "\n"


def toml_value(value: Any) -> str:
    """A TOML literal for strings, numbers, booleans, lists and (inline) tables."""
    import json

    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(str(k))} = {toml_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return json.dumps(value)


def upstream_config(emulator: OpenAIEmulator, pipeline: list[str], **sections: dict[str, Any]) -> str:
    """A pipeline ending in the openai provider pointed at the emulator (model gpt-4o-mini)."""
    openai_section = {"base_url": emulator.base_url, "api_key": "sk-upstream-secret-123", "models": ["gpt-4o-mini"]}
    return pipeline_config([*pipeline, "openai"], **sections, openai=openai_section)


CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello reliable world"}]}


# --------------------------------------------------------------------- no secret in any log ---

RAW_KEY = re.compile(r"\b(?:sk|sk-ant|gsk|tk|hg)-[A-Za-z0-9_\-]{3,}")
"""What the tests' gateway and provider keys look like (sk-…, gsk-…, hg-… gateway keys)."""

_LEAKS: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Scan everything a test's gateway logged (structlog writes to the captured output)."""
    for section, content in report.sections:
        if section.startswith("Captured") and (match := RAW_KEY.search(content)):
            _LEAKS.append(f"{report.nodeid} [{section}]: ...{content[max(0, match.start() - 80):match.end() + 20]}...")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """After the whole suite, no log line may contain a raw gateway or provider key: neither in
    the output of in-process gateways nor in the stderr of any gateway process the tests ran."""
    for command, logged in PROCESS_LOGS:
        if match := RAW_KEY.search(logged):
            _LEAKS.append(f"{command}: ...{logged[max(0, match.start() - 80):match.end() + 20]}...")
    if _LEAKS:
        print("\nRAW KEYS IN LOGS (a secret reached a log line):\n" + "\n".join(_LEAKS[:20]), file=sys.stderr)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
