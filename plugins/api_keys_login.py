"""The dashboard's login: ``/-/api/session`` trades an admin key for a session cookie.

    POST   /-/api/session   {"key": "<admin key>"} → Set-Cookie, {"key_id", "csrf_token", "expires_at"}
    GET    /-/api/session   the current session's key id, CSRF token and expiry (401 without one)
    DELETE /-/api/session   log out (needs the CSRF token)

The cookie (``hookgate_session``) is ``HttpOnly`` (no script reads it), ``SameSite=Strict``
(no other site's page sends it), ``Path=/-/`` (never sent to ``/v1/…``) and ``Secure`` over
HTTPS; it holds a random session id, never the key. How a session authenticates a request is
:meth:`SessionLogin.key_of_session`: the CSRF token (``X-CSRF-Token``, which only the dashboard's
own script can send: another origin cannot set it without a CORS grant the gateway never gives)
is required on every method that changes something, and whenever the caller cannot tell the
method (the ``authenticate`` hook sees headers only); the session's admin key is looked up
again each time. The login body must be JSON, which a cross-site form cannot send.
"""
from __future__ import annotations

import hmac
from typing import TYPE_CHECKING, Any, Mapping
from urllib.parse import urlsplit

import orjson
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from hookgate import AuthenticationFailed, ClientKey, GatewayError, InvalidRequest, PermissionDenied, ServiceUnavailable
from hookgate.openapi import operation
from hookgate.redis import RedisUnavailable

from .api_keys_admin import read_json_body
from .api_keys_sessions import COOKIE_NAME, CSRF_HEADER, Session, SessionStore, session_id_of
from .api_keys_store import key_digest

if TYPE_CHECKING:
    from .api_keys import ApiKeys

__all__ = ["SessionLogin", "SESSION_PATH", "SAFE_METHODS"]

SESSION_PATH = "/-/api/session"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_NO_STORE = {"Cache-Control": "no-store"}
_MAX_KEY_CHARS = 4096


class LoginBody(BaseModel):
    """What the login form sends."""

    model_config = ConfigDict(extra="forbid")

    key: str = Field(min_length=1, max_length=_MAX_KEY_CHARS, description="an admin gateway key")


SESSION_SCHEMA = {"type": "object", "properties": {
    "key_id": {"type": "string"}, "csrf_token": {"type": "string", "description": "send as X-CSRF-Token with every request"},
    "expires_at": {"type": "number", "description": "seconds since the epoch, if it is not used before"}}}


