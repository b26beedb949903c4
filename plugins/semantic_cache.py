"""``semantic_cache``: answers a prompt with the cached answer of a prompt that means the same,
and does not serve wrong answers doing it.

A lookup, on the exact caches' miss (its rules put it after ``memory_cache`` and ``redis_cache``):

1. **Scope** (:mod:`~hookgate.plugins.semantic_cache_scope`): only chat-like, text-only,
   low-temperature requests, compared only with entries of the same *partition*: tenant, surface,
   provider and upstream model, every generation parameter, tools, response format, system prompt
   and earlier turns, embedding model and entry schema must all be identical. Only the last user
   turn is compared by meaning.
2. **Embed** the last user turn with the offline model (on its worker thread), or with
   ``embedding_model``, an embeddings model the gateway routes, asked in the process through
   :func:`hookgate.dispatch.embed` (:class:`hookgate.embeddings.GatewayEmbedder`: batched, with its
   own timeout). An embedding that fails or is late skips the semantic tier for the request.
3. **Search** the partition's nearest cached prompts (the local index by default,
   :mod:`~hookgate.plugins.semantic_cache_backend`).
4. **Guard** (:mod:`~hookgate.plugins.semantic_cache_guard`, always on): a candidate above the
   similarity threshold is still refused when the prompts differ in numbers, dates, negation,
   names, direction, or are near-identical with a content word changed.
5. **Confirm** the first accepted candidate in Redis, the source of truth: an entry that expired
   or was deleted (by any instance) is never served, whatever the local index still holds.
6. **Shadow or serve** (:mod:`~hookgate.plugins.semantic_cache_shadow`): a namespace's hits are
   served (``x-hookgate-cache: HIT-SEMANTIC``, ``x-hookgate-cache-score``) only once enough
   shadow comparisons agreed; until then the request goes upstream (``SHADOW``) and the two
   answers are compared after the response. Trusted namespaces keep auditing a fraction of hits.

Answers are stored after a complete, non-error response: text answers only (never tool calls,
refusals or cut-off streams), with a configured finish reason, within ``max_entry_bytes``, with
the TTL (``x-hookgate-cache-ttl`` may shorten it). ``Cache-Control: no-cache`` skips the lookup,
``no-store`` the write. Redis trouble turns the semantic tier off for the request (a miss, never an
error). docs/semantic_cache.md is the operator's guide.
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from time import perf_counter
from typing import Any, Literal

import orjson
import structlog
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from hookgate import (
    Completion,
    GatewayError,
    GatewayTimeout,
    InvalidRequest,
    Readiness,
    RequestContext,
    ServiceUnavailable,
    StateKey,
    hookimpl,
    is_complete,
)
from hookgate.cache_control import CacheDirectives
from hookgate.dispatch import INTERNAL_HEADER
from hookgate.embeddings import Embeddings, GatewayEmbedder, OnnxEmbedderConfig, OnnxSentenceEmbedder, shared_embedder
from hookgate.facts import SEMANTIC_MATCH
from hookgate.logs import IntervalLog
from hookgate.redis import RedisUnavailable, RedisURLConfig, SharedRedis, redis_service
from hookgate.rules import After, Produces
from hookgate.tasks import background, stop_task
from hookgate.web import require_admin

from .semantic_cache_backend import BackendUnavailable, Candidate, IndexedEntry, VectorBackend
from .semantic_cache_feed import IndexFeed
from .semantic_cache_guard import GuardConfig, SemanticCacheGuard
from .semantic_cache_index import IndexLimits, LocalIndex
from .semantic_cache_metrics import SemanticCacheMetrics
from .semantic_cache_shadow import ShadowConfig, ShadowDecision, answers_agree, decide, trust_of
from .semantic_cache_scope import CHAT_SURFACES, Ineligible, SemanticScope, answer_text, namespace_id, route_of, scope_of
from .semantic_cache_store import EntryStore, new_entry_id

__all__ = ["SemanticCache", "SemanticCacheConfig"]

log = structlog.get_logger("hookgate.semantic_cache")

SCORE_HEADER = "x-hookgate-cache-score"
ENTRY_HEADER = "x-hookgate-cache-entry"
_DEFAULT_URL = "redis://127.0.0.1:6379/0"
_ENTRY_ID_CHARS = 16
_MAX_NAMESPACE_CHARS = 256
_ADMIN_NAMESPACES = 100
"""Namespaces the admin page lists at most."""
_CALLER = "semantic_cache"
"""``x-hookgate-internal`` of this plugin's own embeddings requests (``embedding_model``)."""


