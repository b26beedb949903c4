"""``api_keys``: gateway keys (virtual keys), so that clients never hold a provider's key.

A client sends its gateway key as ``Authorization: Bearer <key>`` (or ``x-api-key: <key>``;
nowhere else). The key is checked from the headers alone (the ``authenticate`` hook), before the
request's body is read, so an unauthenticated client costs no body read, parsing or validation. Keys are kept only as SHA-256 hashes, in plugins.toml (``[plugins.api_keys.keys.ID]``)
and/or Redis (``hookgate keys create`` makes a key, stores its hash and prints the key once). The
presented key is hashed and compared with :func:`hmac.compare_digest`; a missing key and a wrong
key get the very same 401. Each key carries an id (what logs, limits and the ledger name), the
models it may use (403 ``model_not_allowed`` for another), its rate limits and budgets (read by
rate_limit and budget from the :data:`~hookgate.facts.CLIENT_KEY` fact), the cache namespace of
its answers (``ctx.tenant``) and free metadata. A key with ``admin = true`` passes the ``authorize_admin`` hook, which guards
every admin endpoint: the core's ``/-/plugins``, ``GET /v1/keys`` here, ``GET /v1/usage`` of other
keys in the usage plugin.

Redis lookups are cached in the process for ``cache_seconds`` (a revoked key keeps working that
long on an instance that saw it recently). If Redis cannot be reached, keys from plugins.toml still
work, a key seen recently is still accepted from the cache, and any other key gets a 503
``auth_unavailable`` (never a 401 that would tell a valid client its key is wrong). Provider keys
and gateway keys never appear in a log line, an error or a response.
"""
from __future__ import annotations

import hashlib
import hmac
import re
from collections import OrderedDict
from decimal import Decimal
from time import monotonic
from typing import Any

import orjson
import structlog
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from hookgate import (
    AuthenticationFailed,
    ClientKey,
    PermissionDenied,
    Readiness,
    RequestContext,
    ServiceUnavailable,
    hookimpl,
)
from hookgate.facts import CLIENT_KEY
from hookgate.logs import IntervalLog
from hookgate.redis import RedisUnavailable, RedisURLConfig, SharedRedis, redis_service
from hookgate.rules import Produces
from hookgate.web import presented_key, require_admin

log = structlog.get_logger("hookgate.api_keys")

KEY_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_DIGEST = re.compile(r"^[0-9a-f]{64}$")
_UNAUTHORIZED = (
    "Incorrect or missing API key. Send your gateway key in the 'Authorization: Bearer <key>' header."
)
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="hookgate"'}
_MAX_CACHED_LOOKUPS = 10_000


class KeySettings(BaseModel):
    """What a gateway key may do; stored with the key's hash in plugins.toml or Redis."""

    model_config = ConfigDict(extra="forbid")

    models: list[str] | None = Field(None, description="public model names this key may use; absent: every model")
    requests_per_minute: int | None = Field(None, ge=1, description="this key's request rate limit (rate_limit plugin)")
    tokens_per_minute: int | None = Field(None, ge=1, description="this key's token rate limit (rate_limit plugin)")
    daily_budget_usd: Decimal | None = Field(None, ge=0, description="spend limit per UTC day (budget plugin)")
    monthly_budget_usd: Decimal | None = Field(None, ge=0, description="spend limit per UTC month (budget plugin)")
    cache_namespace: str | None = Field(None, description="keys sharing a namespace share cached answers; default: the key id")
    admin: bool = Field(False, description="may call admin endpoints (GET /v1/keys, GET /v1/usage for every key)")
    metadata: dict[str, str] = Field({}, description="free labels (team, owner…)")

    def client_key(self, key_id: str) -> ClientKey:
        return ClientKey(
            id=key_id,
            models=frozenset(self.models) if self.models is not None else None,
            requests_per_minute=self.requests_per_minute,
            tokens_per_minute=self.tokens_per_minute,
            daily_budget_usd=self.daily_budget_usd,
            monthly_budget_usd=self.monthly_budget_usd,
            cache_namespace=self.cache_namespace,
            admin=self.admin,
            metadata=dict(self.metadata),
        )


