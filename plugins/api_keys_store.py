"""Gateway keys at rest: their settings, their hashes, and the Redis store both the plugin and the
``hookgate keys`` command write through.

A key is ``hg-`` and 32 random bytes (:func:`generate_key`); only its SHA-256 is ever kept. In
Redis, ``{prefix}:hash:{sha256}`` holds the key's id, hash and settings (JSON) and
``{prefix}:ids`` maps each id to its hash (to list, edit and revoke by id). Every write is one
Lua script, so a create cannot race another create of the same id, an edit is a compare-and-set
(two admins editing one key: the second retries on the first's result), and a revocation removes
the record and its index entry together.

The store works with ``redis.asyncio`` clients: the plugin passes its shared client, the command
line one of its own (``asyncio.run``), so both run the very same code.
"""
from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field

from hookgate import ClientKey

__all__ = [
    "KeySettings",
    "RedisKeyStore",
    "KEY_ID_PATTERN",
    "KEY_PREFIX",
    "generate_key",
    "key_digest",
    "key_record",
    "EditConflict",
]

KEY_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
"""What a key id may look like (it appears in logs, metrics labels and URLs)."""
KEY_PREFIX = "hg-"
"""Generated keys start with this, so a leaked one is recognisable (secret scanners)."""


class KeySettings(BaseModel):
    """What a gateway key may do; stored with the key's hash in plugins.toml or Redis."""

    model_config = ConfigDict(extra="forbid")

    models: list[str] | None = Field(None, description="public model names this key may use; absent: every model")
    requests_per_minute: int | None = Field(None, ge=1, description="this key's request rate limit (rate_limit plugin)")
    tokens_per_minute: int | None = Field(None, ge=1, description="this key's token rate limit (rate_limit plugin)")
    daily_budget_usd: Decimal | None = Field(None, ge=0, description="spend limit per UTC day (budget plugin)")
    monthly_budget_usd: Decimal | None = Field(None, ge=0, description="spend limit per UTC month (budget plugin)")
    cache_namespace: str | None = Field(None, description="keys sharing a namespace share cached answers; default: the key id")
    admin: bool = Field(False, description="may call admin endpoints (GET /v1/keys, GET /v1/usage for every key, the console)")
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


class EditConflict(RuntimeError):
    """A key kept changing under an edit (other admins editing it at the same moment)."""


class RedisKeyStore:
    """Gateway keys in Redis: ``{prefix}:hash:{sha256}`` → the key's id and settings (JSON), and
    ``{prefix}:ids`` (id → sha256) to list, edit and revoke. The key itself is never stored."""

    CREATE = """
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 then return 0 end
redis.call('SET', KEYS[1], ARGV[3])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
return 1
"""
    # KEYS[1] = the index; ARGV = id, record prefix, the record read, the record to write.
    UPDATE = """
local digest = redis.call('HGET', KEYS[1], ARGV[1])
if not digest then return 0 end
local record = ARGV[2] .. digest
if redis.call('GET', record) ~= ARGV[3] then return -1 end
redis.call('SET', record, ARGV[4])
return 1
"""
    # KEYS[1] = the index; ARGV = id, record prefix. Returns the revoked key's hash.
    REVOKE = """
local digest = redis.call('HGET', KEYS[1], ARGV[1])
if not digest then return false end
redis.call('DEL', ARGV[2] .. digest)
redis.call('HDEL', KEYS[1], ARGV[1])
return digest
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
        """The key whose SHA-256 is ``digest``, or None."""
        raw = await self.redis.get(self.record_key(digest))
        if raw is None:
            return None
        record = orjson.loads(raw)
        if not hmac.compare_digest(str(record.get("hash", "")), digest):
            return None
        return KeySettings.model_validate(record["settings"]).client_key(record["id"])

    async def get_by_id(self, key_id: str) -> KeySettings | None:
        """The settings of the key called ``key_id``, or None."""
        digest = await self.redis.hget(self.index_key, key_id)
        if digest is None:
            return None
        raw = await self.redis.get(self.record_key(_text(digest)))
        return KeySettings.model_validate(orjson.loads(raw)["settings"]) if raw is not None else None

    async def list(self) -> list[tuple[str, KeySettings]]:
        """Every stored key's id and settings, by id."""
        index = await self.redis.hgetall(self.index_key)
        records = await self.redis.mget([self.record_key(_text(d)) for d in index.values()]) if index else []
        found = []
        for raw in records:
            if raw is not None:
                record = orjson.loads(raw)
                found.append((record["id"], KeySettings.model_validate(record["settings"])))
        return sorted(found, key=lambda item: item[0])

    async def create(self, key_id: str, settings: KeySettings) -> str | None:
        """Make a new key called ``key_id``; returns the raw key (to show once), or None when the
        id is taken."""
        key = generate_key()
        digest = key_digest(key)
        created = await self.redis.eval(self.CREATE, 2, self.record_key(digest), self.index_key, key_id, digest, key_record(key_id, digest, settings))
        return key if created else None

    async def update(self, key_id: str, change: Callable[[KeySettings], KeySettings], *, attempts: int = 5) -> KeySettings | None:
        """Apply ``change`` to the key's settings (compare-and-set, retried while other edits
        land in between); None when there is no such key."""
        for _ in range(attempts):
            digest = await self.redis.hget(self.index_key, key_id)
            if digest is None:
                return None
            digest = _text(digest)
            raw = await self.redis.get(self.record_key(digest))
            if raw is None:
                return None
            settings = change(KeySettings.model_validate(orjson.loads(raw)["settings"]))
            written = await self.redis.eval(
                self.UPDATE, 1, self.index_key, key_id, f"{self.prefix}:hash:", raw, key_record(key_id, digest, settings)
            )
            if written == 1:
                return settings
            if written == 0:
                return None
        raise EditConflict(f"key {key_id!r} kept changing during the edit")

    async def revoke(self, key_id: str) -> str | None:
        """Delete the key called ``key_id``; returns its hash (None when there was none)."""
        digest = await self.redis.eval(self.REVOKE, 1, self.index_key, key_id, f"{self.prefix}:hash:")
        return _text(digest) if digest is not None else None


def generate_key() -> str:
    """A new gateway key: ``hg-`` and 32 random bytes, URL-safe."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def key_digest(key: str) -> str:
    """The SHA-256 of a gateway key, as stored: 64 lower-case hex digits."""
    return hashlib.sha256(key.encode()).hexdigest()


def key_record(key_id: str, digest: str, settings: KeySettings) -> bytes:
    """What Redis holds for a key: its id, hash and settings; never the key."""
    return orjson.dumps({"id": key_id, "hash": digest, "settings": settings.model_dump(mode="json", exclude_defaults=True)})


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
