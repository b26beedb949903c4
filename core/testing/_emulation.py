"""What every provider emulator in :mod:`hookgate.testing` does the same way.

Why it exists: the OpenAI and Anthropic emulators differ in their wire format (bodies, SSE
events, error shapes) but must agree on everything a test drives or asserts on: how faults are
scripted, how calls are counted and recorded, how a server is started and stopped, and how a
connection is dropped or a stream stalled. Keeping that in one place is what lets a test written
against one emulator be ported to the other by changing only the wire-level expectations.

Private: plugin authors import from ``hookgate.testing.openai_emulator`` or
``hookgate.testing.anthropic_emulator``, which re-export the public names below.
"""
from __future__ import annotations

import argparse
import asyncio
import functools
import itertools
import re
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, ClassVar, Final, Generic, Protocol, Self, TypeVar, final

import orjson
from aiohttp import web
from multidict import CIMultiDict

__all__ = [
    "NEVER_ENDS",
    "REPLY_PREFIX",
    "SSE_HEADERS",
    "CommandLine",
    "Emulator",
    "EmulatorStats",
    "FaultFields",
    "RecordedRequest",
    "SettingsFields",
    "check_fault_counts",
    "check_fault_outcome",
    "count_tokens",
    "drop_connection",
    "parse_command_line",
    "serve_until_interrupted",
    "stream_events",
    "tool_input_for",
    "tools_to_call",
    "unstreamed_fault_response",
]

REPLY_PREFIX: Final = "emulated: "
"""Prepended to the last user message to form the reply, so a test can tell the emulator's
answer from an echo of its own request. The same for every emulator, so a benchmark or a
translating provider sees the same text whichever upstream it talks to."""

NEVER_ENDS: Final = float("inf")
"""Seconds to sleep for a call that must never answer (``hang``, ``stall_after``)."""

SSE_HEADERS: Final[Mapping[str, str]] = MappingProxyType(
    {"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"}
)
"""Headers of every streamed answer, before the emulator's own and the fault's."""


def stream_pieces(text: str, words: Callable[[str], list[str]], piece_chars: int) -> list[str]:
    """The pieces a streamed text is sent in: ``words(text)`` (one per word, the default), or,
    with ``piece_chars`` > 0, slices of that many characters, so that a test can have a word (a
    placeholder, a card number…) arrive cut across chunks. They join back to ``text``."""
    if piece_chars <= 0 or not text:
        return words(text)
    return [text[i : i + piece_chars] for i in range(0, len(text), piece_chars)]


def count_tokens(text: str) -> int:
    """Emulated token count: whitespace-separated words, so tests can predict usage exactly."""
    return len(text.split())


# ---------------------------------------------------------------------------------------------
# Tool calls: the same rule in every API, so a translated conversation calls the same tools
# ---------------------------------------------------------------------------------------------


def tool_input_for(schema: Mapping[str, Any], prompt: str) -> dict[str, Any]:
    """The deterministic input the emulator calls a tool with: each ``required`` property of
    ``schema`` (every property when none is required) gets its ``enum``'s first value, or by
    type: string → ``prompt``, integer → the prompt's word count, number → the same as a float,
    boolean → true, array → [], object → {}; other types → null."""
    properties = schema.get("properties") or {}
    names = schema.get("required") or list(properties)
    values: dict[str, Any] = {}
    for name in names:
        spec = properties.get(name) or {}
        kind = spec.get("type")
        if isinstance(kind, list):
            kind = next((k for k in kind if k != "null"), None)
        if spec.get("enum"):
            values[name] = spec["enum"][0]
        elif kind == "string":
            values[name] = prompt
        elif kind == "integer":
            values[name] = count_tokens(prompt)
        elif kind == "number":
            values[name] = float(count_tokens(prompt))
        elif kind == "boolean":
            values[name] = True
        elif kind == "array":
            values[name] = []
        elif kind == "object":
            values[name] = {}
        else:
            values[name] = None
    return values


_ToolT = TypeVar("_ToolT")