class SessionLogin:
    """Login, logout, and the session check behind the plugin's ``authenticate`` and
    ``authorize_admin`` hooks."""

    def __init__(self, plugin: ApiKeys) -> None:
        self.plugin = plugin
        self.sessions: SessionStore | None = None
        """Set by the plugin when it starts (in memory, or in Redis)."""

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_post(SESSION_PATH, self.login)
        router.add_get(SESSION_PATH, self.current)
        router.add_delete(SESSION_PATH, self.logout)

    @operation(summary="Log in with an admin key: sets the session cookie", body=LoginBody, response=SESSION_SCHEMA, tag="session")
    async def login(self, request: web.Request) -> web.Response:
        body = await read_json_body(request, limit=_MAX_KEY_CHARS + 1024)
        try:
            presented = LoginBody.model_validate(body).key
        except ValidationError:
            raise InvalidRequest("Send {\"key\": \"<your admin key>\"}.", param="key", code="invalid_parameter") from None
        key = await self.plugin.key_of(presented)
        if not key.admin:
            raise PermissionDenied("This key is not an admin key.", code="admin_required")
        session_id, session = await self._store(lambda store: store.open(key_digest(presented), key.id))
        response = self._answer(session)
        response.set_cookie(
            COOKIE_NAME, session_id, path="/-/", httponly=True, samesite="Strict", secure=self._secure(request),
            max_age=int(self.plugin.config.session_max_age_s),
        )
        return response

    @operation(summary="The current session (its CSRF token), or 401", response=SESSION_SCHEMA, tag="session")
    async def current(self, request: web.Request) -> web.Response:
        session, _ = await self.checked(request.headers, method="GET")
        return self._answer(session)

    @operation(summary="Log out: the session ends and its cookie is cleared", tag="session")
    async def logout(self, request: web.Request) -> web.Response:
        session_id = session_id_of(request.headers.get("Cookie"))
        if session_id is not None:
            try:
                await self.checked(request.headers, method="DELETE", origin_host=request.host)
            except AuthenticationFailed:
                pass  # already over: just clear the cookie (a live session still needs its CSRF token)
            else:
                await self._store(lambda store: store.close(session_id))
        response = web.Response(body=b'{"logged_out":true}', content_type="application/json", headers=_NO_STORE)
        response.del_cookie(COOKIE_NAME, path="/-/")
        return response

    # ---------------------------------------------------------------- authenticating with it ---

    def bears_session(self, headers: Mapping[str, str]) -> bool:
        return self.sessions is not None and session_id_of(headers.get("Cookie")) is not None

    async def key_of_session(self, headers: Mapping[str, str], *, method: str | None, origin_host: str | None = None) -> ClientKey:
        """The admin key behind the request's session cookie, checked now.

        :param method: the request's method; None when unknown (then the CSRF token is needed).
        :param origin_host: the host the request was sent to, to check its ``Origin`` against.
        Raises 401 when the session is missing or over, 403 without the CSRF token it needs or
        when its key is no longer an admin key (the session then ends).
        """
        return (await self.checked(headers, method=method, origin_host=origin_host))[1]

    async def checked(self, headers: Mapping[str, str], *, method: str | None, origin_host: str | None = None) -> tuple[Session, ClientKey]:
        session_id = session_id_of(headers.get("Cookie"))
        if session_id is None or self.sessions is None:
            raise AuthenticationFailed("Log in to the dashboard first.", code="session_required")
        session = await self._store(lambda store: store.find(session_id))
        if session is None:
            raise AuthenticationFailed("Your dashboard session has ended; log in again.", code="session_expired")
        if method is None or method.upper() not in SAFE_METHODS:
            given = headers.get(CSRF_HEADER, "")
            if not given or not hmac.compare_digest(given.encode(), session.csrf_token.encode()):
                raise PermissionDenied("This request needs the session's CSRF token (X-CSRF-Token).", code="csrf_token_invalid")
            origin = headers.get("Origin")
            if origin is not None and origin_host is not None and urlsplit(origin).netloc != origin_host:
                raise PermissionDenied("This request comes from another site.", code="cross_origin_request")
        try:
            key = await self.plugin.key_of_digest(session.key_digest)
        except AuthenticationFailed:
            await self._store(lambda store: store.close(session_id))
            raise AuthenticationFailed("The key of this session was revoked; log in again.", code="session_expired") from None
        if not key.admin:
            await self._store(lambda store: store.close(session_id))
            raise PermissionDenied("The key of this session is no longer an admin key.", code="admin_required")
        return session, key

    # ------------------------------------------------------------------------------ helpers ---

    async def _store(self, call: Any) -> Any:
        if self.sessions is None:
            raise GatewayError("Dashboard sessions are not enabled.", status=404, code="sessions_disabled")
        try:
            return await call(self.sessions)
        except RedisUnavailable:
            raise ServiceUnavailable("The session store (Redis) cannot be reached.", code="session_store_unavailable",
                                     headers={"Retry-After": "1"}) from None

    def _answer(self, session: Session) -> web.Response:
        config = self.plugin.config
        body = {"key_id": session.key_id, "csrf_token": session.csrf_token,
                "expires_at": session.expires_at(config.session_max_age_s, config.session_idle_s)}
        return web.Response(body=orjson.dumps(body), content_type="application/json", headers=_NO_STORE)

    def _secure(self, request: web.Request) -> bool:
        configured = self.plugin.config.session_cookie_secure
        return request.secure if configured is None else configured