class LocalIndexConfig(BaseModel):
    """The ``index`` table: the per-instance vector index (``backend = "local"``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_entries: int = Field(200_000, ge=1, le=10_000_000, description="entries indexed by this instance in all; adds past it are refused (a miss)")
    exact_max_entries: int = Field(
        5_000, ge=1, description="a partition up to this size is searched exactly (numpy); above it through an HNSW graph (usearch)"
    )
    loop_max_entries: int = Field(2_000, ge=0, description="a partition up to this size is searched on the event loop (~60 µs); larger ones on a thread")
    feed_block_ms: int = Field(200, ge=10, le=5_000, description="how long one read of the change stream waits for news")
    feed_batch: int = Field(500, ge=1, le=10_000, description="stream messages applied per read")
    first_build_timeout_seconds: float = Field(
        10.0, ge=0, le=600, description="start-up waits this long for the index to be built from Redis; the rest is built in the background"
    )
    sweep_seconds: float = Field(30.0, gt=0, description="how often expired entries are dropped from the index")


class PgvectorConfig(BaseModel):
    """The ``pgvector`` table: one shared table in PostgreSQL with pgvector (``backend = "pgvector"``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dsn: SecretStr | None = Field(None, description="postgresql://user:password@host:port/db (required with backend = \"pgvector\")")
    schema_name: str = Field("hookgate_semantic_cache", pattern=r"^[a-z_][a-z0-9_]{0,62}$", description="schema of the table (created if missing)")
    operation_timeout_seconds: float = Field(0.5, gt=0, le=30, description="deadline of a search or write; past it a lookup misses")
    hnsw_ef_search: int = Field(64, ge=1, le=1000, description="pgvector's hnsw.ef_search: candidates the graph looks at per search")
    max_connections: int = Field(8, ge=1, le=100, description="connections in the pool")


class SemanticCacheConfig(RedisURLConfig):
    """Settings of the semantic cache."""

    key_prefix: str = Field("", max_length=100, description="prepended with ':' to every Redis key")
    shared: bool = Field(False, description="one namespace for every client instead of one per tenant/API key")
    ttl_seconds: float = Field(3600.0, gt=0, description="how long an entry stays valid")
    max_ttl_seconds: float = Field(86_400.0, gt=0, description="upper bound for a client's x-hookgate-cache-ttl")
    max_temperature: float = Field(
        1.0, ge=0, le=2, description="requests with a higher temperature (absent counts as 1.0) are not compared by meaning"
    )
    any_temperature_label: str = Field(
        "semantic_cache_any_temperature", max_length=100, description="a key whose metadata sets this label to true is exempt from max_temperature"
    )
    cacheable_finish_reasons: list[str] = Field(["stop"], description="answers are stored only when every choice ended with one of these")
    max_entry_bytes: int = Field(262_144, ge=1, le=16_777_216, description="answers larger than this (serialised) are not stored")
    max_entries_per_namespace: int = Field(100_000, ge=1, le=10_000_000, description="entries kept per namespace; the ones expiring first go first")
    candidates: int = Field(4, ge=1, le=32, description="nearest prompts the guard is asked about, best first")
    guard: GuardConfig = Field(default_factory=GuardConfig, description="the guard (docs/semantic_cache_quality.md)")
    shadow: ShadowConfig = Field(default_factory=ShadowConfig, description="shadow mode and audits")
    embedder: OnnxEmbedderConfig = Field(default_factory=OnnxEmbedderConfig, description="the offline embedding model (default: the built-in all-MiniLM-L6-v2)")
    embedding_model: str | None = Field(
        None,
        min_length=1,
        max_length=256,
        description="embed with this model, routed by the gateway's own routes (e.g. a [models.embed] route to text-embedding-3-small) instead of the offline model",
    )
    embedding_dimensions: int | None = Field(
        None, ge=1, le=65_536, description="with embedding_model: the vectors' length, sent upstream as dimensions (default: the model's own, learned from its first answer)"
    )
    embedding_timeout_seconds: float = Field(
        1.0, gt=0, le=60, description="with embedding_model: a prompt not embedded within this (queueing included) skips the semantic tier"
    )
    embedding_batch_size: int = Field(64, ge=1, le=2048, description="with embedding_model: texts per embeddings request at most")
    embedding_max_in_flight: int = Field(
        4, ge=1, le=256, description="with embedding_model: embeddings requests out at once; more texts wait and are batched"
    )
    embedding_max_pending_texts: int = Field(
        1024, ge=1, le=1_000_000, description="with embedding_model: texts waiting at most; past it a lookup skips the semantic tier"
    )
    backend: Literal["local", "pgvector"] = Field("local", description="where candidates are searched (docs/semantic_cache.md)")
    index: LocalIndexConfig = Field(default_factory=LocalIndexConfig, description="the local index")
    pgvector: PgvectorConfig = Field(default_factory=PgvectorConfig, description="the pgvector backend")
    operation_timeout_seconds: float = Field(0.1, gt=0, le=30, description="deadline of every Redis operation on a request's path")
    scan_timeout_seconds: float = Field(5.0, gt=0, le=300, description="deadline of each page of a rebuild's reads")
    stream_max_len: int = Field(100_000, ge=100, description="changes the stream keeps (approximately); an instance further behind rebuilds")
    metrics_max_namespaces: int = Field(50, ge=1, le=10_000, description="namespaces labelled in metrics; later ones count as 'other'")

    def connection_url(self) -> str:
        return self.resolved_redis_url(default=_DEFAULT_URL) or _DEFAULT_URL

    @model_validator(mode="after")
    def _one_embedding_model(self) -> SemanticCacheConfig:
        if self.embedding_model is None and self.embedding_dimensions is not None:
            raise ValueError("embedding_dimensions needs embedding_model (the offline model's vectors have their own length)")
        if self.embedding_model is not None and "embedder" in self.model_fields_set:
            raise ValueError("embedder configures the offline model; with embedding_model it would not be used: remove one")
        return self

    @model_validator(mode="after")
    def _pgvector_needs_a_dsn(self) -> SemanticCacheConfig:
        if self.backend == "pgvector" and self.pgvector.dsn is None:
            raise ValueError('backend = "pgvector" needs pgvector.dsn (postgresql://…)')
        return self


@dataclass(slots=True)
class _Lookup:
    """This plugin's view of one request, from ``cache_lookup`` to ``after_response``."""

    directives: CacheDirectives
    scope: SemanticScope | None = None
    vector: Any = None
    """The last user turn's embedding (stored with the answer)."""
    shadowed: tuple[Candidate, bytes] | None = None
    """A candidate that would have been served, with its answer, to compare with the fresh one."""
    served: bool = False


_LOOKUP: StateKey[_Lookup] = StateKey("semantic_cache.lookup", _Lookup, "the semantic cache's view of the request")


class SemanticCache:
    """Answers paraphrases from cache, guarded and shadowed, shared by every instance through Redis."""

    Config = SemanticCacheConfig
    roles = ("semantic_cache",)
    rules = (
        After("memory_cache", "cache_lookup", why="exact answers first: the semantic tier is asked only on their miss"),
        After("redis_cache", "cache_lookup", why="exact answers first: the semantic tier is asked only on their miss"),
        Produces(SEMANTIC_MATCH, "cache_lookup"),
    )
    source_name = "semantic_cache"

    def __init__(self, config: SemanticCacheConfig) -> None:
        self.config = config
        self.guard = SemanticCacheGuard(config.guard)
        self._finish_reasons = frozenset(config.cacheable_finish_reasons)
        self.app: web.Application | None = None
        self.redis: SharedRedis | None = None
        self.store: EntryStore | None = None
        self.embedder: OnnxSentenceEmbedder | GatewayEmbedder | None = None
        self._own_embedder = False
        self._starting: asyncio.Task[None] | None = None
        """Builds the backend once a routed model's first answer told its dimensions."""
        self.backend: VectorBackend | None = None
        self.feed: IndexFeed | None = None
        self.metrics = SemanticCacheMetrics(config.metrics_max_namespaces, self._indexed)
        self._errors = IntervalLog(log, "semantic_cache_error", 30.0)

    # ---------------------------------------------------------------------------- lifecycle ---

    @hookimpl
    def register_metrics(self, register: Any) -> None:
        register(self.metrics)

    @hookimpl
    def register_routes(self, router: web.UrlDispatcher) -> None:
        router.add_get("/-/semantic-cache", self.admin_state)
        router.add_delete("/-/semantic-cache/entries", self.admin_delete)

    @hookimpl
    async def startup(self, app: web.Application) -> None:
        config = self.config
        self.app = app
        self.redis = await redis_service(app).connect(config.connection_url())
        if config.embedding_model is not None:
            self.embedder, self._own_embedder = self._routed_embedder(app), True
        else:
            self.embedder, self._own_embedder = await shared_embedder(app, config.embedder)
        self.store = EntryStore(
            self.redis,
            key_prefix=config.key_prefix,
            operation_timeout=config.operation_timeout_seconds,
            scan_timeout=config.scan_timeout_seconds,
            stream_max_len=config.stream_max_len,
            max_entries_per_namespace=config.max_entries_per_namespace,
            shadow_window=config.shadow.window,
            shadow_ttl_seconds=config.shadow.forget_after_seconds,
        )
        if self.embedder.dimensions:
            await self._start_backend(self.embedder.dimensions)
        # else a routed model of unknown length: the first lookup's answer tells (_start_backend_later)

    def _routed_embedder(self, app: web.Application) -> GatewayEmbedder:
        config = self.config
        assert config.embedding_model is not None
        return GatewayEmbedder(
            app,
            config.embedding_model,
            caller=_CALLER,
            dimensions=config.embedding_dimensions,
            timeout=config.embedding_timeout_seconds,
            batch_size=config.embedding_batch_size,
            max_in_flight=config.embedding_max_in_flight,
            max_pending_texts=config.embedding_max_pending_texts,
        )

    def _start_backend_later(self, dimensions: int) -> None:
        """Build the backend in the background for vectors of ``dimensions`` (once; again after a failure)."""
        if self._starting is not None and not (self._starting.done() and self.backend is None):
            return
        self._starting = asyncio.get_running_loop().create_task(self._start_backend_logged(dimensions), name="semantic_cache.start_backend")

    async def _start_backend_logged(self, dimensions: int) -> None:
        try:
            await self._start_backend(dimensions)
        except Exception as exc:  # pgvector unreachable…: the next lookup tries again
            self._errors.warning(error=type(exc).__name__, note="the semantic cache's backend did not start; lookups miss")

    async def _start_backend(self, dimensions: int) -> None:
        config = self.config
        assert self.embedder is not None and self.store is not None
        if config.backend == "pgvector":
            from .semantic_cache_pgvector import PgvectorBackend

            backend = PgvectorBackend(config.pgvector, dimensions=dimensions, model_id=self.embedder.model_id)
            await backend.start()
            self.backend = backend
            return
        index_config = config.index
        index = LocalIndex(
            dimensions,
            IndexLimits(
                max_entries=index_config.max_entries,
                exact_max_entries=index_config.exact_max_entries,
                loop_max_entries=index_config.loop_max_entries,
            ),
        )
        await index.start()
        self.backend = index
        self.feed = IndexFeed(
            self.store,
            index,
            dimensions=dimensions,
            block_ms=index_config.feed_block_ms,
            batch=index_config.feed_batch,
            retry_seconds=1.0,
            sweep_seconds=index_config.sweep_seconds,
        )
        await self.feed.start(index_config.first_build_timeout_seconds)

    @hookimpl
    async def shutdown(self) -> None:
        await stop_task(self._starting)
        if self.feed is not None:
            await self.feed.close()
        if self.backend is not None:
            await self.backend.close()
        if self.embedder is not None and self._own_embedder:
            await self.embedder.aclose()

    @hookimpl
    async def check_ready(self) -> Readiness | None:
        if self.redis is None:
            return None
        embedder = self.embedder
        if isinstance(embedder, GatewayEmbedder) and not embedder.routed:
            return Readiness("degraded", f"embedding_model {embedder.model!r} is not routed to an embeddings provider; semantic lookups miss")
        if self.backend is None:
            return Readiness("degraded", "the embedding model's dimensions are learned from its first answer; semantic lookups miss until then")
        readiness = self.redis.readiness(detail_when_down="answering without the semantic cache")
        if readiness.status == "ok" and self.feed is not None and not self.feed.state.ready:
            return Readiness("degraded", "the local index is being built from Redis; semantic lookups miss until then")
        if readiness.status == "ok" and self.backend is not None and self.backend.stats().get("connected") is False:
            return Readiness("degraded", "PostgreSQL (pgvector) is not connected; semantic lookups miss until it is")
        return readiness

    # ----------------------------------------------------------------------------- requests ---

    @hookimpl
    async def cache_lookup(self, ctx: RequestContext) -> Completion | None:
        if ctx.surface not in CHAT_SURFACES and ctx.headers.get(INTERNAL_HEADER) == _CALLER:
            return None  # this plugin's own embeddings request (embedding_model): not a lookup
        started = perf_counter()
        lookup = ctx[_LOOKUP] = _Lookup(CacheDirectives.of(ctx.headers))
        try:
            return await self._lookup(ctx, lookup)
        finally:
            self.metrics.lookup_seconds.observe(perf_counter() - started)

    async def _lookup(self, ctx: RequestContext, lookup: _Lookup) -> Completion | None:
        config, metrics = self.config, self.metrics
        embedder, backend, store = self.embedder, self.backend, self.store
        assert embedder is not None and store is not None
        scope = scope_of(
            ctx,
            model_id=embedder.model_id,
            shared=config.shared,
            max_temperature=config.max_temperature,
            temperature_override_label=config.any_temperature_label,
            max_prompt_chars=config.guard.max_prompt_chars,
        )
        if isinstance(scope, Ineligible):
            metrics.lookup(ctx.tenant or "anon", scope.value)
            return None
        if self.redis is None or not self.redis.available:
            metrics.lookup(scope.namespace, Ineligible.REDIS_DOWN.value)
            return None
        embedded_at = perf_counter()
        try:
            embeddings = await self._embed([scope.text], ctx)
        except GatewayTimeout:  # a routed model too slow: the request goes on without the tier
            self._errors.warning(error="GatewayTimeout", note="embedding timed out; the request skips the semantic tier")
            metrics.lookup(scope.namespace, Ineligible.EMBEDDER_TIMEOUT.value)
            return None
        except GatewayError as exc:  # overloaded, shutting down, the upstream failed: this request skips the tier
            self._errors.warning(error=type(exc).__name__, status=exc.status, code=exc.code, note="embedding failed; the request skips the semantic tier")
            metrics.lookup(scope.namespace, Ineligible.EMBEDDER.value)
            return None
        metrics.embedding.observe(perf_counter() - embedded_at)
        if backend is None:  # a routed model of unknown length: now known, the index is built meanwhile
            self._start_backend_later(int(embeddings.vectors.shape[1]))
            metrics.lookup(scope.namespace, Ineligible.NOT_READY.value)
            return None
        if embeddings.vectors.shape[1] != backend.dimensions:  # the model behind the route changed length
            self._errors.warning(error="dimensions", got=int(embeddings.vectors.shape[1]), index=backend.dimensions, note="the embedding's length is not the index's; the request skips the semantic tier")
            metrics.lookup(scope.namespace, Ineligible.EMBEDDER.value)
            return None
        if embeddings.truncated[0]:
            metrics.lookup(scope.namespace, Ineligible.TRUNCATED.value)
            return None
        lookup.scope, lookup.vector = scope, embeddings.vectors[0]
        if lookup.directives.no_cache:
            metrics.lookup(scope.namespace, Ineligible.NO_CACHE.value)
            return None  # embedded anyway: the fresh answer is stored
        try:
            candidates = await backend.search(scope.namespace_id, scope.partition, lookup.vector, config.candidates, config.guard.similarity_threshold)
        except BackendUnavailable:  # a backend of its own (pgvector) that did not answer in time
            metrics.lookup(scope.namespace, "backend_down")
            return None
        if not candidates:
            metrics.lookup(scope.namespace, "miss")
            return None
        for candidate in candidates:
            verdict = self.guard.check(candidate.prompt, scope.text, candidate.score)
            if not verdict.serve:
                metrics.refused(verdict.check.value if verdict.check else "unknown")
                continue
            try:
                stored, observations = await store.confirm(scope.namespace_id, candidate.entry_id)
            except RedisUnavailable:
                metrics.lookup(scope.namespace, Ineligible.REDIS_DOWN.value)
                return None
            if stored is None:  # expired, deleted or evicted: the index had not heard yet
                try:
                    await backend.remove(scope.namespace_id, candidate.entry_id)
                except BackendUnavailable:
                    pass
                continue
            completion = _completion_of(stored.answer)
            if completion is None:
                continue
            decision = decide(trust_of(observations, config.shadow), config.shadow)
            metrics.lookup(scope.namespace, decision.value)
            metrics.score(decision.value, candidate.score)
            ctx.response_headers[SCORE_HEADER] = f"{candidate.score:.4f}"
            ctx.response_headers[ENTRY_HEADER] = candidate.entry_id
            if decision is ShadowDecision.SERVE:
                lookup.served = True
                ctx[SEMANTIC_MATCH] = candidate.score
                ctx.cache_status = "HIT-SEMANTIC"
                ctx.response_headers["age"] = str(max(0, int(time.time() - stored.stored_at)))
                return completion
            lookup.shadowed = (candidate, stored.answer)
            ctx.cache_status = "SHADOW"
            return None
        metrics.lookup(scope.namespace, "refused")
        return None

    @hookimpl
    async def after_response(self, ctx: RequestContext, response: Completion) -> None:
        lookup = ctx.get(_LOOKUP)
        if lookup is None or lookup.scope is None or lookup.served or ctx.cache_status == "HIT":
            return  # ineligible, answered by this cache, or by an exact cache (whose entry came from here or is exact)
        text = answer_text(response.body)
        if lookup.shadowed is not None and text is not None:
            self._spawn(self._compare(lookup.scope, lookup.shadowed, text), "semantic_cache.compare")
        if lookup.directives.no_store:
            return
        payload = self._storable(response, text)
        if payload is None:
            self.metrics.stored("skipped")
            return
        scope = lookup.scope
        if scope.route != route_of(ctx):  # a fallback route answered: its partition, not the looked-up one
            rescoped = self._rescope(ctx)
            if rescoped is None:
                return
            scope = rescoped
        ttl = self.config.ttl_seconds
        if lookup.directives.ttl_seconds is not None:
            ttl = min(lookup.directives.ttl_seconds, self.config.max_ttl_seconds)
        entry = IndexedEntry(scope.namespace_id, new_entry_id(), scope.partition, scope.text, lookup.vector, time.time() + ttl)
        # A JSON client learns the new entry's id (for DELETE /-/semantic-cache/entries); after a
        # SHADOW the header already names the candidate that was compared.
        ctx.response_headers.setdefault(ENTRY_HEADER, entry.entry_id)
        self._spawn(self._store(entry, scope.namespace, payload, ttl), "semantic_cache.store")

    # ------------------------------------------------------------------------------ helpers ---

    async def _embed(self, texts: list[str], ctx: RequestContext) -> Embeddings:
        embedder = self.embedder
        if isinstance(embedder, GatewayEmbedder):
            return await embedder.embed(texts, parent=ctx)  # logged under the client's request id
        assert embedder is not None
        return await embedder.embed(texts)

    def _storable(self, response: Completion, text: str | None) -> bytes | None:
        if text is None or not is_complete(response):
            return None
        if any(choice.get("finish_reason") not in self._finish_reasons for choice in response.body["choices"]):
            return None
        payload = orjson.dumps(response.body)
        return payload if len(payload) <= self.config.max_entry_bytes else None

    def _rescope(self, ctx: RequestContext) -> SemanticScope | None:
        assert self.embedder is not None
        config = self.config
        scope = scope_of(
            ctx,
            model_id=self.embedder.model_id,
            shared=config.shared,
            max_temperature=config.max_temperature,
            temperature_override_label=config.any_temperature_label,
            max_prompt_chars=config.guard.max_prompt_chars,
        )
        return scope if isinstance(scope, SemanticScope) else None

    async def _store(self, entry: IndexedEntry, namespace: str, payload: bytes, ttl: float) -> None:
        store, backend = self.store, self.backend
        assert store is not None and backend is not None
        try:
            evicted = await store.add(entry, namespace, payload, ttl)
        except RedisUnavailable as exc:
            self.metrics.stored("failed")
            self._errors.warning(error=str(exc), note="an answer was not stored in the semantic cache")
            return
        self.metrics.stored("stored")
        try:
            await backend.add(entry)  # the local index learns at once; the stream tells the others
            for entry_id in evicted:
                await backend.remove(entry.namespace_id, entry_id)
        except BackendUnavailable as exc:  # pgvector did not answer: the entry is in Redis, not findable
            self._errors.warning(error=str(exc), note="an entry was stored but not indexed")

    async def _compare(self, scope: SemanticScope, shadowed: tuple[Candidate, bytes], fresh: str) -> None:
        store, embedder = self.store, self.embedder
        assert store is not None and embedder is not None
        cached_completion = _completion_of(shadowed[1])
        cached = answer_text(cached_completion.body) if cached_completion is not None else None
        if cached is None:
            return
        try:
            agreed, similarity = await answers_agree(cached, fresh, self.config.shadow, embedder)
        except GatewayError as exc:
            self._errors.warning(error=type(exc).__name__, note="a shadow comparison was skipped")
            return
        self.metrics.compared(scope.namespace, agreed)
        try:
            await store.observe(scope.namespace_id, agreed)
        except RedisUnavailable as exc:
            self._errors.warning(error=str(exc), note="a shadow comparison was not recorded")
            return
        if not agreed:
            log.info("semantic_cache_disagreement", namespace=self.metrics.namespace(scope.namespace), entry=shadowed[0].entry_id, answer_similarity=round(similarity, 3), prompt_similarity=round(shadowed[0].score, 3))

    def _spawn(self, work: Any, name: str) -> None:
        if self.app is None:
            work.close()
            return
        background(self.app).spawn(work, name=name)

    def _indexed(self) -> int:
        backend = self.backend
        return int(backend.stats().get("entries", 0)) if backend is not None else 0

    # -------------------------------------------------------------------------- admin routes ---

    async def admin_state(self, request: web.Request) -> web.Response:
        """``GET /-/semantic-cache``: the backend, the index and feed, and each namespace's standing."""
        await require_admin(request)
        store, backend = self.store, self.backend
        state: dict[str, Any] = {"backend": backend.name if backend is not None else None, "index": backend.stats() if backend is not None else {}}
        if self.feed is not None:
            feed = self.feed.state
            state["feed"] = {
                "ready": feed.ready,
                "last_id": feed.last_id,
                "rebuilds": feed.rebuilds,
                "applied": feed.applied,
                "last_rebuild_reason": feed.last_rebuild_reason,
                "last_rebuild_seconds": round(feed.last_rebuild_seconds, 3),
            }
        namespaces: dict[str, Any] = {}
        if store is not None:
            try:
                names = await store.namespace_names()
                for nsid, name in sorted(names.items(), key=lambda item: item[1])[:_ADMIN_NAMESPACES]:
                    trust = trust_of(await store.observations(nsid), self.config.shadow)
                    namespaces[name[:_MAX_NAMESPACE_CHARS]] = {
                        "observations": trust.observations,
                        "agreement": round(trust.agreement, 4),
                        "trusted": trust.trusted or not self.config.shadow.enabled,
                    }
            except RedisUnavailable:
                state["redis"] = "unavailable"
        state["namespaces"] = namespaces
        return web.json_response(state)

    async def admin_delete(self, request: web.Request) -> web.Response:
        """``DELETE /-/semantic-cache/entries?namespace=N&id=ID``: delete one entry everywhere."""
        await require_admin(request)
        namespace, entry_id = request.query.get("namespace", ""), request.query.get("id", "")
        if not namespace or len(namespace) > _MAX_NAMESPACE_CHARS:
            raise InvalidRequest(f"namespace must be 1 to {_MAX_NAMESPACE_CHARS} characters", param="namespace")
        if len(entry_id) != _ENTRY_ID_CHARS or any(c not in "0123456789abcdef" for c in entry_id):
            raise InvalidRequest("id must be an entry id (16 hex digits, as in x-hookgate-cache-entry)", param="id")
        store, backend = self.store, self.backend
        assert store is not None
        nsid = namespace_id(namespace)
        try:
            deleted = await store.delete(nsid, entry_id)
        except RedisUnavailable:
            raise ServiceUnavailable("Redis is unavailable; the entry was not deleted") from None
        try:
            if backend is not None:  # None: a routed model's index is not built yet (it reads Redis when it is)
                await backend.remove(nsid, entry_id)
        except BackendUnavailable:
            pass  # Redis no longer has it: never served, and pruned from the backend when found
        return web.json_response({"deleted": deleted})


def _completion_of(payload: bytes) -> Completion | None:
    """A stored answer, or None for anything unreadable (treated as a miss)."""
    try:
        body = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(body, dict) or not isinstance(body.get("choices"), list) or not body["choices"]:
        return None
    return Completion(body)