def tools_to_call(
    tools: Sequence[tuple[str, _ToolT]], prompt: str, *, choice: str, forced: str | None = None, parallel: bool = True
) -> list[tuple[str, _ToolT]]:
    """The ``(name, tool)`` pairs an answer calls, in the order of ``tools``; empty for a text
    answer. ``choice`` is ``"auto"`` (call the tools the prompt names as words), ``"any"``
    (those, or else the first tool), ``"tool"`` (the one named ``forced``) or ``"none"``;
    ``parallel=False`` keeps only the first."""
    if not tools or choice == "none":
        return []
    if choice == "tool":
        return [pair for pair in tools if pair[0] == forced][:1]
    named = [pair for pair in tools if re.search(rf"\b{re.escape(pair[0])}\b", prompt)]
    if not named and choice == "any":
        named = list(tools[:1])
    return named if parallel else named[:1]


# ---------------------------------------------------------------------------------------------
# Faults and settings: the fields every emulator's Fault and EmulatorSettings have
# ---------------------------------------------------------------------------------------------


class FaultFields(Protocol):
    """What the shared machinery reads from an emulator's ``Fault``; each emulator's own class
    adds the fields its API needs (e.g. Anthropic's ``stream_error_after``)."""

    @property
    def delay(self) -> float: ...
    @property
    def chunk_delay(self) -> float: ...
    @property
    def status(self) -> int | None: ...
    @property
    def retry_after(self) -> float | None: ...
    @property
    def headers(self) -> Mapping[str, str]: ...
    @property
    def hang(self) -> bool: ...
    @property
    def drop_after(self) -> int | None: ...
    @property
    def stall_after(self) -> int | None: ...
    @property
    def malformed(self) -> bool: ...


_FaultT = TypeVar("_FaultT", bound=FaultFields)
_FaultT_co = TypeVar("_FaultT_co", bound=FaultFields, covariant=True)


class SettingsFields(Protocol[_FaultT_co]):
    """What the shared machinery reads from an emulator's ``EmulatorSettings``."""

    @property
    def latency(self) -> float: ...
    @property
    def chunk_latency(self) -> float: ...
    @property
    def fault(self) -> _FaultT_co | None: ...
    @property
    def record_requests(self) -> bool: ...


_SettingsT = TypeVar("_SettingsT", bound=SettingsFields[Any])
_Answer = Callable[[web.Request, "EmulatorStats"], Awaitable[web.StreamResponse]]


def check_fault_outcome(fault: FaultFields, outcomes: Sequence[str]) -> None:
    """Reject a fault with more than one of ``outcomes`` (its attribute names, in the order the
    error message lists them), a negative delay, or a status that is not an HTTP error.

    An outcome counts as set unless it is ``None`` or ``False``, so ``drop_after=0`` is set.
    Each ``Fault.__post_init__`` calls this first, then its own checks of the error details,
    then :func:`check_fault_counts`, so a fault with several problems reports the same one
    whichever emulator it is for.
    """
    chosen = [name for name in outcomes if getattr(fault, name) is not None and getattr(fault, name) is not False]
    if len(chosen) > 1:
        raise ValueError(f"a Fault takes at most one of {', '.join(outcomes)}")
    if fault.delay < 0 or fault.chunk_delay < 0:
        raise ValueError("delays must be >= 0")
    if fault.status is not None and not 400 <= fault.status <= 599:
        raise ValueError(f"status must be an HTTP error (400-599), got {fault.status}")


def check_fault_counts(fault: FaultFields, counts: Sequence[str]) -> None:
    """Reject a negative ``retry_after`` or a negative value of any attribute named in
    ``counts`` (event counts such as ``drop_after``)."""
    if fault.retry_after is not None and fault.retry_after < 0:
        raise ValueError("retry_after must be >= 0")
    for name in counts:
        value = getattr(fault, name)
        if value is not None and value < 0:
            raise ValueError(f"{name} must be >= 0")


# ---------------------------------------------------------------------------------------------
# Observability: what an emulator saw, for assertions
# ---------------------------------------------------------------------------------------------


@final
@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One API call's request as received, to assert on what the gateway sent upstream."""

    headers: Mapping[str, str]
    """Case-insensitive: ``headers["authorization"] == "Bearer sk-test"``."""
    body: Any
    """The decoded JSON body, or None when it was not JSON."""
    received_at: float = 0.0
    """``time.monotonic()`` when the call arrived: to assert on the spacing of retries."""


