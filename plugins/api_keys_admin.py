"""The keys API of the api_keys plugin: ``/-/api/keys``, for the console and for scripts.

    GET    /-/api/keys            every key: id, source (config | redis), read_only, settings
    POST   /-/api/keys            a new key in Redis; the answer shows the raw key, this once
    GET    /-/api/keys/{id}       one key
    PATCH  /-/api/keys/{id}       change models, limits, budgets, cache namespace, admin, metadata
    DELETE /-/api/keys/{id}       revoke: refused from now on (other instances: within cache_seconds)

Admin only (:func:`hookgate.web.require_admin`: an admin key, or a dashboard session whose
mutations carry its CSRF token). Keys defined in plugins.toml are listed read-only: they change
with the file. Creating, editing and revoking need ``redis = true``. Hashes never leave the
gateway; the raw key exists only in the answer to its creation. Bodies are JSON, at most
64 KiB, validated (a 400 names the field); every size an admin chooses is bounded here.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import orjson
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, field_validator

from hookgate import GatewayError, InvalidRequest, NotFound, PayloadTooLarge, ServiceUnavailable
from hookgate.openapi import operation
from hookgate.redis import RedisUnavailable
from hookgate.web import require_admin

from .api_keys_store import KEY_ID_PATTERN, EditConflict, KeySettings

if TYPE_CHECKING:
    from .api_keys import ApiKeys

__all__ = ["KeysAdmin", "KeyCreate", "KeyChange", "key_json", "read_json_body", "MAX_BODY_BYTES"]

KEYS_PATH = "/-/api/keys"
MAX_BODY_BYTES = 64 * 1024
_NO_STORE = {"Cache-Control": "no-store"}

ModelName = Annotated[str, StringConstraints(min_length=1, max_length=256)]
Label = Annotated[str, StringConstraints(min_length=1, max_length=64)]
LabelValue = Annotated[str, StringConstraints(max_length=256)]


class KeyChange(BaseModel):
    """Settings of a key as the API takes them (every field optional; in PATCH, only the fields
    given change, and ``null`` clears a limit)."""

    model_config = ConfigDict(extra="forbid")

    models: list[ModelName] | None = Field(None, max_length=1000, description="models the key may use; null: every model")
    requests_per_minute: int | None = Field(None, ge=1, le=10**9, description="request rate limit")
    tokens_per_minute: int | None = Field(None, ge=1, le=10**12, description="token rate limit")
    daily_budget_usd: Annotated[str, StringConstraints(pattern=r"^\d{1,12}(\.\d{1,10})?$")] | None = Field(
        None, description="USD per UTC day, as a decimal string"
    )
    monthly_budget_usd: Annotated[str, StringConstraints(pattern=r"^\d{1,12}(\.\d{1,10})?$")] | None = Field(
        None, description="USD per UTC month, as a decimal string"
    )
    cache_namespace: Annotated[str, StringConstraints(min_length=1, max_length=128)] | None = Field(
        None, description="keys sharing a namespace share cached answers"
    )
    admin: bool | None = Field(None, description="may use admin endpoints and the console")
    metadata: dict[Label, LabelValue] | None = Field(None, max_length=64, description="free labels (team, owner…)")

    @field_validator("daily_budget_usd", "monthly_budget_usd", mode="before")
    @classmethod
    def _decimal_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value

    def applied_to(self, settings: KeySettings) -> KeySettings:
        """``settings`` with the fields this change names replaced."""
        changes = self.model_dump(include=self.model_fields_set & set(KeyChange.model_fields))
        if changes.get("admin") is None:
            changes.pop("admin", None)
        if "metadata" in changes and changes["metadata"] is None:
            changes["metadata"] = {}
        return KeySettings.model_validate({**settings.model_dump(), **changes})


class KeyCreate(KeyChange):
    """A new key: its id and settings."""

    id: str = Field(pattern=KEY_ID_PATTERN.pattern, description="public id: letters, digits, '_', '.', '-' (at most 64)")


KEY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "source": {"enum": ["config", "redis"], "description": "plugins.toml keys are read-only here"},
        "read_only": {"type": "boolean"},
        "models": {"type": ["array", "null"], "items": {"type": "string"}},
        "requests_per_minute": {"type": ["integer", "null"]},
        "tokens_per_minute": {"type": ["integer", "null"]},
        "daily_budget_usd": {"type": ["string", "null"]},
        "monthly_budget_usd": {"type": ["string", "null"]},
        "cache_namespace": {"type": ["string", "null"]},
        "admin": {"type": "boolean"},
        "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}
CREATED_SCHEMA = {**KEY_SCHEMA, "properties": {**KEY_SCHEMA["properties"], "key": {"type": "string", "description": "the raw key: shown this once, stored nowhere"}}}
LIST_SCHEMA = {"type": "object", "properties": {"object": {"const": "list"}, "data": {"type": "array", "items": KEY_SCHEMA}}}


class KeysAdmin:
    """The handlers of ``/-/api/keys`` over one :class:`ApiKeys` plugin."""

    def __init__(self, plugin: ApiKeys) -> None:
        self.plugin = plugin

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_get(KEYS_PATH, self.list_keys)
        router.add_post(KEYS_PATH, self.create_key)
        router.add_get(KEYS_PATH + "/{key_id}", self.get_key)
        router.add_patch(KEYS_PATH + "/{key_id}", self.update_key)
        router.add_delete(KEYS_PATH + "/{key_id}", self.revoke_key)

    @operation(summary="Every gateway key (never a hash or a key)", response=LIST_SCHEMA, tag="keys")
    async def list_keys(self, request: web.Request) -> web.Response:
        await require_admin(request)
        listed = [key_json(key_id, key, "config") for key_id, key in self.plugin.config.keys.items()]
        listed.extend(key_json(key_id, settings, "redis") for key_id, settings in await self._stored())
        return _json({"object": "list", "data": listed})

    @operation(summary="Create a key in Redis; the answer holds the raw key, shown this once", body=KeyCreate,
               response=CREATED_SCHEMA, status=201, tag="keys", errors={409: "the id is taken, or keys are read-only (redis = false)"})
    async def create_key(self, request: web.Request) -> web.Response:
        await require_admin(request)
        given = _validated(KeyCreate, await read_json_body(request))
        if given.id in self.plugin.config.keys:
            raise _conflict(f"A key with id {given.id!r} is defined in plugins.toml.", "key_exists")
        store = self._writable()
        settings = given.applied_to(KeySettings())
        raw = await self._redis(lambda: store.create(given.id, settings))
        if raw is None:
            raise _conflict(f"A key with id {given.id!r} already exists.", "key_exists")
        return _json({**key_json(given.id, settings, "redis"), "key": raw}, status=201)

    @operation(summary="One key", response=KEY_SCHEMA, tag="keys", errors={404: "no such key"})
    async def get_key(self, request: web.Request) -> web.Response:
        await require_admin(request)
        key_id = _key_id(request)
        if key_id in self.plugin.config.keys:
            return _json(key_json(key_id, self.plugin.config.keys[key_id], "config"))
        store = self.plugin.store
        settings = await self._redis(lambda: store.get_by_id(key_id)) if store is not None else None
        if settings is None:
            raise _missing(key_id)
        return _json(key_json(key_id, settings, "redis"))

    @operation(summary="Change a key's models, limits, budgets, cache namespace, admin flag or metadata", body=KeyChange,
               response=KEY_SCHEMA, tag="keys", errors={404: "no such key", 409: "a plugins.toml key, or redis = false"})
    async def update_key(self, request: web.Request) -> web.Response:
        await require_admin(request)
        key_id = _key_id(request)
        change = _validated(KeyChange, await read_json_body(request))
        if key_id in self.plugin.config.keys:
            raise _conflict(f"The key {key_id!r} is defined in plugins.toml: change it there.", "key_read_only")
        store = self._writable()
        try:
            settings = await self._redis(lambda: store.update(key_id, change.applied_to))
        except EditConflict:
            raise _conflict(f"The key {key_id!r} is being changed by someone else; try again.", "edit_conflict") from None
        except ValidationError as exc:
            raise InvalidRequest(f"The change would make invalid settings: {exc.errors()[0]['msg']}", code="invalid_settings") from None
        if settings is None:
            raise _missing(key_id)
        self.plugin.forget_key_id(key_id)
        return _json(key_json(key_id, settings, "redis"))

    @operation(summary="Revoke a key: it is refused from now on", tag="keys",
               errors={404: "no such key", 409: "a plugins.toml key, or redis = false"})
    async def revoke_key(self, request: web.Request) -> web.Response:
        await require_admin(request)
        key_id = _key_id(request)
        if key_id in self.plugin.config.keys:
            raise _conflict(f"The key {key_id!r} is defined in plugins.toml: remove it there.", "key_read_only")
        store = self._writable()
        digest = await self._redis(lambda: store.revoke(key_id))
        if digest is None:
            raise _missing(key_id)
        await self.plugin.forget_key(digest)
        return _json({"id": key_id, "object": "key", "deleted": True})

    # --------------------------------------------------------------------------- helpers ---

    def _writable(self) -> Any:
        if self.plugin.store is None:
            raise _conflict("Keys are defined in plugins.toml only: enable redis = true in [plugins.api_keys] to manage them here.",
                            "key_store_read_only")
        return self.plugin.store

    async def _stored(self) -> list[tuple[str, KeySettings]]:
        store = self.plugin.store
        return await self._redis(store.list) if store is not None else []

    async def _redis(self, operation: Any) -> Any:
        redis = self.plugin.redis
        assert redis is not None
        try:
            return await redis.run(operation, timeout=self.plugin.config.redis_timeout_seconds)
        except RedisUnavailable:
            raise ServiceUnavailable("The key store (Redis) cannot be reached.", code="key_store_unavailable",
                                     headers={"Retry-After": "1"}) from None


def key_json(key_id: str, settings: KeySettings, source: str) -> dict[str, Any]:
    """A key as the API shows it: id, source and settings; never its hash."""
    shown = KeySettings.model_validate(settings.model_dump(include=set(KeySettings.model_fields))).model_dump(mode="json")
    return {"id": key_id, "source": source, "read_only": source == "config", **shown}


async def read_json_body(request: web.Request, limit: int = MAX_BODY_BYTES) -> Any:
    """A request's JSON body, at most ``limit`` bytes (413 past it, 400 when it is not JSON)."""
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"The body is over the limit of {limit} bytes.")
    if request.content_type != "application/json":
        raise InvalidRequest("Send a JSON body (Content-Type: application/json).", status=415, code="unsupported_media_type")
    body = bytearray()
    while chunk := await request.content.read(limit + 1 - len(body)):
        body += chunk
        if len(body) > limit:
            raise PayloadTooLarge(f"The body is over the limit of {limit} bytes.")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        raise InvalidRequest("The body is not valid JSON.", code="invalid_json") from None


def _validated(model: type[BaseModel], body: Any) -> Any:
    if not isinstance(body, dict):
        raise InvalidRequest("The body must be a JSON object.", code="invalid_json")
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise InvalidRequest.from_validation(exc) from None


def _key_id(request: web.Request) -> str:
    """The ``{key_id}`` of the path (the plugin router does not pass path parameters on yet)."""
    tail = request.rel_url.raw_path[len(KEYS_PATH) + 1:]
    if not KEY_ID_PATTERN.match(tail):
        raise NotFound("No key with this id.", code="key_not_found")
    return tail


def _conflict(message: str, code: str) -> GatewayError:
    return InvalidRequest(message, status=409, code=code)


def _missing(key_id: str) -> GatewayError:
    return NotFound(f"No key with id {key_id!r}.", code="key_not_found")


def _json(body: Any, *, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body, default=str), status=status, content_type="application/json", headers=_NO_STORE)
