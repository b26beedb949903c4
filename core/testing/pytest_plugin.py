"""hookgate's pytest plugin: gateways, SDK clients, provider emulators and Redis as fixtures.

Installed with hookgate (entry point ``pytest11``: ``hookgate``), so any project that installs
hookgate has these fixtures with nothing to configure; ``pytest --fixtures`` lists them.
Reference and examples: docs/testing_plugins.md.

Every fixture is synchronous and works in any test, sync or async, under pytest-asyncio's
strict or auto mode, anyio's plugin, or no async plugin at all: the gateways and emulators run
on an event loop of their own in a background thread (:class:`EventLoopThread`, one per test
session), serving real HTTP on 127.0.0.1, so no test's event loop, loop scope or asyncio mode
matters to them. The async SDK clients keep no idle connections, so they work from whichever
loop the test runs on.

Fixtures (all prefixed ``hookgate_`` so they never collide with a project's own):

``hookgate_config``         the gateway's plugins.toml (text, dict or path); override it
``hookgate_plugins``        plugins that are not installed, by pipeline name; override it
``hookgate_gateway``        a :class:`LiveGateway` built from the two above
``hookgate_start_gateway``  a factory for more gateways in one test
``hookgate_openai``         ``openai.OpenAI`` bound to ``hookgate_gateway``
``hookgate_async_openai``   ``openai.AsyncOpenAI`` bound to ``hookgate_gateway``
``hookgate_anthropic``      ``anthropic.Anthropic`` bound to ``hookgate_gateway``
``hookgate_async_anthropic`` ``anthropic.AsyncAnthropic`` bound to ``hookgate_gateway``
``hookgate_openai_emulator``, ``hookgate_anthropic_emulator``, ``hookgate_groq_emulator``
                            scriptable upstreams (:mod:`hookgate.testing`), served
``hookgate_redis_url``      a real Redis (``$REDIS_URL`` or a ``redis-server`` of its own)
``hookgate_redis_prefix``   a key prefix of the test's own, its keys deleted afterwards
``hookgate_event_loop_thread`` the background loop everything above runs on
"""
from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import AsyncExitStack
from types import ModuleType
from typing import TYPE_CHECKING, Any

import pytest

from .live_gateway import EventLoopThread, GatewayConfigSource, LiveGateway
from .redis_server import INSTALL_HINT, RedisServer, RedisUnavailable, in_ci, reachable

if TYPE_CHECKING:
    import anthropic
    import openai

    from .anthropic_emulator import AnthropicEmulator
    from .openai_emulator import OpenAIEmulator

__all__ = [
    "hookgate_anthropic",
    "hookgate_anthropic_emulator",
    "hookgate_async_anthropic",
    "hookgate_async_openai",
    "hookgate_config",
    "hookgate_event_loop_thread",
    "hookgate_gateway",
    "hookgate_groq_emulator",
    "hookgate_openai",
    "hookgate_openai_emulator",
    "hookgate_plugins",
    "hookgate_redis_prefix",
    "hookgate_redis_url",
    "hookgate_start_gateway",
]

StartGateway = Callable[..., LiveGateway]


# ---------------------------------------------------------------------------------------------
# The loop everything runs on
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def hookgate_event_loop_thread() -> Iterator[EventLoopThread]:
    """The event loop (in a daemon thread) that this session's gateways and emulators run on.

    Started on first use, stopped at the end of the session. ``loop.run(coroutine)`` runs a
    coroutine there and returns its result.
    """
    with EventLoopThread() as loop:
        yield loop


# ---------------------------------------------------------------------------------------------
# Gateways and clients
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def hookgate_config() -> GatewayConfigSource:
    """The plugins.toml ``hookgate_gateway`` is built from: TOML text, a dict of its tables, or a
    path. Default: the ``mock`` provider alone. Override it with a fixture of the same name in a
    conftest.py or test module, or with ``@pytest.mark.parametrize("hookgate_config", [...])``."""
    return {"gateway": {"pipeline": ["mock"]}}


@pytest.fixture
def hookgate_plugins() -> Mapping[str, type | ModuleType]:
    """Plugins that are not installed, by the name ``hookgate_config``'s pipeline lists them
    under (the class or module under test). Default: none. Override it like ``hookgate_config``."""
    return {}


