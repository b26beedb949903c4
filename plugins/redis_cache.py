"""``redis_cache``: the response cache that every gateway process behind a load balancer shares.

A prompt answered once is answered from Redis by every process until its TTL runs out. Three
parts, each for a reason:

**An exact-match cache.** The key is :func:`hookgate.cache_key` (DESIGN.md item 7: canonical JSON
of everything that changes the answer, SHA-256, versioned, scoped per tenant unless ``shared``)
with its digest in a Redis Cluster hash tag, so that an entry and its lock always live in one
slot and can meet in one script::

    [<key_prefix>:]hookgate:cache:v2:<tenant>:{<sha256>}        the entry
    [<key_prefix>:]hookgate:cache:v2:<tenant>:{<sha256>}:lock   its single-flight lock

An entry is ``{"stored_at": <unix time>, "answer": {"body": <chat.completion>, "native": …}}`` with a millisecond expiry;
``stored_at`` gives the ``age`` header of a hit. Only complete answers with a configured finish
reason, under ``max_entry_bytes``, are stored.

**Single-flight.** Identical requests in one process share one :class:`_Flight`: a task of its own
makes the upstream call and every request (the first included) waits on it, so no request's
fate hangs on another's client. A client that goes away leaves the flight; the call is cancelled
only when nobody is left. A streaming request follows the upstream's chunks live; the others get
the whole answer. Across processes the flight first *claims* the key in one script: the entry if
it is there by now (stored since this request's lookup), else the lock (``SET NX PX`` with a
random token) if it is free. A process that finds the lock taken claims again every few
milliseconds (the entry, or the lock if its holder gave up), and after ``lock_wait_seconds`` calls
upstream itself. The holder stores the answer and deletes its lock (compare-and-delete) in one
script, so a claim finds the entry or a free lock, never neither. Because the flight, not the
request that started it, owns the answer, it stores the answer itself rather than in
``after_response``: that hook never runs for a first request whose client went away while the
others still got their answer. Lookups are shared too: one ``GET`` per key in flight at a time.

**Fail-open.** Redis trouble is a MISS, never a failed request. Every operation has a deadline
(``operation_timeout_seconds``); after the first failure a request asks Redis nothing more, so it
pays at most one timeout. The client and its circuit are the app's Redis service
(:mod:`hookgate.redis`), shared with every other Redis-backed plugin: once it has seen Redis fail
(``[gateway] redis_failure_threshold``), requests stop asking it, ``/readyz`` says ``degraded``,
and a background probe closes the circuit when Redis answers again. Errors are logged at most once
per interval, never once per request.

It never stores a semantic cache's hit (``SEMANTIC_MATCH``): that answer was chosen by meaning for
another prompt, and the semantic cache's audits, deletions and TTLs must keep reaching it.

Its rules put it after ``memory_cache`` (memory answers first and fills itself from Redis hits)
and before the reliability middlewares (one upstream call, retries included, serves every
identical concurrent request).
"""
from __future__ import annotations

import asyncio
import copy
import secrets
import time
from dataclasses import dataclass
from typing import Any, AsyncIterator, Awaitable, Callable, Final, TypeVar

import orjson
import structlog
from aiohttp import web
from pydantic import Field, PositiveFloat

from hookgate import (
    Completion,
    CompletionStream,
    ProviderResponse,
    Readiness,
    RequestContext,
    StateKey,
    UpstreamError,
    assemble_stream,
    cache_key,
    hookimpl,
    is_complete,
)
from hookgate.cache_control import CacheDirectives
from hookgate.facts import SEMANTIC_MATCH
from hookgate.redis import RedisUnavailable, RedisURLConfig, SharedRedis, redis_service
from hookgate.rules import After, Before, Reads

__all__ = ["RedisCache", "RedisCacheConfig"]

log = structlog.get_logger("hookgate.redis_cache")

T = TypeVar("T")

_DEFAULT_URL: Final = "redis://127.0.0.1:6379/0"
_FAILED: Final = object()
"""A shared lookup's outcome: Redis failed (or was skipped), so the request is a MISS."""
_ABANDONED: Final = object()
"""A shared lookup's outcome: the request making it went away first; ask again."""
_FIRST_POLL: Final = 0.01
"""Seconds before a process waiting on another's lock first looks for the entry; doubled after
each look up to ``_LAST_POLL``, so a short answer is picked up quickly and a long one costs few
round trips."""
_LAST_POLL: Final = 0.1


