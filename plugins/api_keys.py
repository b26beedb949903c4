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
every admin endpoint: the core's ``/-/plugins``, ``GET /v1/keys`` and ``/-/api/keys`` here,
``GET /v1/usage`` of other keys in the usage plugin, the request store's console.

Admins manage keys over HTTP too (``/-/api/keys``: create, list, edit, revoke; ``api_keys_admin``)
and log in to the dashboard with their key (``/-/api/session``: a session cookie, never the key;
``api_keys_login``, ``api_keys_sessions``). A request bearing a live session passes
``authorize_admin`` like the key it was opened with (the key is looked up again each time, so
revoking it ends its sessions), with its CSRF token on every method that changes something.

Redis lookups are cached in the process for ``cache_seconds`` (a revoked key keeps working that
long on an instance that saw it recently). If Redis cannot be reached, keys from plugins.toml still
work, a key seen recently is still accepted from the cache, and any other key gets a 503
``auth_unavailable`` (never a 401 that would tell a valid client its key is wrong). Provider keys
and gateway keys never appear in a log line, an error or a response.
"""
from __future__ import annotations

import hmac
import re
from collections import OrderedDict
from time import monotonic
from typing import Any, Mapping

import orjson
import structlog
from aiohttp import web
from pydantic import Field, SecretStr, field_validator

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

from .api_keys_admin import KeysAdmin
from .api_keys_login import SessionLogin
from .api_keys_sessions import MemorySessions, RedisSessions
from .api_keys_store import KEY_ID_PATTERN, KeySettings, RedisKeyStore, key_digest, key_record

__all__ = ["ApiKeys", "ApiKeysConfig", "KeyConfig", "KeySettings", "RedisKeyStore", "KEY_ID_PATTERN", "key_digest", "key_record"]

log = structlog.get_logger("hookgate.api_keys")

_DIGEST = re.compile(r"^[0-9a-f]{64}$")
_UNAUTHORIZED = (
    "Incorrect or missing API key. Send your gateway key in the 'Authorization: Bearer <key>' header."
)
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="hookgate"'}
_MAX_CACHED_LOOKUPS = 10_000
_APP_SESSIONS = web.AppKey("hookgate_api_keys_sessions", dict)
"""The app's in-process dashboard sessions, kept across live reloads."""


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
    admin_api: bool = Field(True, description="serve the keys API (/-/api/keys) and the dashboard login (/-/api/session)")
    session_max_age_s: float = Field(8 * 3600, ge=60, le=30 * 86400, description="a dashboard session ends this long after login")
    session_idle_s: float = Field(1800, ge=60, le=86400, description="a dashboard session unused this long ends")
    max_sessions: int = Field(100, ge=1, le=10_000, description="open dashboard sessions at most; one more closes the least recently used")
    session_cookie_secure: bool | None = Field(
        None, description="mark the session cookie Secure; unset: when the login came over HTTPS (set true behind a TLS proxy)"
    )

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
        self.login = SessionLogin(self)
        self._app_sessions: MemorySessions | None = None

    @hookimpl
    def register_routes(self, router: web.UrlDispatcher, app: web.Application) -> None:
        router.add_get("/v1/keys", self.list_keys)
        if self.config.admin_api:
            KeysAdmin(self).add_routes(router)
            self.login.add_routes(router)
            self._app_sessions = self._memory_sessions(app)

    @hookimpl
    async def startup(self, app: web.Application) -> None:
        if self.config.redis:
            url = self.config.resolved_redis_url()
            if url is None:
                raise RuntimeError("api_keys: redis = true needs redis_url or $REDIS_URL")
            self.redis = await redis_service(app).connect(url)
            self.store = RedisKeyStore(self.redis.client, self.config.key_prefix)
        if self.config.admin_api:
            config = self.config
            self.login.sessions = (
                RedisSessions(self.redis.client, self.redis.run, config.key_prefix, max_sessions=config.max_sessions,
                              max_age_s=config.session_max_age_s, idle_s=config.session_idle_s, timeout=config.redis_timeout_seconds)
                if self.redis is not None else self._app_sessions
            )

    @hookimpl
    async def check_ready(self) -> Readiness | None:
        if self.redis is None:
            return None
        return self.redis.readiness(detail_when_down="only configured and recently seen keys work")

    @hookimpl
    async def authenticate(self, credential: str | None, headers: Mapping[str, str]) -> ClientKey:
        if credential is None and self.login.bears_session(headers):
            # The dashboard's own script sends the CSRF token with every call; nothing else can.
            return await self.login.key_of_session(headers, method=None)
        return await self.key_of(credential)

    @hookimpl
    async def authorize_admin(self, request: web.Request) -> None:
        credential = presented_key(request.headers)
        if credential is None and self.login.bears_session(request.headers):
            await self.login.key_of_session(request.headers, method=request.method, origin_host=request.host)
            return  # only an admin key's live session gets here
        if not (await self.key_of(credential)).admin:
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
        return await self.key_of_digest(key_digest(presented))

    async def key_of_digest(self, digest: str) -> ClientKey:
        """The key whose SHA-256 is ``digest`` (a dashboard session keeps only that), or
        :class:`AuthenticationFailed`."""
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

    def forget_key_id(self, key_id: str) -> None:
        """Drop cached lookups of the key called ``key_id`` (its settings changed here)."""
        for digest, (key, _) in list(self._lookups.items()):
            if key is not None and key.id == key_id:
                del self._lookups[digest]

    async def forget_key(self, digest: str) -> None:
        """A key was revoked here: stop accepting it at once on this instance, end its sessions."""
        self._lookups.pop(digest, None)
        sessions = self.login.sessions
        if sessions is not None:
            try:
                await sessions.close_for_key(digest)
            except RedisUnavailable:
                pass  # its sessions fail their next lookup anyway

    def _memory_sessions(self, app: web.Application) -> MemorySessions:
        """The app's in-process sessions (made while the app is built, so a reload keeps them)."""
        kept = app.get(_APP_SESSIONS)
        if kept is None and not app.frozen:
            kept = app[_APP_SESSIONS] = {}
        config = self.config
        sessions = kept.get("sessions") if kept is not None else None
        if sessions is None:
            sessions = MemorySessions(max_sessions=config.max_sessions, max_age_s=config.session_max_age_s, idle_s=config.session_idle_s)
            if kept is not None:
                kept["sessions"] = sessions
        else:
            sessions.max_sessions, sessions.max_age_s, sessions.idle_s = config.max_sessions, config.session_max_age_s, config.session_idle_s
        return sessions

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


def _public(settings: KeySettings) -> dict[str, Any]:
    return settings.model_dump(mode="json", exclude={"hash"})
