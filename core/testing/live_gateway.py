"""A real gateway on a local port, served from an event loop of its own in a background thread.

Why a thread: a test of an application or of a plugin should not have to share, configure or
even have an event loop to talk to a gateway. Served from its own loop, the gateway is an
ordinary HTTP server as far as the test is concerned: a synchronous test calls it with
``openai.OpenAI``, an async test (pytest-asyncio in strict or auto mode, anyio, or none of them)
with ``openai.AsyncOpenAI``, and no test's loop, loop scope or asyncio mode has any say in the
gateway's life. The pytest plugin (:mod:`hookgate.testing.pytest_plugin`) is built on this; it
also works without pytest::

    with EventLoopThread() as loop:
        gateway = LiveGateway.start({"gateway": {"pipeline": ["mock"]}}, loop=loop, workdir=tmp)
        print(gateway.openai().chat.completions.create(model="mock", messages=[...]))
        gateway.stop()

The gateway runs exactly as ``hookgate serve`` would run it (its app factory, plugin start-up
and shutdown, handler cancellation on client disconnect), bound to 127.0.0.1 on a free port.
"""
from __future__ import annotations

import asyncio
import json
import math
import textwrap
import threading
import tomllib
from collections.abc import Awaitable, Coroutine, Mapping
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from os import PathLike
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Final, Self, TypeVar, final

if TYPE_CHECKING:
    import anthropic
    import openai
    from aiohttp import web

__all__ = ["DEFAULT_API_KEY", "EventLoopThread", "GatewayConfigSource", "LiveGateway", "config_toml"]

T = TypeVar("T")

DEFAULT_API_KEY: Final = "hookgate-test"
"""The key SDK clients send unless told otherwise (the gateway accepts any key without an auth
plugin); deliberately not shaped like a provider key, so no secret scanner flags test output."""

GatewayConfigSource = str | Mapping[str, Any] | PathLike[str]
"""A plugins.toml as text, as a dict of its tables, or as the path of a file."""

_SHUTDOWN_SECONDS: Final = 2.0
"""How long stopping a gateway waits for requests still in flight (a hanging test call must not
hold the test run for aiohttp's default minute)."""


