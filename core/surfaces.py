"""API surfaces: the client-facing APIs, each a plugin, all through the same chain.

A **surface** is one API a client calls (OpenAI's chat completions, Anthropic's Messages, OpenAI's
Responses, embeddings…): its routes, how its request becomes the **canonical request** every
plugin sees (``ctx.body``: OpenAI's chat-completions shape for chat-like surfaces, OpenAI's
embeddings request for embeddings…), how a canonical answer is written back in its own shape,
JSON and SSE, and its error shape. A plugin registers surfaces with the ``register_surfaces``
start-up hook; the built-in ones are plugins too (``plugins/surface_*.py``), enabled by
``[gateway] surfaces``.

Because every surface hands the chain a canonical request, the same plugins (keys, limits,
budgets, caches, retries, timeouts, tokens, cost, usage, metrics, traces, logs) apply to all of
them, and a plugin that reads or rewrites content works on every surface. Caches never mix
surfaces: ``ctx.surface`` is part of the cache key.

**Pass-through.** When the upstream speaks the surface's own wire format (an Anthropic client and
an Anthropic upstream), the provider may send the client's *native* request as it is
(``ctx.native``) and return the native answer beside the canonical one (``Completion.native``; a
stream's chunks carry their native events), so nothing the canonical shape cannot express is lost
(thinking blocks and their signatures, citations, cache-control marks). That happens only while
the canonical request is exactly what the surface made of the client's (``native_intact``): as soon
as a plugin rewrites ``ctx.body`` (masking, memory, a model rename with route defaults), the
request is translated from the canonical body instead, so every plugin's change reaches the
upstream.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Literal, Protocol, runtime_checkable

import orjson

from .state import StateKey

if TYPE_CHECKING:
    from aiohttp import web

    from .context import RequestContext
    from .errors import GatewayError
    from .responses import Completion

__all__ = [
    "Surface",
    "OpenAIShapedSurface",
    "OpenAIStream",
    "SurfaceStream",
    "ParsedRequest",
    "ExtraRoute",
    "Kind",
    "CHAT",
    "EMBEDDINGS",
    "COMPLETIONS",
    "native_intact",
    "native_wire",
    "remember_native",
    "NATIVE_EVENTS",
]

Kind = Literal["chat", "embeddings", "completions"]
"""What a canonical request asks for, whatever the surface: a chat answer (OpenAI's chat
completions shape), embeddings (OpenAI's embeddings shape), or a legacy text completion."""

CHAT: Kind = "chat"
EMBEDDINGS: Kind = "embeddings"
COMPLETIONS: Kind = "completions"

NATIVE_EVENTS = "_native"
"""Key of a canonical stream chunk holding the native SSE bytes it was translated from (a
pass-through stream); a surface of the same wire writes those bytes instead of re-rendering."""


@dataclass(frozen=True, slots=True)
class ParsedRequest:
    """What a surface made of a client's request body."""

    canonical: dict[str, Any]
    """The canonical request the chain sees as ``ctx.body``."""
    native: dict[str, Any] | None = None
    """The client's own body, kept for pass-through (None when the surface's wire is the
    canonical one, or the surface never passes through)."""


@dataclass(frozen=True, slots=True)
class ExtraRoute:
    """A route of a surface that does not run the chain (``GET /v1/responses/{id}``…): a plain
    aiohttp handler, answered by the core with the surface's error shape on a GatewayError."""

    method: str
    path: str
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]]


class SurfaceStream(Protocol):
    """Writes one streamed answer in a surface's SSE shape, chunk by chunk."""

    def feed(self, chunk: dict[str, Any]) -> bytes:
        """The bytes to send for one canonical chunk (possibly none yet)."""
        ...

    def finish(self) -> bytes:
        """The bytes that end a complete stream (closing events, ``[DONE]``…)."""
        ...

    def fail(self, error: GatewayError) -> bytes:
        """The bytes that end a stream that failed after its first byte: an error event."""
        ...


