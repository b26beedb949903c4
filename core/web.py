"""What a plugin's own HTTP routes need: who is asking, and whether they may.

Routes a plugin adds in ``register_routes`` (``/metrics``, ``/v1/usage``, an admin page) answer
outside the chat pipeline, but use the same authentication and admin rules as the core::

    from hookgate.web import identify, require_admin

    async def usage(self, request):
        caller = await identify(request)        # the ClientKey, or None for anonymous
        if caller is None or not caller.admin:
            await require_admin(request)         # every authorize_admin hook must accept
        ...

Both ask the pipeline that is current when the request arrives, so a live reload that changes the
keys takes effect for plugin routes too. Raise a :class:`~hookgate.GatewayError` from a route
handler for a failure: the core answers in OpenAI's error shape.
"""
from __future__ import annotations

from typing import Any, Mapping

from aiohttp import web

from .errors import InternalError
from .identity import ClientKey, credential_tenant
from .pipelines import PIPELINES

__all__ = ["identify", "require_admin", "presented_key", "tenant_of", "metrics_collectors", "describe_pipeline"]


async def identify(request: web.Request) -> ClientKey | None:
    """The gateway key ``request`` presents, by the ``authenticate`` hooks of the current
    pipeline; None when no plugin authenticates (anonymous). Raises
    :class:`~hookgate.AuthenticationFailed` for a wrong or missing key when an auth plugin is on."""
    runner = request.app[PIPELINES].current.runner
    if not runner.calls("authenticate"):
        return None
    _, key = await runner.first("authenticate", credential=presented_key(request.headers), headers=request.headers)
    if key is not None and not isinstance(key, ClientKey):
        raise InternalError(f"An authenticate hook returned {type(key).__name__}, not a ClientKey.")
    return key


async def tenant_of(request: web.Request) -> str | None:
    """Whose request this is, by the rule the chain applies (``ctx.tenant``): the gateway key's
    cache namespace or id, else a hash of the credential (never the credential), else None for an
    anonymous request. For plugin routes that serve what a request of the chain stored."""
    key = await identify(request)
    if key is not None:
        return key.cache_namespace or key.id
    credential = presented_key(request.headers)
    return credential_tenant(credential) if credential else None


async def require_admin(request: web.Request) -> None:
    """Let ``request`` through only if every ``authorize_admin`` hook of the current pipeline
    accepts it (each raises ``AuthenticationFailed``/``PermissionDenied`` to refuse). With no such
    hook, admin routes are open: bind the gateway to a private address or enable an auth plugin."""
    await request.app[PIPELINES].current.runner.each("authorize_admin", request=request)


def metrics_collectors(app: web.Application) -> list[object]:
    """The Prometheus collectors the current pipeline's plugins offered (``register_metrics``),
    for whatever serves ``/metrics``."""
    return list(app[PIPELINES].current.collectors)


async def describe_pipeline(request: web.Request) -> dict[str, Any]:
    """The running pipeline as ``GET /-/plugins`` reports it, for a plugin's admin route: the
    plugins in order with their roles, rules, config schema and effective values (every secret
    masked: ``SecretStr`` fields, passwords in URLs, and string values of fields named like a
    credential), the hook order, the routable models, and the load-balanced routes with each
    deployment's live state.

    Call :func:`require_admin` first: the report is for administrators.
    """
    from .introspection import live_route_table, pipeline_report  # the report imports the whole pipeline machinery

    gateway = request.app[PIPELINES].current
    report = pipeline_report(gateway.config, gateway)
    report["routes"] = await live_route_table(gateway)
    return report


def presented_key(headers: Mapping[str, str]) -> str | None:
    """The key a request presents: ``Authorization: Bearer <key>``, else ``x-api-key``; None when
    it sends neither (or a header that is not a well-formed credential)."""
    authorization = headers.get("Authorization")
    if authorization:
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() == "bearer" and token and _plausible(token):
            return token
    key = headers.get("x-api-key")
    return key if key and _plausible(key) else None


def _plausible(token: str) -> bool:
    """A credential is printable ASCII of a bounded length; anything else is no credential at
    all (never a 500, never compared)."""
    return len(token) <= 4096 and token.isascii() and token.isprintable()