@final
class EventLoopThread:
    """An asyncio event loop running forever in a daemon thread, until :meth:`stop`.

    Everything started on it (gateways, emulators) lives on this loop; tests hand it coroutines
    with :meth:`run` and get their results back. One per test session is enough: servers on it
    are independent of each other.
    """

    __slots__ = ("_loop", "_thread")

    def __init__(self, name: str = "hookgate-test-loop") -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=name, daemon=True)

    def start(self) -> Self:
        self._thread.start()
        return self

    def run(self, coroutine: Coroutine[Any, Any, T], *, timeout: float | None = 60.0) -> T:
        """Run ``coroutine`` on the loop and return its result (or raise its exception).

        Blocks the calling thread, so never call it from a coroutine already running on this
        loop. On ``timeout`` the coroutine is cancelled and :class:`TimeoutError` raised.
        """
        if threading.current_thread() is self._thread:
            raise RuntimeError("EventLoopThread.run() was called from its own loop; await the coroutine instead")
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        try:
            return future.result(timeout)
        except TimeoutError:
            future.cancel()
            raise TimeoutError(f"the background event loop did not finish within {timeout} s") from None

    def enter(self, context: AbstractAsyncContextManager[T], stack: AsyncExitStack) -> T:
        """Enter an async context manager (``emulator.serve()``) on the loop; ``stack`` exits it
        with ``loop.run(stack.aclose())``."""
        return self.run(stack.enter_async_context(context))

    def stop(self) -> None:
        """Cancel what is still running on the loop, stop it and close it. Idempotent."""
        if self._loop.is_closed():
            return
        if self._thread.is_alive():
            self.run(_cancel_all_tasks(), timeout=10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        self._loop.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


async def _cancel_all_tasks() -> None:
    current = asyncio.current_task()
    tasks = [task for task in asyncio.all_tasks() if task is not current]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


@final
class LiveGateway:
    """A gateway app serving on ``127.0.0.1`` from an :class:`EventLoopThread`.

    SDK clients made by its methods are bound to it, never retry (``max_retries=0``: a scripted
    429 reaches the test at once) and are closed by :meth:`stop`.
    """

    __slots__ = ("_clients", "_runner", "app", "loop", "url")

    def __init__(self, app: web.Application, runner: web.AppRunner, url: str, loop: EventLoopThread) -> None:
        self.app = app
        """The aiohttp application. It runs on :attr:`loop`, not the test's: read its state, and
        use :meth:`run` for anything that must happen on its loop."""
        self.loop = loop
        self.url = url
        """``http://127.0.0.1:PORT``."""
        self._runner = runner
        self._clients: list[Any] = []

    @classmethod
    def start(
        cls,
        config: GatewayConfigSource,
        *,
        loop: EventLoopThread,
        workdir: Path,
        plugins: Mapping[str, type | ModuleType] | None = None,
    ) -> LiveGateway:
        """Validate ``config`` as ``hookgate serve`` would, start the app and return once it listens.

        :param config: plugins.toml text (dedented first), a dict of its tables (written to
            ``workdir/plugins.toml``), or the path of a file.
        :param plugins: plugins that are not installed, by the name the pipeline lists them
            under (a plugin class, or a module of hook functions): the plugin under test.
        :raises hookgate.config.ConfigError: the configuration is invalid (file, section, key).
        """
        from aiohttp import web

        from hookgate.config import load_config
        from hookgate.registry import InstalledPlugin, installed_plugins
        from hookgate.server import create_app

        path = _config_path(config, workdir)
        available = installed_plugins()
        for name, target in (plugins or {}).items():
            available[name] = InstalledPlugin.local(name, target)
        gateway_config = load_config(path, available=available)

        async def serve() -> tuple[web.Application, web.AppRunner, str]:
            # Built on the loop that serves it, so plugin objects made in their constructors
            # (locks, queues, clients) belong to that loop.
            app = create_app(gateway_config)
            runner = web.AppRunner(app, handler_cancellation=True, access_log=None, shutdown_timeout=_SHUTDOWN_SECONDS)
            await runner.setup()
            try:
                site = web.TCPSite(runner, "127.0.0.1", 0)
                await site.start()
            except BaseException:
                await runner.cleanup()
                raise
            host, port = runner.addresses[0][:2]
            return app, runner, f"http://{host}:{port}"

        app, runner, url = loop.run(serve())
        return cls(app, runner, url, loop)

    @property
    def openai_base_url(self) -> str:
        """What an OpenAI SDK takes as ``base_url``: :attr:`url` + ``/v1``."""
        return self.url + "/v1"

    def run(self, coroutine: Coroutine[Any, Any, T], *, timeout: float | None = 60.0) -> T:
        """Run ``coroutine`` on the gateway's loop (e.g. to read a plugin's Redis-backed state)."""
        return self.loop.run(coroutine, timeout=timeout)

    def openai(self, *, api_key: str = DEFAULT_API_KEY, **options: Any) -> openai.OpenAI:
        """A synchronous ``openai.OpenAI`` bound to this gateway; ``options`` go to its constructor."""
        import openai

        return self._keep(openai.OpenAI(base_url=self.openai_base_url, api_key=api_key, **{"max_retries": 0, **options}))

    def async_openai(self, *, api_key: str = DEFAULT_API_KEY, **options: Any) -> openai.AsyncOpenAI:
        """An ``openai.AsyncOpenAI`` bound to this gateway, usable from any event loop.

        It keeps no idle connection between requests, so it is bound to no loop: a test may use
        it from whichever loop its async plugin runs, and :meth:`stop` can close it from here.
        (``async with gateway.async_openai() as client`` closes it in the test's own loop.)
        """
        import openai

        options.setdefault("http_client", openai.DefaultAsyncHttpxClient(limits=_loop_free_limits()))
        return self._keep(openai.AsyncOpenAI(base_url=self.openai_base_url, api_key=api_key, **{"max_retries": 0, **options}))

    def anthropic(self, *, api_key: str = DEFAULT_API_KEY, **options: Any) -> anthropic.Anthropic:
        """A synchronous ``anthropic.Anthropic`` bound to this gateway (its Messages surface)."""
        import anthropic

        return self._keep(anthropic.Anthropic(base_url=self.url, api_key=api_key, **{"max_retries": 0, **options}))

    def async_anthropic(self, *, api_key: str = DEFAULT_API_KEY, **options: Any) -> anthropic.AsyncAnthropic:
        """An ``anthropic.AsyncAnthropic`` bound to this gateway, usable from any event loop
        (see :meth:`async_openai`)."""
        import anthropic

        options.setdefault("http_client", anthropic.DefaultAsyncHttpxClient(limits=_loop_free_limits()))
        return self._keep(anthropic.AsyncAnthropic(base_url=self.url, api_key=api_key, **{"max_retries": 0, **options}))

    def stop(self) -> None:
        """Close the clients made here, then stop the app (plugins shut down). Idempotent."""
        clients, self._clients = self._clients, []
        for client in clients:
            close = client.close()
            if isinstance(close, Awaitable):
                self.loop.run(_awaited(close), timeout=10)
        self.loop.run(self._runner.cleanup(), timeout=_SHUTDOWN_SECONDS + 30)

    def _keep(self, client: T) -> T:
        self._clients.append(client)
        return client


async def _awaited(awaitable: Awaitable[Any]) -> None:
    await awaitable


def _loop_free_limits() -> Any:
    import httpx2

    return httpx2.Limits(max_connections=100, max_keepalive_connections=0)


def _config_path(config: GatewayConfigSource, workdir: Path) -> Path:
    if isinstance(config, PathLike):
        return Path(config)
    text = textwrap.dedent(config) if isinstance(config, str) else config_toml(config)
    path = workdir / "plugins.toml"
    path.write_text(text)
    return path


def config_toml(tables: Mapping[str, Any]) -> str:
    """plugins.toml text for a dict of its tables, e.g.
    ``{"gateway": {"pipeline": ["mock"]}, "plugins": {"mock": {"models": ["gpt-4o"]}}}``.

    Tables nest as dicts, values are strings, numbers, booleans and lists (TOML has no null:
    leave such a key out). Reading the text back gives ``tables`` again, or :class:`ValueError`.
    """
    lines: list[str] = []
    _emit_table(lines, (), tables)
    text = "\n".join(lines) + "\n"
    if tomllib.loads(text) != _plain(tables):
        raise ValueError("the configuration does not survive TOML (a key or value TOML cannot hold?)")
    return text


def _emit_table(lines: list[str], path: tuple[str, ...], table: Mapping[str, Any]) -> None:
    scalars = {k: v for k, v in table.items() if not isinstance(v, Mapping)}
    tables = {k: v for k, v in table.items() if isinstance(v, Mapping)}
    if path and (scalars or not tables):
        lines.append("[" + ".".join(_toml_key(part) for part in path) + "]")
    for key, value in scalars.items():
        lines.append(f"{_toml_key(key)} = {_toml_value(value, (*path, key))}")
    for key, value in tables.items():
        _emit_table(lines, (*path, key), value)


def _toml_key(key: Any) -> str:
    return _toml_string(str(key))


def _toml_value(value: Any, path: tuple[str, ...]) -> str:
    if value is None:
        raise ValueError(f"{'.'.join(path)}: TOML has no null; leave the key out")
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            raise ValueError(f"{'.'.join(path)}: NaN is not a usable setting")
        return ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{_toml_key(k)} = {_toml_value(v, (*path, str(k)))}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v, path) for v in value) + "]"
    raise ValueError(f"{'.'.join(path)}: {type(value).__name__} has no TOML form")


def _toml_string(text: str) -> str:
    # A JSON string is a TOML basic string once non-ASCII stays literal and DEL is escaped.
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value