class RedisCacheConfig(RedisURLConfig):
    """Settings of the shared Redis cache."""

    cluster: bool = Field(False, description="use the Redis Cluster client (keys carry hash tags either way)")
    tls_ca_file: str | None = Field(None, description="rediss://: CA bundle to verify the server with (default: the system's)")
    tls_cert_file: str | None = Field(None, description="rediss://: client certificate, for servers that require one")
    tls_key_file: str | None = Field(None, description="rediss://: the client certificate's private key")
    key_prefix: str = Field("", description="prepended with ':' to every key, to share one Redis between deployments")
    shared: bool = Field(False, description="one namespace for every client instead of one per tenant/API key")
    ttl_seconds: float = Field(300.0, gt=0, description="how long an answer stays valid")
    model_ttl_seconds: dict[str, PositiveFloat] = Field({}, description="TTL per model name, instead of ttl_seconds")
    max_ttl_seconds: float = Field(86_400.0, gt=0, description="upper bound for a client's x-hookgate-cache-ttl")
    max_entry_bytes: int = Field(1_048_576, ge=1, description="answers larger than this (serialised) are not stored")
    cacheable_finish_reasons: list[str] = Field(
        ["stop", "length", "tool_calls"], description="answers are stored only when every choice ended with one of these"
    )
    single_flight: bool = Field(
        True, description="identical concurrent requests share one lookup and one upstream call, across processes too"
    )
    lock_ttl_seconds: float = Field(30.0, gt=0, description="expiry of the cross-process lock, should its holder die")
    lock_wait_seconds: float = Field(
        10.0, ge=0, description="how long a process waits for another's answer before calling upstream itself"
    )
    operation_timeout_seconds: float = Field(
        0.1, gt=0, le=30, description="deadline of every Redis operation; past it the request is a MISS"
    )

    def connection_url(self) -> str:
        """The URL to connect to: ``redis_url``, else ``$REDIS_URL``, else a local Redis."""
        return self.resolved_redis_url(default=_DEFAULT_URL) or _DEFAULT_URL


