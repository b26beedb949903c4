"""The per-request state every hook receives.

:class:`RequestContext` holds what the core itself owns about a request (its id, body and
headers, the route, the cache result, timings, the upstream attempts) plus a typed map of the
facts plugins tell each other (``ctx[KEY]``, keys declared in :mod:`hookgate.facts` or privately
by a plugin). docs/request_context.md is the full reference.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from time import perf_counter
from typing import TYPE_CHECKING, Any, Literal, Mapping, TypeVar, overload

from .facts import DEADLINE
from .identity import ClientKey, credential_tenant
from .state import StateKey

if TYPE_CHECKING:
    from .provider import Provider
    from .routing import Route

__all__ = ["RequestContext", "CacheStatus", "Attempt", "ClientKey"]

T = TypeVar("T")
D = TypeVar("D")

CacheStatus = Literal["HIT", "HIT-SEMANTIC", "MISS", "SHADOW", "BYPASS"]
"""What the caches did, sent back as ``x-hookgate-cache``: ``HIT`` (an exact cache answered),
``HIT-SEMANTIC`` (a semantic cache answered with another prompt's answer), ``MISS``, ``SHADOW``
(a semantic cache had a candidate but let the request go upstream to compare), ``BYPASS`` (no
cache looked)."""

_MISSING: Any = object()


@dataclass(frozen=True, slots=True)
class Attempt:
    """One upstream attempt, recorded by the core around every call of the provider: how it ended
    (``ok``, ``http_503``, ``timeout``, ``cancelled``…), the upstream status if any, when it started
    (``perf_counter()``) and how long it took (for a stream: until its first chunk), and on a
    load-balanced route the deployment that took it."""

    outcome: str
    status: int | None
    duration_ms: float
    started_at: float = 0.0
    number: int = 1
    deployment: str | None = None
    """1 for the first attempt of the request, 2 for the first retry…"""


@dataclass(slots=True, eq=False)
class RequestContext:
    """One request on its way through the hook chain.

    ``body`` is the JSON object the client sent, already validated; it is what the provider
    receives and what the cache key is computed from, so a plugin that rewrites the request edits
    ``body`` (in ``before_request``, before the caches look). Facts shared with other plugins are
    read and written as ``ctx[KEY]`` with typed keys (:mod:`hookgate.facts`); never store a secret
    in one.

    The client's credential is kept in ``api_key`` so that auth plugins can check it; never log
    it or put it in an error message.
    """

    request_id: str
    body: dict[str, Any]
    headers: Mapping[str, str]
    api_key: str | None = field(default=None, repr=False)
    surface: str = "chat.completions"
    """The API the client called: ``chat.completions``, ``anthropic.messages``, ``responses``,
    ``embeddings``… Whatever the surface, ``body`` is the canonical request (for chat-like
    surfaces: OpenAI's chat completions shape), so plugins that read content work on every one;
    caches keep surfaces apart."""
    kind: str = "chat"
    """What the canonical request asks for: ``chat`` (OpenAI's chat completions shape),
    ``embeddings`` or ``completions`` (legacy text completions); a provider answers the kinds it
    declares."""
    native: dict[str, Any] | None = field(default=None, repr=False)
    """The client's own request body when the surface's wire is not the canonical one (an
    Anthropic Messages request): what a provider speaking that wire may pass through while no
    plugin changed ``body`` (:func:`hookgate.surfaces.native_intact`). Read-only for plugins."""
    client_address: str | None = None
    """The client's network address (the peer of the connection, or what a trusted proxy says)."""
    provider: Provider | None = None
    """The provider that serves ``body["model"]``; set by the core before ``cache_lookup``."""
    route: Route | None = None
    """The route being tried: provider, upstream model name, default parameters. Set with
    ``provider``; changes when the core falls back to another route."""
    tenant: str | None = None
    """Whose request this is, for scoping caches and limits: the authenticated key's cache
    namespace (or id), else a hash of the client's credential (never the credential), else None
    for anonymous requests. Set by the core before ``before_request``."""
    cache_status: CacheStatus = "BYPASS"
    """What the caches did (:data:`CacheStatus`), sent back as ``x-hookgate-cache``. A cache
    plugin that decides not to look (``Cache-Control: no-cache``) sets BYPASS; one that answers
    may set a more precise ``HIT-…`` status before returning (the core sets ``HIT`` otherwise).
    Test :attr:`cache_hit`, not ``== "HIT"``."""
    cache_source: str | None = None
    """On a HIT, the name of the cache plugin that answered (so an earlier cache can fill itself
    from a later one's hit)."""
    response_headers: dict[str, str] = field(default_factory=dict)
    """Extra headers for the client's response. For a stream they must be set before the first
    chunk: ``after_response`` runs after the headers have gone."""
    started_at: float = field(default_factory=perf_counter)
    attempts: list[Attempt] = field(default_factory=list)
    """Upstream attempts made so far, recorded by the core around each call of the provider."""
    upstream_seconds: float = 0.0
    """Time spent waiting for providers (every attempt; for a stream, waiting for its chunks
    too), measured by the core: the gateway's own overhead is the rest."""
    first_byte_at: float | None = None
    """``perf_counter()`` when the first byte of the answer went to the client (for a stream: its
    first chunk, so ``first_byte_at - started_at`` is the time to first token)."""
    status: int = 200
    """The status sent (or about to be sent) to the client."""
    annotations: dict[str, Any] = field(default_factory=dict)
    """Extra facts for observers (the request log line, traces, the request store): small,
    bounded values, never a secret or a prompt. Built-in facts need no annotation: observers read
    them from the typed keys."""
    _facts: dict[StateKey[Any], Any] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.tenant is None and self.api_key:
            self.tenant = credential_tenant(self.api_key)

    @property
    def cache_hit(self) -> bool:
        """Whether a cache answered (``HIT`` or ``HIT-SEMANTIC``): nothing was spent upstream."""
        return self.cache_status.startswith("HIT")

    # ------------------------------------------------------------------------ typed facts ---

    def __getitem__(self, key: StateKey[T]) -> T:
        try:
            return self._facts[key]
        except KeyError:
            raise KeyError(f"{key.name} is not set on this request") from None

    def __setitem__(self, key: StateKey[T], value: T) -> None:
        self._facts[key] = value

    def __contains__(self, key: StateKey[Any]) -> bool:
        return key in self._facts

    @overload
    def get(self, key: StateKey[T]) -> T | None: ...
    @overload
    def get(self, key: StateKey[T], default: D) -> T | D: ...

    def get(self, key: StateKey[T], default: Any = None) -> Any:
        """The fact's value, or ``default`` when no plugin set it."""
        return self._facts.get(key, default)

    def pop(self, key: StateKey[T], default: Any = _MISSING) -> Any:
        """Remove the fact and return its value (``default`` when it was not set)."""
        if default is _MISSING:
            return self._facts.pop(key)
        return self._facts.pop(key, default)

    def setdefault(self, key: StateKey[T], default: T) -> T:
        """The fact's value, setting it to ``default`` first when it is not set."""
        return self._facts.setdefault(key, default)

    def facts(self) -> dict[str, Any]:
        """Every fact set on this request, by name (for introspection and tests)."""
        return {key.name: value for key, value in self._facts.items()}

    # ---------------------------------------------------------------------------- reading ---

    @property
    def model(self) -> str | None:
        """The model the client asked for (``body["model"]``; None before the body is parsed, or
        when it is not an object)."""
        body = self.body
        return body.get("model") if type(body) is dict else None

    @property
    def stream(self) -> bool:
        """Whether the client asked for server-sent events."""
        body = self.body
        return type(body) is dict and body.get("stream") is True

    @property
    def include_usage(self) -> bool:
        """Whether a streaming client asked for the final usage chunk."""
        options = self.body.get("stream_options") if type(self.body) is dict else None
        return bool(isinstance(options, dict) and options.get("include_usage"))

    @property
    def provider_name(self) -> str:
        """The name of the routed provider, or ``"none"`` before routing."""
        return self.provider.name if self.provider is not None else "none"

    def remaining(self) -> float:
        """Seconds left before the request's :data:`~hookgate.facts.DEADLINE` (infinite without
        one; negative once it passed)."""
        deadline = self._facts.get(DEADLINE)
        return float("inf") if deadline is None else deadline - perf_counter()

    def elapsed_ms(self) -> float:
        """Milliseconds since the request reached the gateway."""
        return (perf_counter() - self.started_at) * 1000.0
