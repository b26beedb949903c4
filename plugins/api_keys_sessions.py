"""Dashboard sessions: an admin trades its key for a session cookie, once, at the login form.

What the browser holds is a random session id in an ``HttpOnly``, ``SameSite=Strict`` cookie
scoped to ``/-/`` (so it never travels with an API call to ``/v1/…``). What the gateway holds,
per session, is the SHA-256 of that id (the cookie's value is not kept either), the SHA-256 of
the admin key it was opened with (what plugins.toml and Redis already hold: never the key), a
CSRF token, and when it was opened and last used. Every request on a session looks the key up
again by its hash, so revoking or demoting the admin key ends its sessions (within
``cache_seconds`` on instances that saw it recently).

Bounded: at most ``max_sessions`` (opening one more closes the least recently used), each at most
``max_age_s`` old and ``idle_s`` unused. Two stores behind one interface: in the process
(:class:`MemorySessions`, kept on the app, so a live reload keeps them) or in Redis
(:class:`RedisSessions`, when the api_keys plugin uses Redis, so every worker and instance
shares them).
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import orjson

__all__ = ["Session", "SessionStore", "MemorySessions", "RedisSessions", "COOKIE_NAME", "CSRF_HEADER", "session_id_of"]

COOKIE_NAME = "hookgate_session"
CSRF_HEADER = "X-CSRF-Token"
_MAX_COOKIE_CHARS = 128


@dataclass(frozen=True, slots=True)
class Session:
    """One open dashboard session (what the gateway keeps; never a key)."""

    key_digest: str
    """SHA-256 of the admin key the session was opened with."""
    key_id: str
    csrf_token: str
    created: float
    """Wall-clock seconds since the epoch."""
    last_seen: float

    def expires_at(self, max_age_s: float, idle_s: float) -> float:
        return min(self.created + max_age_s, self.last_seen + idle_s)


class SessionStore(Protocol):
    """Where sessions are kept. ``open`` returns the new session's id (the cookie's value)."""

    async def open(self, key_digest: str, key_id: str) -> tuple[str, Session]: ...

    async def find(self, session_id: str) -> Session | None:
        """The live session of ``session_id`` (marked as used now), or None."""
        ...

    async def close(self, session_id: str) -> None: ...

    async def close_for_key(self, key_digest: str) -> int:
        """Close every session opened with this key (it was revoked); how many."""
        ...


def session_id_of(cookie_header_value: str | None) -> str | None:
    """The session id a request's cookie carries, if it is plausibly one of ours."""
    if not cookie_header_value:
        return None
    for part in cookie_header_value.split(";"):
        name, _, value = part.strip().partition("=")
        if name == COOKIE_NAME and 0 < len(value) <= _MAX_COOKIE_CHARS and value.isascii() and value.isprintable():
            return value
    return None


