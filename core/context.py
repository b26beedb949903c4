"""The per-request state every hook receives."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from decimal import Decimal
from time import perf_counter
from typing import TYPE_CHECKING, Any, Literal, Mapping

if TYPE_CHECKING:
    from .provider import Provider
    from .routing import Route

__all__ = ["RequestContext", "CacheStatus", "Attempt", "ClientKey"]

CacheStatus = Literal["HIT", "MISS", "BYPASS"]


@dataclass(frozen=True, slots=True)
class Attempt:
    """One upstream attempt: how it ended (``ok``, ``timeout``, ``http_503``…), its upstream
    status if any, and how long it took."""

    outcome: str
    status: int | None
    duration_ms: float


@dataclass(frozen=True, slots=True)
class ClientKey:
    """A gateway key (virtual key) as an auth plugin resolved it; never the secret itself.

    The ``api_keys`` plugin (or any auth plugin) sets it on ``ctx.client_key``; the limit, budget
    and usage plugins read their per-key settings from it, so a third-party auth plugin that fills
    it in gets them too. A limit left at None means "the enforcing plugin's own default".
    """

    id: str
    """Public, stable name of the key (``team-a``): used in limits, the usage ledger and logs."""
    models: frozenset[str] | None = None
    """Public model names this key may use; None for every model."""
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    daily_budget_usd: Decimal | None = None
    monthly_budget_usd: Decimal | None = None
    cache_namespace: str | None = None
    """Cache scope of the key's answers (keys sharing a namespace share cached answers);
    None for the key's own ``id``."""
    admin: bool = False
    """May call admin endpoints (``GET /v1/usage`` for every key…)."""
    metadata: Mapping[str, str] = field(default_factory=dict)
    """Free-form labels (team, owner…) for plugins and logs."""


@dataclass(slots=True, eq=False)
class RequestContext:
    """One chat request on its way through the hook chain.

    ``body`` is the JSON object the client sent, already validated as a chat request; it is what
    the provider receives and what the cache key is computed from, so a plugin that rewrites the
    request edits ``body``. ``state`` is scratch space for plugins: key it by your plugin's name.

    The client's credential is kept in ``api_key`` so that auth plugins can check it; never log
    it or put it in an error message.
    """

    request_id: str
    body: dict[str, Any]
    headers: Mapping[str, str]
    api_key: str | None = field(default=None, repr=False)
    provider: Provider | None = None
    """The provider that serves ``body["model"]``; set by the core before ``cache_lookup``."""
    route: Route | None = None
    """The route being tried: provider, upstream model name, default parameters. Set with
    ``provider``; changes when the core falls back to another route."""
    tenant: str | None = None
    """Whose request this is, for scoping caches and limits. Auth plugins set it; by default it
    is derived from the client's key (a hash, never the key itself), or None for anonymous."""
    cache_status: CacheStatus = "BYPASS"
    """HIT, MISS or BYPASS, sent back as ``x-hookgate-cache``. A cache plugin that decides not to
    look (``Cache-Control: no-cache``) sets BYPASS."""
    cache_source: str | None = None
    """On a HIT, the name of the cache plugin that answered (so an earlier cache can fill itself
    from a later one's hit)."""
    response_headers: dict[str, str] = field(default_factory=dict)
    """Extra headers for the client's response. For a stream they must be set before the first
    chunk: ``after_response`` runs after the headers have gone."""
    state: dict[str, Any] = field(default_factory=dict)
    started_at: float = field(default_factory=perf_counter)
    deadline: float | None = None
    """When the whole request must be answered, on the ``perf_counter()`` clock; None for no
    deadline. The timeout plugin sets it; retry and other middlewares read it via :meth:`remaining`."""
    attempts: list[Attempt] = field(default_factory=list)
    """Upstream attempts made so far, recorded by the middleware that owns retries."""
    upstream_seconds: float = 0.0
    """Time spent waiting for providers (every attempt; for a stream, waiting for its chunks
    too), measured by the core: the gateway's own overhead is the rest."""
    first_byte_at: float | None = None
    """``perf_counter()`` when the first byte of the answer went to the client (for a stream: its
    first chunk, so ``first_byte_at - started_at`` is the time to first token)."""
    status: int = 200
    """The status sent (or about to be sent) to the client."""
    client_key: ClientKey | None = None
    """The gateway key the request was authenticated with, set by an auth plugin (``api_keys``);
    None without one. Per-key limits, budgets and the usage ledger read it."""
    usage: dict[str, Any] | None = None
    """The token usage of the answer in OpenAI's shape (``prompt_tokens``, ``completion_tokens``,
    ``total_tokens``, ``prompt_tokens_details.cached_tokens``,
    ``completion_tokens_details.reasoning_tokens``), set by the ``token_counter`` plugin once the
    answer is complete: the provider's own figures, also for a stream whose usage chunk the client
    did not ask for. On a cache HIT it is the cached answer's usage (nothing was spent upstream)."""
    cost_usd: Decimal | None = None
    """What the answer cost upstream in US dollars (exact decimal), set by the ``cost`` plugin;
    None when unknown (no price for the model), 0 for a cache HIT."""
    log_fields: dict[str, Any] = field(default_factory=dict)
    """Extra facts for the request's log line (``key_id``, estimates…): plugins add them, the
    ``request_log`` plugin writes them. Never put a secret here."""

    def __post_init__(self) -> None:
        if self.tenant is None and self.api_key:
            self.tenant = "key-" + hashlib.sha256(self.api_key.encode()).hexdigest()[:16]

    @property
    def model(self) -> str | None:
        """The model the client asked for (``body["model"]``; None before the body is parsed)."""
        return self.body.get("model")

    @property
    def stream(self) -> bool:
        """Whether the client asked for server-sent events."""
        return self.body.get("stream") is True

    @property
    def include_usage(self) -> bool:
        """Whether a streaming client asked for the final usage chunk."""
        options = self.body.get("stream_options")
        return bool(options and options.get("include_usage"))

    @property
    def provider_name(self) -> str:
        """The name of the routed provider, or ``"none"`` before routing."""
        return self.provider.name if self.provider is not None else "none"

    def remaining(self) -> float:
        """Seconds left before ``deadline`` (infinite without one; negative once it passed)."""
        return float("inf") if self.deadline is None else self.deadline - perf_counter()

    def elapsed_ms(self) -> float:
        """Milliseconds since the request reached the gateway."""
        return (perf_counter() - self.started_at) * 1000.0