@pytest.fixture
def hookgate_start_gateway(
    hookgate_event_loop_thread: EventLoopThread, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[StartGateway]:
    """A factory: ``hookgate_start_gateway(config, plugins=None)`` starts a :class:`LiveGateway`
    (config as for ``hookgate_config``); every gateway it started stops after the test."""
    started: list[LiveGateway] = []

    def start(config: GatewayConfigSource, *, plugins: Mapping[str, type | ModuleType] | None = None) -> LiveGateway:
        workdir = tmp_path_factory.mktemp("hookgate-gateway")
        gateway = LiveGateway.start(config, loop=hookgate_event_loop_thread, workdir=workdir, plugins=plugins)
        started.append(gateway)
        return gateway

    yield start
    for gateway in reversed(started):
        gateway.stop()


@pytest.fixture
def hookgate_gateway(
    hookgate_start_gateway: StartGateway,
    hookgate_config: GatewayConfigSource,
    hookgate_plugins: Mapping[str, type | ModuleType],
) -> LiveGateway:
    """A gateway serving ``hookgate_config`` (with ``hookgate_plugins``) on 127.0.0.1, in-process.

    ``.url`` is its address, ``.openai_base_url`` what an OpenAI client takes; ``.openai()``,
    ``.async_openai()``, ``.anthropic()``, ``.async_anthropic()`` make more clients bound to it.
    """
    return hookgate_start_gateway(hookgate_config, plugins=hookgate_plugins)


@pytest.fixture
def hookgate_openai(hookgate_gateway: LiveGateway) -> openai.OpenAI:
    """``openai.OpenAI`` bound to ``hookgate_gateway``, with ``max_retries=0``."""
    return hookgate_gateway.openai()


@pytest.fixture
def hookgate_async_openai(hookgate_gateway: LiveGateway) -> openai.AsyncOpenAI:
    """``openai.AsyncOpenAI`` bound to ``hookgate_gateway``, with ``max_retries=0``; usable from
    any event loop (it keeps no idle connection)."""
    return hookgate_gateway.async_openai()


@pytest.fixture
def hookgate_anthropic(hookgate_gateway: LiveGateway) -> anthropic.Anthropic:
    """``anthropic.Anthropic`` bound to ``hookgate_gateway`` (for a pipeline that serves
    Anthropic's Messages API, ``/v1/messages``), with ``max_retries=0``."""
    return hookgate_gateway.anthropic()


@pytest.fixture
def hookgate_async_anthropic(hookgate_gateway: LiveGateway) -> anthropic.AsyncAnthropic:
    """``anthropic.AsyncAnthropic`` bound to ``hookgate_gateway``, with ``max_retries=0``;
    usable from any event loop."""
    return hookgate_gateway.async_anthropic()


# ---------------------------------------------------------------------------------------------
# Provider emulators
# ---------------------------------------------------------------------------------------------


def _served(loop: EventLoopThread, emulator: Any) -> Iterator[Any]:
    stack = AsyncExitStack()
    served = loop.enter(emulator.serve(), stack)
    try:
        yield served
    finally:
        loop.run(stack.aclose(), timeout=30)


@pytest.fixture
def hookgate_openai_emulator(hookgate_event_loop_thread: EventLoopThread) -> Iterator[OpenAIEmulator]:
    """A local OpenAI API (:class:`hookgate.testing.openai_emulator.OpenAIEmulator`), served:
    point a provider at ``.base_url``; script faults with ``.script(Fault(...))``; assert on
    ``.stats``. It runs on the background loop: read ``.stats`` once your call has returned."""
    from .openai_emulator import OpenAIEmulator

    yield from _served(hookgate_event_loop_thread, OpenAIEmulator())


@pytest.fixture
def hookgate_anthropic_emulator(hookgate_event_loop_thread: EventLoopThread) -> Iterator[AnthropicEmulator]:
    """A local Anthropic Messages API (:class:`hookgate.testing.anthropic_emulator.AnthropicEmulator`),
    served; used like ``hookgate_openai_emulator``."""
    from .anthropic_emulator import AnthropicEmulator

    yield from _served(hookgate_event_loop_thread, AnthropicEmulator())


@pytest.fixture
def hookgate_groq_emulator(hookgate_event_loop_thread: EventLoopThread) -> Iterator[OpenAIEmulator]:
    """A local Groq API (:func:`hookgate.testing.groq_emulator.groq_emulator`), served; its
    ``.base_url`` is the bare host, as the groq SDK takes it."""
    from .groq_emulator import groq_emulator

    yield from _served(hookgate_event_loop_thread, groq_emulator())


# ---------------------------------------------------------------------------------------------
# Redis
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def hookgate_redis_url() -> Iterator[str]:
    """A real Redis for this session: ``$REDIS_URL`` when set (it must answer), else a
    ``redis-server`` started on a free port and killed at the end of the session.

    Without ``redis-server`` the test is skipped with the reason, and fails under ``CI=true``.
    Share it safely by keeping every key under ``hookgate_redis_prefix``; never flush it.
    """
    configured = os.environ.get("REDIS_URL")
    if configured:
        if not reachable(configured):
            pytest.fail(f"REDIS_URL is set but nothing answers at its host and port ({INSTALL_HINT})", pytrace=False)
        yield configured
        return
    try:
        server = RedisServer().start()
    except RedisUnavailable as exc:
        if in_ci():
            pytest.fail(f"{exc} (CI=true: a test that needs Redis must not be skipped)", pytrace=False)
        pytest.skip(str(exc))
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def hookgate_redis_prefix(hookgate_redis_url: str) -> Iterator[str]:
    """A key prefix (``hookgate-test:<12 hex>:``) no other test uses; after the test, the keys
    under it, and only those, are deleted."""
    prefix = f"hookgate-test:{uuid.uuid4().hex[:12]}:"
    yield prefix
    import redis

    client = redis.Redis.from_url(hookgate_redis_url)
    try:
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()