def _hashed(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


def _new_session(key_digest: str, key_id: str, now: float) -> tuple[str, Session]:
    return secrets.token_urlsafe(32), Session(key_digest, key_id, secrets.token_urlsafe(32), now, now)


class MemorySessions:
    """Sessions in this process: an LRU of at most ``max_sessions``."""

    def __init__(self, *, max_sessions: int, max_age_s: float, idle_s: float, clock: Callable[[], float] = time.time) -> None:
        self.max_sessions, self.max_age_s, self.idle_s = max_sessions, max_age_s, idle_s
        self._clock = clock
        self._sessions: OrderedDict[str, Session] = OrderedDict()

    def __len__(self) -> int:
        return len(self._sessions)

    async def open(self, key_digest: str, key_id: str) -> tuple[str, Session]:
        session_id, session = _new_session(key_digest, key_id, self._clock())
        self._sessions[_hashed(session_id)] = session
        while len(self._sessions) > self.max_sessions:
            self._sessions.popitem(last=False)
        return session_id, session

    async def find(self, session_id: str) -> Session | None:
        hashed = _hashed(session_id)
        session = self._sessions.get(hashed)
        if session is None:
            return None
        now = self._clock()
        if now >= session.expires_at(self.max_age_s, self.idle_s):
            del self._sessions[hashed]
            return None
        session = Session(session.key_digest, session.key_id, session.csrf_token, session.created, now)
        self._sessions[hashed] = session
        self._sessions.move_to_end(hashed)
        return session

    async def close(self, session_id: str) -> None:
        self._sessions.pop(_hashed(session_id), None)

    async def close_for_key(self, key_digest: str) -> int:
        doomed = [h for h, s in self._sessions.items() if hmac.compare_digest(s.key_digest, key_digest)]
        for hashed in doomed:
            del self._sessions[hashed]
        return len(doomed)


class RedisSessions:
    """Sessions in Redis, shared by every worker and instance.

    ``{prefix}:session:{sha256(id)}`` holds the session (JSON), expiring when it would go idle
    or reach its age; ``{prefix}:sessions`` (a sorted set by last use) bounds their number.
    Every call goes through ``run`` (the shared Redis guard, with its timeout): it raises
    :class:`hookgate.redis.RedisUnavailable` when Redis cannot be reached.
    """

    # KEYS: the session, the index. ARGV: hashed id, session JSON, ttl ms, now, most sessions, key prefix.
    OPEN = """
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1])
local extra = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[5])
if extra > 0 then
  for _, old in ipairs(redis.call('ZPOPMIN', KEYS[2], extra)) do
    if old ~= ARGV[1] and string.len(old) == 64 then redis.call('DEL', ARGV[6] .. old) end
  end
end
return 1
"""

    def __init__(self, redis: Any, run: Callable[..., Any], prefix: str, *, max_sessions: int, max_age_s: float, idle_s: float,
                 timeout: float, clock: Callable[[], float] = time.time) -> None:
        self.redis, self._run, self.prefix = redis, run, prefix
        self.max_sessions, self.max_age_s, self.idle_s, self.timeout = max_sessions, max_age_s, idle_s, timeout
        self._clock = clock

    def _key(self, hashed: str) -> str:
        return f"{self.prefix}:session:{hashed}"

    @property
    def _index(self) -> str:
        return f"{self.prefix}:sessions"

    def _ttl_ms(self, session: Session) -> int:
        return max(1, int((session.expires_at(self.max_age_s, self.idle_s) - self._clock()) * 1000))

    async def open(self, key_digest: str, key_id: str) -> tuple[str, Session]:
        session_id, session = _new_session(key_digest, key_id, self._clock())
        hashed = _hashed(session_id)
        redis = self.redis
        await self._run(
            lambda: redis.eval(self.OPEN, 2, self._key(hashed), self._index, hashed, orjson.dumps(asdict(session)),
                               self._ttl_ms(session), session.created, self.max_sessions, f"{self.prefix}:session:"),
            timeout=self.timeout,
        )
        return session_id, session

    async def find(self, session_id: str) -> Session | None:
        hashed, redis = _hashed(session_id), self.redis
        raw = await self._run(lambda: redis.get(self._key(hashed)), timeout=self.timeout)
        if raw is None:
            return None
        stored = orjson.loads(raw)
        now = self._clock()
        session = Session(stored["key_digest"], stored["key_id"], stored["csrf_token"], stored["created"], now)
        if now >= session.created + self.max_age_s:
            return None

        async def touch() -> None:
            async with redis.pipeline(transaction=True) as pipe:
                pipe.set(self._key(hashed), orjson.dumps(asdict(session)), px=self._ttl_ms(session), xx=True)
                pipe.zadd(self._index, {hashed: now}, xx=True)
                await pipe.execute()

        await self._run(touch, timeout=self.timeout)
        return session

    async def close(self, session_id: str) -> None:
        hashed, redis = _hashed(session_id), self.redis

        async def delete() -> None:
            async with redis.pipeline(transaction=True) as pipe:
                pipe.delete(self._key(hashed))
                pipe.zrem(self._index, hashed)
                await pipe.execute()

        await self._run(delete, timeout=self.timeout)

    async def close_for_key(self, key_digest: str) -> int:
        redis = self.redis
        hashed_ids = await self._run(lambda: redis.zrange(self._index, 0, -1), timeout=self.timeout)
        closed = 0
        for hashed in hashed_ids:
            hashed = hashed.decode() if isinstance(hashed, bytes) else hashed
            raw = await self._run(lambda h=hashed: redis.get(self._key(h)), timeout=self.timeout)
            if raw is not None and hmac.compare_digest(orjson.loads(raw)["key_digest"], key_digest):
                await self._run(lambda h=hashed: redis.delete(self._key(h)), timeout=self.timeout)
                await self._run(lambda h=hashed: redis.zrem(self._index, h), timeout=self.timeout)
                closed += 1
        return closed