class KeyConfig(KeySettings):
    """A gateway key in plugins.toml: its SHA-256 hash and its settings."""

    hash: SecretStr = Field(description="SHA-256 of the key, 64 hex digits (`hookgate keys hash` prints it); masked in listings")

    @field_validator("hash", mode="before")
    @classmethod
    def _is_sha256(cls, value: object) -> str:
        digest = str(value.get_secret_value() if isinstance(value, SecretStr) else value).removeprefix("sha256:").lower()
        if not _DIGEST.match(digest):
            raise ValueError("must be the key's SHA-256 as 64 hex digits, never the key itself")
        return digest

    @property
    def digest(self) -> str:
        return self.hash.get_secret_value()


class ApiKeysConfig(RedisURLConfig):
    """Settings of the gateway keys."""

    keys: dict[str, KeyConfig] = Field({}, description="gateway keys by id: hash and settings")
    redis: bool = Field(False, description="also accept keys stored in Redis (`hookgate keys create`)")
    key_prefix: str = Field("hookgate:keys", description="prefix of the Redis keys")
    redis_timeout_seconds: float = Field(1.0, gt=0, description="limit of one Redis lookup")
    cache_seconds: float = Field(10.0, ge=0, description="how long a Redis lookup is reused (a revocation takes this long)")
    negative_cache_seconds: float = Field(1.0, ge=0, description="how long an unknown key is remembered as unknown")

    @field_validator("keys")
    @classmethod
    def _valid_ids(cls, keys: dict[str, KeyConfig]) -> dict[str, KeyConfig]:
        seen: dict[str, str] = {}
        for key_id, key in keys.items():
            if not KEY_ID_PATTERN.match(key_id):
                raise ValueError(f"key id {key_id!r}: letters, digits, '_', '.', '-' only (at most 64)")
            if key.digest in seen:
                raise ValueError(f"keys {seen[key.digest]!r} and {key_id!r} have the same hash")
            seen[key.digest] = key_id
        return keys


class ApiKeys:
    """Gateway keys (SHA-256 hashes in config or Redis): 401/403, per-key models, limits, budgets, admin."""

    Config = ApiKeysConfig
    roles = ("auth",)
    rules = (Produces(CLIENT_KEY, "authenticate"),)

    def __init__(self, config: ApiKeysConfig) -> None:
        self.config = config
        self.configured = [(key.digest, key.client_key(key_id)) for key_id, key in config.keys.items()]
        self.redis: SharedRedis | None = None
        self.store: RedisKeyStore | None = None
        self._lookups: OrderedDict[str, tuple[ClientKey | None, float]] = OrderedDict()
        self._redis_trouble = IntervalLog(log, "api_keys_redis_unavailable")

    @hookimpl
    def register_routes(self, router: web.UrlDispatcher) -> None:
        router.add_get("/v1/keys", self.list_keys)

    @hookimpl
    async def startup(self, app: web.Application) -> None:
        if self.config.redis:
            url = self.config.resolved_redis_url()
            if url is None:
                raise RuntimeError("api_keys: redis = true needs redis_url or $REDIS_URL")
            self.redis = await redis_service(app).connect(url)
            self.store = RedisKeyStore(self.redis.client, self.config.key_prefix)

    @hookimpl
    async def check_ready(self) -> Readiness | None:
        if self.redis is None:
            return None
        return self.redis.readiness(detail_when_down="only configured and recently seen keys work")

    @hookimpl
    async def authenticate(self, credential: str | None) -> ClientKey:
        return await self.key_of(credential)

    @hookimpl
    async def authorize_admin(self, request: web.Request) -> None:
        if not (await self.key_of(presented_key(request.headers))).admin:
            raise PermissionDenied("This endpoint needs an admin key.", code="admin_required")

    @hookimpl
    async def before_request(self, ctx: RequestContext) -> None:
        key = ctx.get(CLIENT_KEY)
        if key is not None and key.models is not None and ctx.model not in key.models:
            raise PermissionDenied("This API key may not use the requested model.", param="model", code="model_not_allowed")

    # ------------------------------------------------------------------------------ authentication

    async def key_of(self, presented: str | None) -> ClientKey:
        """The key ``presented`` is, or :class:`AuthenticationFailed` (the same for missing and wrong)."""
        if not presented:
            raise AuthenticationFailed(_UNAUTHORIZED, headers=_CHALLENGE)
        digest = key_digest(presented)
        found = None
        for stored, key in self.configured:  # every entry compared: the loop's time does not depend on the match
            if hmac.compare_digest(stored, digest):
                found = key
        if found is None and self.store is not None:
            found = await self._from_redis(digest)
        if found is None:
            raise AuthenticationFailed(_UNAUTHORIZED, headers=_CHALLENGE)
        return found

    async def _from_redis(self, digest: str) -> ClientKey | None:
        assert self.store is not None and self.redis is not None
        store = self.store
        cached = self._lookups.get(digest)
        if cached is not None and cached[1] > monotonic():
            return cached[0]
        try:
            key = await self.redis.run(lambda: store.get(digest), timeout=self.config.redis_timeout_seconds)
        except RedisUnavailable as exc:
            self._redis_trouble.warning(error=str(exc))
            if cached is not None and cached[0] is not None:
                return cached[0]  # seen recently: keep serving it while Redis is away
            raise ServiceUnavailable(
                "The gateway cannot verify API keys right now; try again shortly.", code="auth_unavailable", headers={"Retry-After": "1"}
            ) from None
        ttl = self.config.cache_seconds if key is not None else self.config.negative_cache_seconds
        self._lookups[digest] = (key, monotonic() + ttl)
        self._lookups.move_to_end(digest)
        if len(self._lookups) > _MAX_CACHED_LOOKUPS:
            self._lookups.popitem(last=False)
        return key

    # ----------------------------------------------------------------------------------- admin API

    async def list_keys(self, request: web.Request) -> web.Response:
        """``GET /v1/keys`` (admin): every key's id and settings, never a hash or a key."""
        await require_admin(request)
        listed = [{"id": key_id, "source": "config", **_public(key)} for key_id, key in self.config.keys.items()]
        if self.store is not None and self.redis is not None:
            store = self.store
            try:
                stored = await self.redis.run(store.list, timeout=self.config.redis_timeout_seconds)
            except RedisUnavailable as exc:
                self._redis_trouble.warning(error=str(exc))
                raise ServiceUnavailable("The key store (Redis) cannot be reached.", code="key_store_unavailable") from None
            listed.extend({"id": key_id, "source": "redis", **_public(settings)} for key_id, settings in stored)
        return web.Response(body=orjson.dumps({"object": "list", "data": listed}, default=str), content_type="application/json")