@final
@dataclass(slots=True)
class EmulatorStats:
    """Counters of an emulator's API calls (every ``POST``: chat completions, responses,
    embeddings, Messages, count_tokens…); lookups (``GET …/models``, stored responses) are not
    counted."""

    calls: int = 0
    """Calls received, whatever their outcome."""
    in_flight: int = 0
    """Calls whose handler is still running (a stream counts until its last chunk is sent)."""
    peak_in_flight: int = 0
    """Highest ``in_flight`` seen: proves a concurrency limit held, or that calls overlapped."""
    cancelled: int = 0
    """Calls abandoned by the client while in flight (disconnect or timeout), not counting
    connections the emulator dropped itself. Calls still hanging when the emulator's ``serve()``
    exits are cancelled by the shutdown and counted here too."""
    requests: list[RecordedRequest] = field(default_factory=list)
    """Every call in arrival order, when ``EmulatorSettings.record_requests`` is on."""
    calls_by_path: dict[str, int] = field(default_factory=dict)
    """Calls received per counted endpoint (``"/v1/embeddings"``…): one key per route, so it
    stays as small as the API."""


# ---------------------------------------------------------------------------------------------
# The emulator: scripting, counting, serving
# ---------------------------------------------------------------------------------------------


class Emulator(ABC, Generic[_FaultT, _SettingsT]):
    """An upstream with scripted faults and call counters; a subclass supplies the wire format.

    One instance holds its settings, script and stats; every app it makes shares them, so a test
    can serve it, point a client at :attr:`base_url`, and inspect :attr:`stats` afterwards.
    A subclass sets :attr:`_CALL_PATH` and implements :meth:`_answer`; one serving more counted
    endpoints overrides :meth:`_counted_routes`, and adds uncounted ones in :meth:`_add_routes`.
    """

    __slots__ = ("_api_prefix", "_base_path", "_base_url", "_ids", "_models_body", "_script", "settings", "stats")

    _CALL_PATH: ClassVar[str]
    """The counted endpoint under the API prefix, e.g. ``"/chat/completions"``."""

    def __init__(self, settings: _SettingsT, *, models_body: bytes, api_prefix: str, base_path: str) -> None:
        """``models_body`` is the encoded ``GET …/models`` answer (the list never changes, so it
        is encoded once); ``api_prefix`` is where the routes live and ``base_path`` what
        :attr:`base_url` ends with."""
        self._api_prefix, self._base_path = api_prefix, base_path
        self.settings: _SettingsT = settings
        self.stats: EmulatorStats = EmulatorStats()
        self._script: deque[_FaultT | None] = deque()
        self._ids = itertools.count(1)
        self._models_body = models_body
        self._base_url: str | None = None

    # -- Scripting -----------------------------------------------------------------------------

    def script(self, *behaviours: _FaultT | None) -> None:
        """Queue one behaviour per upcoming API call (any counted endpoint), in order.

        ``None`` means "answer normally" (settings latency still applies, the standing
        ``settings.fault`` does not). Once the queue is used up, calls follow ``settings``
        again. Calling it again appends to what is left of the queue.
        """
        self._script.extend(behaviours)

    @property
    def scripted_remaining(self) -> int:
        """Scripted behaviours not yet consumed; 0 proves every scripted call happened."""
        return len(self._script)

    def reset(self) -> None:
        """Drop the remaining script and zero the counters, keeping settings. Calls still in
        flight stay counted in ``in_flight`` so the counter cannot go negative."""
        self._script.clear()
        # In place: handlers in flight hold this object and will still decrement it.
        stats = self.stats
        stats.calls = stats.cancelled = 0
        stats.peak_in_flight = stats.in_flight
        stats.requests.clear()
        stats.calls_by_path.clear()

    # -- Serving -------------------------------------------------------------------------------

    def make_app(self) -> web.Application:
        """A fresh aiohttp application backed by this emulator's settings, script and stats."""
        app = web.Application()
        for path, answer in self._counted_routes():
            full = f"{self._api_prefix}{path}"
            app.router.add_post(full, functools.partial(self._count_call, full, answer))
        app.router.add_get(f"{self._api_prefix}/models", self._list_models)
        self._add_routes(app, self._api_prefix)
        return app

    def _counted_routes(self) -> Sequence[tuple[str, _Answer]]:
        """``(path under the API prefix, handler)`` of every POST endpoint that is an API call:
        counted, recorded, scripted with faults."""
        return [(self._CALL_PATH, self._answer)]

    def _add_routes(self, app: web.Application, prefix: str) -> None:
        """Add endpoints that are not API calls (lookups such as ``GET …/models/{id}``)."""

    @asynccontextmanager
    async def serve(self, *, host: str = "127.0.0.1", port: int = 0, shutdown_timeout: float = 0.5) -> AsyncIterator[Self]:
        """Serve on ``host`` (a free port by default) for the duration of the block.

        Handler cancellation is on so a client that gives up is seen as a cancelled call.
        ``shutdown_timeout`` bounds how long leaving the block waits for calls still in flight
        (a hanging call would otherwise hold the exit for aiohttp's default 60 s).
        """
        runner = web.AppRunner(
            self.make_app(), handler_cancellation=True, access_log=None, shutdown_timeout=shutdown_timeout
        )
        await runner.setup()
        try:
            site = web.TCPSite(runner, host, port)
            await site.start()
            bound_host, bound_port = runner.addresses[0][:2]
            if ":" in bound_host:  # IPv6 literals are bracketed in URLs
                bound_host = f"[{bound_host}]"
            self._base_url = f"http://{bound_host}:{bound_port}{self._base_path}"
            yield self
        finally:
            self._base_url = None
            await runner.cleanup()

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT`` plus the emulator's base path while inside :meth:`serve`:
        what the provider's SDK takes as ``base_url`` (``…/v1`` for OpenAI's; the bare host for
        Anthropic's and Groq's, which add their API path themselves)."""
        if self._base_url is None:
            raise RuntimeError("base_url exists only inside `async with emulator.serve()`")
        return self._base_url

    # -- Handlers ------------------------------------------------------------------------------

    async def _list_models(self, request: web.Request) -> web.Response:
        return web.Response(body=self._models_body, content_type="application/json")

    async def _count_call(self, path: str, answer: _Answer, request: web.Request) -> web.StreamResponse:
        """Count the call and its time in flight around its handler."""
        stats = self.stats
        stats.calls += 1
        stats.calls_by_path[path] = stats.calls_by_path.get(path, 0) + 1
        stats.in_flight += 1
        if stats.in_flight > stats.peak_in_flight:
            stats.peak_in_flight = stats.in_flight
        try:
            return await answer(request, stats)
        except asyncio.CancelledError:
            # aiohttp cancels the handler when the client disconnects (handler_cancellation).
            stats.cancelled += 1
            raise
        finally:
            stats.in_flight -= 1

    @abstractmethod
    async def _answer(self, request: web.Request, stats: EmulatorStats) -> web.StreamResponse:
        """Answer one counted call in the emulated API's wire format, usually by way of
        :meth:`_receive`, :func:`unstreamed_fault_response` and :func:`stream_events`."""

    async def _receive(
        self, request: web.Request, stats: EmulatorStats, settings: _SettingsT
    ) -> tuple[Any, _FaultT | None]:
        """Read and record the request, pick this call's fault and wait out its delay, and never
        return for a ``hang`` fault: what is left (status, validation, the answer) is the
        subclass's. ``settings`` is the object read at the start of the call, so a test that
        replaces ``emulator.settings`` mid-call does not split one call across two settings.

        A ``hang`` fault is waited on here, before the subclass looks at ``status``; a fault
        takes only one of the two, so the order cannot be seen.
        """
        raw = await request.read()
        try:
            body: Any = orjson.loads(raw)
        except orjson.JSONDecodeError:
            body = None
        if settings.record_requests:
            stats.requests.append(RecordedRequest(CIMultiDict(request.headers), body, time.monotonic()))

        fault: _FaultT | None = self._script.popleft() if self._script else settings.fault
        delay = settings.latency + (fault.delay if fault else 0.0)
        if delay:
            await asyncio.sleep(delay)
        if fault is not None and fault.hang:
            await asyncio.sleep(NEVER_ENDS)
        return body, fault


# ---------------------------------------------------------------------------------------------
# Answering under a fault
# ---------------------------------------------------------------------------------------------


def drop_connection(request: web.Request) -> None:
    """Close the socket under the response. ``close`` (not ``abort``) flushes what was already
    written, so the client gets exactly the chunks sent before the drop."""
    transport = request.transport
    if transport is not None:
        transport.close()


async def unstreamed_fault_response(
    request: web.Request, fault: FaultFields, malformed_body: bytes
) -> web.Response | None:
    """How a non-streaming call answers a drop (no response at all), stall (hangs like
    ``hang``) or malformed fault (``malformed_body`` with status 200); None for any other fault,
    which the caller answers itself."""
    if fault.drop_after is not None:
        drop_connection(request)
        return web.Response()
    if fault.stall_after is not None:
        await asyncio.sleep(NEVER_ENDS)
    if fault.malformed:
        return web.Response(body=malformed_body, content_type="application/json", headers=fault.headers)
    return None


async def stream_events(
    request: web.Request,
    response: web.StreamResponse,
    stats: EmulatorStats,
    events: Sequence[bytes],
    *,
    settings: SettingsFields[Any],
    fault: FaultFields | None,
    malformed_event: bytes,
) -> web.StreamResponse:
    """Send ``events`` on ``response`` (not yet prepared, its headers set by the caller) as an
    SSE stream, paced by the settings' and fault's chunk delays, and apply the fault's drop,
    stall or garbage (``malformed_event`` alone instead of the stream).

    A fault the emulator expresses in the events themselves (Anthropic's in-stream ``error``)
    is applied by the caller to ``events`` first.
    """
    chunk_gap = settings.chunk_latency + (fault.chunk_delay if fault else 0.0)
    cut = None if fault is None else fault.drop_after if fault.drop_after is not None else fault.stall_after
    try:
        await response.prepare(request)
        if fault is not None and fault.malformed:
            await response.write(malformed_event)
            return response
        if chunk_gap == 0 and cut is None:
            # The benchmark fast path: the whole stream in one write.
            await response.write(b"".join(events))
            return response
        for index, event in enumerate(events[:cut]):
            if index and chunk_gap:
                await asyncio.sleep(chunk_gap)
            await response.write(event)
        if fault is not None and fault.drop_after is not None:
            drop_connection(request)
        elif fault is not None and fault.stall_after is not None:
            await asyncio.sleep(NEVER_ENDS)
    except ConnectionResetError:
        # Without handler cancellation a vanished client surfaces on the next write instead.
        stats.cancelled += 1
    return response


# ---------------------------------------------------------------------------------------------
# Command line: a standalone upstream for benchmarks and manual tests
# ---------------------------------------------------------------------------------------------


@final
@dataclass(frozen=True, slots=True)
class CommandLine:
    """The options every emulator's ``main`` takes."""

    host: str
    port: int
    latency: float
    """Seconds before each response (``EmulatorSettings.latency``)."""
    chunk_latency: float
    """Seconds between stream chunks or events (``EmulatorSettings.chunk_latency``)."""


def parse_command_line(
    argv: Sequence[str] | None, *, prog: str, description: str, default_port: int, chunk_unit: str
) -> CommandLine:
    """Parse ``argv`` (``sys.argv`` when None); ``chunk_unit`` names what ``--chunk-latency``
    separates in the emulated API's streams (``"chunks"``, ``"events"``) in the help text."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=default_port)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before each response")
    parser.add_argument("--chunk-latency", type=float, default=0.0, help=f"seconds between stream {chunk_unit}")
    args = parser.parse_args(argv)
    return CommandLine(host=args.host, port=args.port, latency=args.latency, chunk_latency=args.chunk_latency)


def serve_until_interrupted(app: web.Application, *, host: str, port: int, banner: str) -> None:
    """Serve ``app`` until interrupted, on uvloop when the ``fast`` extra is installed (so a
    benchmark measures the gateway, not the emulator), printing ``banner`` once listening."""
    loop: asyncio.AbstractEventLoop | None = None
    try:
        import uvloop  # the `fast` extra

        loop = uvloop.new_event_loop()
    except ImportError:
        pass
    web.run_app(
        app,
        host=host,
        port=port,
        handler_cancellation=True,
        access_log=None,
        loop=loop,
        print=lambda _: print(banner, flush=True),
    )