class RedisCache:
    """Exact-match response cache in Redis, shared by every gateway process, with single-flight."""

    Config = RedisCacheConfig
    roles = ("cache",)
    rules = (
        After("memory_cache", "cache_lookup", why="memory answers first and fills itself from Redis hits"),
        Before("retry", "call_provider", why="one upstream call, retries included, serves every identical concurrent request"),
        Before("concurrency", "call_provider", why="identical requests waiting on one flight take no slot"),
        Reads(SEMANTIC_MATCH, "after_response", why="a semantic hit is not stored under this prompt's exact key"),
    )
    source_name: Final = "redis_cache"
    """Reported as ``ctx.cache_source`` for answers this plugin's single-flight handed out."""

    def __init__(self, config: RedisCacheConfig) -> None:
        self.config = config
        self._prefix = f"{config.key_prefix}:" if config.key_prefix else ""
        self._finish_reasons = frozenset(config.cacheable_finish_reasons)
        self.redis: SharedRedis | None = None
        self._client: Any = None
        self._scripts: _Scripts | None = None
        self._flights: dict[str, _Flight] = {}
        self._lookups: dict[str, asyncio.Future[object]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    # ---------------------------------------------------------------------------- lifecycle ---

    @hookimpl
    async def startup(self, app: web.Application) -> None:
        config = self.config
        self.redis = await redis_service(app).connect(
            config.connection_url(),
            cluster=config.cluster,
            tls_ca_file=config.tls_ca_file,
            tls_cert_file=config.tls_cert_file,
            tls_key_file=config.tls_key_file,
        )
        self._client = self.redis.client
        self._scripts = _Scripts(self._client)

    @hookimpl
    async def shutdown(self) -> None:
        # Flights first: a cancelled flight frees its lock in a background task of its own.
        flights = [flight.task for flight in self._flights.values() if flight.task is not None]
        for task in flights:
            task.cancel()
        await asyncio.gather(*flights, return_exceptions=True)
        if self._tasks:  # stores and lock releases: each is bounded by the operation timeout
            await asyncio.wait(list(self._tasks), timeout=2 * self.config.operation_timeout_seconds + 1)
        leftovers = list(self._tasks)
        for task in leftovers:
            task.cancel()
        await asyncio.gather(*leftovers, return_exceptions=True)

    @hookimpl
    async def check_ready(self) -> Readiness | None:
        if self.redis is None:
            return None
        return self.redis.readiness(detail_when_down="answering without the shared cache")

    # ----------------------------------------------------------------------------- requests ---

    @hookimpl
    async def cache_lookup(self, ctx: RequestContext) -> Completion | None:
        directives = CacheDirectives.of(ctx.headers)
        request = ctx[_REQUEST] = _Request(self._key(ctx), _route_of(ctx), directives, self._ttl(ctx, directives))
        if directives.no_cache:
            ctx.cache_status = "BYPASS"
            return None
        if self.config.single_flight and not directives.no_store and request.key in self._flights:
            return None  # being answered right now: no need to ask Redis, join the flight
        try:
            raw = await self._get(request)
        except _RedisSkipped:
            return None
        entry = _decode(raw) if raw is not None else None
        if entry is None:
            return None
        request.handled = True
        completion, age = entry
        ctx.response_headers["age"] = str(age)
        return completion

    @hookimpl
    async def call_provider(
        self, ctx: RequestContext, call_next: Callable[[RequestContext], Awaitable[ProviderResponse]]
    ) -> ProviderResponse:
        request: _Request | None = ctx.get(_REQUEST)
        if request is None or not self.config.single_flight or request.directives.no_cache or request.directives.no_store:
            return await call_next(ctx)
        if request.route != _route_of(ctx):
            # A fallback route: its answer is another provider's and must not land under the
            # key of the route that was looked up.
            request.key, request.route = self._key(ctx), _route_of(ctx)
        request.handled = True  # the flight stores the answer
        flight = self._flights.get(request.key)
        leader = flight is None
        if flight is None:
            flight = self._flights[request.key] = _Flight()
            flight.task = asyncio.create_task(self._fly(flight, request, ctx, call_next))
        flight.participants += 1
        leave = self._seat(request.key, flight)
        following = False
        try:
            if ctx.stream:
                await flight.until(lambda: bool(flight.chunks) or flight.over)
                if flight.chunks and flight.error is None:
                    # Follow the upstream's own chunks, from the first, with the first in hand:
                    # an outer retry can still retry a failure before it (DESIGN.md item 6).
                    self._label(ctx, flight, leader)
                    following = True  # the stream's close leaves the flight
                    stream = self._follow(flight, leave, own_chunks=not leader)
                    return CompletionStream(stream, close=leave, first_chunk_received=True)
            await flight.until(lambda: flight.over)
            if flight.error is not None:
                raise _copy_error(flight.error) from flight.error
            completion = flight.completion
            assert completion is not None
            if flight.streaming and not is_complete(completion):
                raise UpstreamError("The provider ended the stream before the answer was complete.", code="upstream_incomplete")
            self._label(ctx, flight, leader)
            # Every request but the one that started the flight gets its own copy: plugins may
            # edit the answer they are handed.
            return completion if leader else (Completion.from_bytes(flight.payload) or completion)
        finally:
            if not following:
                await leave()

    @hookimpl
    async def after_response(self, ctx: RequestContext, response: Completion) -> None:
        # Answers that went through a flight are stored by it; what is left here: requests that
        # skipped single-flight (no-cache, single_flight = false) and a later cache's hits.
        request: _Request | None = ctx.get(_REQUEST)
        if request is None or request.handled or request.directives.no_store or not request.redis_ok or SEMANTIC_MATCH in ctx:
            return
        payload = self._storable(response)
        if payload is not None:
            self._in_background(self._store(request, payload, token=None))

    async def _get(self, request: _Request) -> bytes | None:
        """The entry's raw bytes, with one GET per key in flight at a time in this process: a
        burst of identical requests costs Redis one round trip, not one per request."""
        if not self.config.single_flight:
            client = self._client
            assert client is not None
            return await self._redis(request, lambda: client.get(request.key))
        pending = self._lookups.get(request.key)
        if pending is not None:
            outcome = await asyncio.shield(pending)
            if outcome is _FAILED:  # that GET failed: this request counts it as its own failure
                request.redis_ok = False
                raise _RedisSkipped
            if outcome is not _ABANDONED:
                return outcome  # type: ignore[no-any-return]
        future: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        self._lookups[request.key] = future
        outcome: object = _ABANDONED
        try:
            client = self._client
            assert client is not None
            outcome = await self._redis(request, lambda: client.get(request.key))
            return outcome  # type: ignore[return-value]
        except _RedisSkipped:
            outcome = _FAILED
            raise
        finally:
            if self._lookups.get(request.key) is future:
                del self._lookups[request.key]
            future.set_result(outcome)

    # ------------------------------------------------------------------------ single-flight ---

    async def _fly(
        self,
        flight: _Flight,
        request: _Request,
        ctx: RequestContext,
        call_next: Callable[[RequestContext], Awaitable[ProviderResponse]],
    ) -> None:
        """The flight's task: an answer from another process's call, or an upstream call; then
        store it and free the lock while late arrivals may still share it."""
        token: str | None = None
        try:
            token = await self._lock_or_wait(flight, request)
            if flight.completion is None:
                await self._call_upstream(flight, ctx, call_next)
        except asyncio.CancelledError:
            # Nobody waits any more (or the app stops): the upstream call went with this task.
            flight.error = UpstreamError("The shared upstream call was cancelled.", code="upstream_cancelled")
            flight.notify()
            self._forget(request.key, flight)
            if token is not None:
                self._in_background(self._release(request, token))
            raise
        except Exception as exc:  # the request's own error (an upstream 429, a timeout…), for all
            flight.error = exc
        flight.notify()
        if flight.error is not None or flight.age is not None:
            # Only an answer fresh from upstream is worth sharing while it is stored: a request
            # arriving now must not get this error, and another process's answer is in Redis.
            self._forget(request.key, flight)
        try:
            payload = self._storable(flight.completion) if flight.error is None and flight.age is None else None  # type: ignore[arg-type]
            if payload is not None:
                await self._store(request, payload, token)
            elif token is not None:
                await self._release(request, token)
        finally:
            self._forget(request.key, flight)

    async def _lock_or_wait(self, flight: _Flight, request: _Request) -> str | None:
        """Take the cross-process lock and return its token, or wait for the process holding it.

        Returns None, with ``flight.completion`` set, when the answer is in Redis (the holder
        stored it, possibly just after this request's lookup); None without it when Redis is
        unusable or the holder took longer than ``lock_wait_seconds`` (the caller then calls
        upstream without the lock).
        """
        scripts = self._scripts
        assert scripts is not None
        token = secrets.token_hex(16)
        lock_ms = max(1, int(self.config.lock_ttl_seconds * 1000))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.lock_wait_seconds
        pause = _FIRST_POLL
        try:
            while True:
                outcome, raw = await self._redis(request, lambda: scripts.claim(request.key, token, lock_ms))
                if outcome == _Scripts.LOCKED:
                    return token
                if outcome == _Scripts.STORED:
                    entry = _decode(raw)
                    if entry is None:
                        return None  # unreadable: answer this one from upstream, without the lock
                    completion, age = entry
                    flight.completion, flight.payload, flight.age = completion, completion.to_bytes(), age
                    return None
                remaining = deadline - loop.time()  # held by another process: wait for its answer
                if remaining <= 0:
                    log.debug("redis_cache_lock_wait_expired", key=request.key)
                    return None
                await asyncio.sleep(min(pause, remaining))
                pause = min(pause * 2, _LAST_POLL)
        except _RedisSkipped:
            return None

    async def _call_upstream(
        self, flight: _Flight, ctx: RequestContext, call_next: Callable[[RequestContext], Awaitable[ProviderResponse]]
    ) -> None:
        response = await call_next(ctx)
        if isinstance(response, CompletionStream):
            flight.streaming = True
            flight.notify()
            try:
                async for chunk in response:
                    flight.chunks.append(chunk)
                    flight.notify()
            finally:
                await response.aclose()
            response = assemble_stream(flight.chunks)
        flight.payload = response.to_bytes()
        flight.completion = response

    async def _follow(
        self, flight: _Flight, leave: Callable[[], Awaitable[None]], *, own_chunks: bool
    ) -> AsyncIterator[dict[str, Any]]:
        """A streaming request's view of the flight: every chunk so far, then each as it comes."""
        sent = 0
        try:
            while True:
                await flight.until(lambda: sent < len(flight.chunks) or flight.over)
                while sent < len(flight.chunks):
                    chunk = flight.chunks[sent]
                    sent += 1
                    yield orjson.loads(orjson.dumps(chunk)) if own_chunks else chunk
                if flight.over:
                    break
            if flight.error is not None:
                raise _copy_error(flight.error) from flight.error
        finally:
            await leave()

    def _seat(self, key: str, flight: _Flight) -> Callable[[], Awaitable[None]]:
        """A request's place in a flight; leaving twice counts once. The last to leave an
        unfinished flight cancels it, and with it the upstream call (DESIGN.md invariant 6)."""
        left = False

        async def leave() -> None:
            nonlocal left
            if left:
                return
            left = True
            flight.participants -= 1
            if flight.participants == 0 and not flight.over and flight.task is not None:
                self._forget(key, flight)
                flight.task.cancel()

        return leave

    def _label(self, ctx: RequestContext, flight: _Flight, leader: bool) -> None:
        """MISS for the request whose flight called upstream; HIT (with the age) for every
        request answered without an upstream call of its own."""
        if leader and flight.age is None:
            return
        ctx.cache_status = "HIT"
        ctx.cache_source = self.source_name
        ctx.response_headers["age"] = str(flight.age or 0)

    def _forget(self, key: str, flight: _Flight) -> None:
        if self._flights.get(key) is flight:
            del self._flights[key]

    # ---------------------------------------------------------------------------- storage ---

    def _key(self, ctx: RequestContext) -> str:
        head, _, digest = cache_key(ctx, shared=self.config.shared).rpartition(":")
        return f"{self._prefix}{head}:{{{digest}}}"

    def _ttl(self, ctx: RequestContext, directives: CacheDirectives) -> float:
        if directives.ttl_seconds is not None:
            return min(directives.ttl_seconds, self.config.max_ttl_seconds)
        return self.config.model_ttl_seconds.get(ctx.model or "", self.config.ttl_seconds)

    def _storable(self, completion: Completion) -> bytes | None:
        """The serialised answer when it may be stored: complete, an accepted finish reason, small enough."""
        if not is_complete(completion) or any(c.get("finish_reason") not in self._finish_reasons for c in completion.body.get("choices") or ()):
            return None
        payload = completion.to_bytes()
        return payload if len(payload) <= self.config.max_entry_bytes else None

    async def _store(self, request: _Request, payload: bytes, token: str | None) -> None:
        """Write the entry; with the flight's lock token, free the lock in the same script."""
        client, scripts = self._client, self._scripts
        assert client is not None and scripts is not None
        entry = b'{"stored_at":' + orjson.dumps(time.time()) + b',"answer":' + payload + b"}"
        ttl_ms = max(1, int(request.ttl_seconds * 1000))
        try:
            if token is None:
                await self._redis(request, lambda: client.set(request.key, entry, px=ttl_ms))
            else:
                await self._redis(request, lambda: scripts.store_and_unlock(request.key, entry, ttl_ms, token))
        except _RedisSkipped:
            pass  # fail-open: the answer was delivered; the lock, if any, expires by itself

    async def _release(self, request: _Request, token: str) -> None:
        scripts = self._scripts
        assert scripts is not None
        try:
            await self._redis(request, lambda: scripts.unlock(request.key + ":lock", token))
        except _RedisSkipped:
            pass

    async def _redis(self, request: _Request, operation: Callable[[], Awaitable[T]]) -> T:
        """One Redis operation for ``request``, through the guard; after one failure the request
        asks Redis nothing more, so it pays at most one timeout."""
        if not request.redis_ok or self.redis is None:
            raise _RedisSkipped
        try:
            return await self.redis.run(operation, timeout=self.config.operation_timeout_seconds)
        except RedisUnavailable:
            request.redis_ok = False
            raise _RedisSkipped from None

    def _in_background(self, operation: Awaitable[None]) -> None:
        """Run a store or unlock off the request's path; shutdown waits for it (bounded)."""
        task = asyncio.ensure_future(operation)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


# ------------------------------------------------------------------------------------ helpers ---


@dataclass(slots=True)
class _Request:
    """This plugin's view of one request, from ``cache_lookup`` to ``after_response``."""

    key: str
    route: tuple[object, object]
    """What the key was computed for (see :func:`_route_of`)."""
    directives: CacheDirectives
    ttl_seconds: float
    handled: bool = False
    """The answer came from this plugin (a hit) or its flight stores it: nothing left to store."""
    redis_ok: bool = True
    """False once a Redis operation failed for this request: it asks Redis nothing more."""


_REQUEST: StateKey[_Request] = StateKey("redis_cache.request", _Request, "this cache's view of the request")


class _Flight:
    """One upstream call in this process, shared by every identical request that arrives while
    it runs. Waiters wake on :meth:`notify`; chunks stay in ``chunks`` so a late streaming
    request can catch up from the first."""

    __slots__ = ("task", "participants", "chunks", "streaming", "completion", "payload", "error", "age", "_changed")

    def __init__(self) -> None:
        self.task: asyncio.Task[None] | None = None
        self.participants = 0
        self.chunks: list[dict[str, Any]] = []
        self.streaming = False
        """The upstream answers as a stream (its chunks arrive in ``chunks``)."""
        self.completion: Completion | None = None
        """The whole answer once it is known (a stream: assembled after its last chunk)."""
        self.payload = b""
        """``completion.body`` serialised: what is stored, and each follower's private copy."""
        self.error: BaseException | None = None
        self.age: int | None = None
        """Seconds since another process stored the answer, when it came from Redis."""
        self._changed = asyncio.Event()

    @property
    def over(self) -> bool:
        return self.completion is not None or self.error is not None

    def notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def until(self, condition: Callable[[], bool]) -> None:
        while not condition():
            await self._changed.wait()


class _RedisSkipped(Exception):
    """Redis was not asked (circuit open, or this request already had a failure) or it failed:
    the caller carries on without it."""


class _Scripts:
    """The Lua scripts that need an entry and its lock (one hash slot) at once."""

    HELD, STORED, LOCKED = 0, 1, 2
    """What :meth:`claim` found: another process holds the lock; the entry; the lock, now ours."""

    # Atomic, so that no answer stored between a lookup and SET NX is ever missed: the entry if
    # present, else the lock if free (SET NX PX with our token), else "held".
    _CLAIM = """
        local entry = redis.call('GET', KEYS[1])
        if entry then return {1, entry} end
        if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return {2, ''} end
        return {0, ''}
    """
    _STORE_AND_UNLOCK = """
        redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
        if redis.call('GET', KEYS[2]) == ARGV[3] then redis.call('DEL', KEYS[2]) end
        return 1
    """
    # Compare-and-delete: never frees a lock that expired and was taken by another process.
    _UNLOCK = """
        if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
        return 0
    """

    def __init__(self, client: Any) -> None:
        self._claim = client.register_script(self._CLAIM)
        self._store_and_unlock = client.register_script(self._STORE_AND_UNLOCK)
        self._unlock = client.register_script(self._UNLOCK)

    async def claim(self, key: str, token: str, lock_ms: int) -> tuple[int, bytes]:
        outcome, entry = await self._claim(keys=[key, key + ":lock"], args=[token, lock_ms])
        return int(outcome), entry

    async def store_and_unlock(self, key: str, entry: bytes, ttl_ms: int, token: str) -> None:
        await self._store_and_unlock(keys=[key, key + ":lock"], args=[entry, ttl_ms, token])

    async def unlock(self, lock: str, token: str) -> None:
        await self._unlock(keys=[lock], args=[token])


def _route_of(ctx: RequestContext) -> tuple[object, object]:
    """The provider and route a request is being served by: the key depends on both."""
    return id(ctx.provider), id(getattr(ctx, "route", None))


def _decode(raw: bytes) -> tuple[Completion, int] | None:
    """An entry's answer and age in seconds; None for anything unreadable (treated as a miss)."""
    try:
        entry = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(entry, dict):
        return None
    answer, stored_at = Completion.from_entry(entry.get("answer")), entry.get("stored_at")
    if answer is None or not isinstance(stored_at, (int, float)):
        return None
    return answer, max(0, int(time.time() - stored_at))


def _copy_error(error: BaseException) -> BaseException:
    """Each request raises its own copy of a shared flight's error: raising one exception object
    from several tasks would tangle their tracebacks."""
    try:
        return copy.copy(error)
    except Exception:  # an exception class that cannot be rebuilt from its args: a bug, a 500
        return RuntimeError(f"the shared upstream call failed: {type(error).__name__}")