class RedisKeyStore:
    """Gateway keys in Redis: ``{prefix}:hash:{sha256}`` → the key's id and settings (JSON), and
    ``{prefix}:ids`` (id → sha256) to list and revoke. The key itself is never stored."""

    CREATE = """
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 then return 0 end
redis.call('SET', KEYS[1], ARGV[3])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
return 1
"""

    def __init__(self, redis: Any, prefix: str) -> None:
        self.redis = redis
        self.prefix = prefix

    def record_key(self, digest: str) -> str:
        return f"{self.prefix}:hash:{digest}"

    @property
    def index_key(self) -> str:
        return f"{self.prefix}:ids"

    async def get(self, digest: str) -> ClientKey | None:
        raw = await self.redis.get(self.record_key(digest))
        if raw is None:
            return None
        record = orjson.loads(raw)
        if not hmac.compare_digest(str(record.get("hash", "")), digest):
            return None
        return KeySettings.model_validate(record["settings"]).client_key(record["id"])

    async def list(self) -> list[tuple[str, KeySettings]]:
        index = await self.redis.hgetall(self.index_key)
        records = await self.redis.mget([self.record_key(d.decode()) for d in index.values()]) if index else []
        found = []
        for raw in records:
            if raw is not None:
                record = orjson.loads(raw)
                found.append((record["id"], KeySettings.model_validate(record["settings"])))
        return sorted(found, key=lambda item: item[0])


def key_digest(key: str) -> str:
    """The SHA-256 of a gateway key, as stored: 64 lower-case hex digits."""
    return hashlib.sha256(key.encode()).hexdigest()


def key_record(key_id: str, digest: str, settings: KeySettings) -> bytes:
    """What Redis holds for a key: its id, hash and settings; never the key."""
    return orjson.dumps({"id": key_id, "hash": digest, "settings": settings.model_dump(mode="json", exclude_defaults=True)})


def _public(settings: KeySettings) -> dict[str, Any]:
    return settings.model_dump(mode="json", exclude={"hash"})