@runtime_checkable
class Surface(Protocol):
    """One client-facing API. Register it from ``register_surfaces``."""

    name: str
    """``ctx.surface`` for its requests, shown in logs and metrics (``anthropic.messages``)."""
    kind: Kind
    """What its canonical requests ask for (routing picks providers that serve it)."""
    wire: str
    """Its native wire format (``openai.chat``, ``anthropic.messages``, ``openai.responses``…):
    a provider that speaks it natively may pass requests through."""
    path: str
    """The route that runs the chain (``POST``)."""
    content_type: str
    """Of a streamed answer (``text/event-stream``)."""

    async def parse(self, ctx: RequestContext, body: Any) -> ParsedRequest:
        """Validate the client's JSON ``body`` and make the canonical request (its ``stream``
        flag says whether the client wants server-sent events); raise
        :class:`~hookgate.InvalidRequest` naming the parameter at fault. Called after
        ``authenticate`` and before ``before_request``: ``ctx.headers``, ``ctx.tenant`` and the
        ``CLIENT_KEY`` fact are there (a surface with server-side state, such as stored
        responses, resolves the client's references here, within its owner)."""
        ...

    async def completed(self, ctx: RequestContext, completion: Completion) -> None:
        """The answer is complete (after every ``after_response`` hook, before the client gets
        its last byte): what a surface with server-side state stores. ``completion`` is the
        answer as this client receives it, through the request's output filters (guardrails'
        restored values, not its placeholders), so what is stored is what the client saw."""
        ...

    def render(self, ctx: RequestContext, completion: Completion) -> dict[str, Any]:
        """A complete answer as this surface's JSON body: ``completion.native`` when it is set
        (the core sets it only when it is of this surface's wire and may be sent as it is), else
        the canonical ``completion.body`` translated."""
        ...

    def open_stream(self, ctx: RequestContext) -> SurfaceStream:
        """A writer for one streamed answer, from canonical chunks. (Chunks of a pass-through
        stream carry their native bytes under :data:`NATIVE_EVENTS`: the core writes those itself
        when it may.)"""
        ...

    def replay_native(self, ctx: RequestContext, native: dict[str, Any]) -> bytes | None:
        """A cached native answer (``Completion.native``) as this surface's whole SSE stream, or
        None to let the core replay the canonical answer through :meth:`open_stream`."""
        ...

    def error_body(self, error: GatewayError) -> dict[str, Any]:
        """``error`` in this surface's error shape (the HTTP status is the error's)."""
        ...

    def extra_routes(self) -> list[ExtraRoute]:
        """Further routes of this API that do not run the chain."""
        ...


_OPENAI_DONE = b"data: [DONE]\n\n"


class OpenAIStream:
    """OpenAI's SSE: ``data: <chunk>`` per chunk, ``data: [DONE]`` at the end; an error is one
    more event whose data is OpenAI's error body (the openai SDK raises it as an ``APIError``)."""

    __slots__ = ()

    def feed(self, chunk: dict[str, Any]) -> bytes:
        return b"data: " + orjson.dumps(chunk) + b"\n\n"

    def finish(self) -> bytes:
        return _OPENAI_DONE

    def fail(self, error: GatewayError) -> bytes:
        return b"data: " + orjson.dumps(error.to_body()) + b"\n\n" + _OPENAI_DONE


class OpenAIShapedSurface:
    """What a surface of OpenAI's shapes (chat completions, legacy completions, embeddings) does
    unless it says otherwise: nothing stored on completion, the canonical body as its JSON,
    OpenAI's SSE (:class:`OpenAIStream`), no native replay, OpenAI's error body, no routes beyond
    :attr:`Surface.path`. Subclass it and write ``parse`` (and whatever else differs)."""

    async def completed(self, ctx: RequestContext, completion: Completion) -> None:
        return None

    def render(self, ctx: RequestContext, completion: Completion) -> dict[str, Any]:
        return completion.body

    def open_stream(self, ctx: RequestContext) -> SurfaceStream:
        return OpenAIStream()

    def replay_native(self, ctx: RequestContext, native: dict[str, Any]) -> bytes | None:
        return None

    def error_body(self, error: GatewayError) -> dict[str, Any]:
        return error.to_body()

    def extra_routes(self) -> list[ExtraRoute]:
        return []


_NATIVE_ORIGIN: StateKey[tuple[str, bytes]] = StateKey(
    "surface.native_origin",
    tuple,
    "the native body's wire and the canonical request as the surface made it: pass-through is allowed while it is unchanged",
)


def remember_native(ctx: RequestContext, wire: str) -> None:
    """Note that ``ctx.native`` is of ``wire`` and that ``ctx.body`` is what the surface made of
    it (the core does this once the surface parsed the request)."""
    ctx[_NATIVE_ORIGIN] = (wire, orjson.dumps(ctx.body))


def native_wire(ctx: RequestContext) -> str | None:
    """The wire format of ``ctx.native``, or None when the request has no native body."""
    origin = ctx.get(_NATIVE_ORIGIN)
    return origin[0] if origin is not None and ctx.native is not None else None


def native_intact(ctx: RequestContext) -> bool:
    """Whether ``ctx.native`` may be sent upstream as it is: the request has a native body, and
    no plugin changed the canonical request the surface made of it."""
    origin = ctx.get(_NATIVE_ORIGIN)
    return ctx.native is not None and origin is not None and orjson.dumps(ctx.body) == origin[1]
