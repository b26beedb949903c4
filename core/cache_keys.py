"""The response-cache key: one definition for every cache plugin (DESIGN.md, invariant 7).

The key covers everything that changes the answer and nothing that does not. Rather than list
what matters (and silently serve a wrong answer when OpenAI adds a parameter), it takes the whole
request body minus the fields known not to change the output, so a new parameter makes the key
stricter, never wrong. The stream flag is excluded: a cached answer can be replayed either way.
"""
from __future__ import annotations

import hashlib
from typing import Any

from typing import TYPE_CHECKING

import orjson

from .routing import Route, upstream_body
from .state import StateKey

if TYPE_CHECKING:
    from .context import RequestContext

__all__ = ["cache_key", "cache_identity", "canonical_json", "KEY_VERSION", "NON_OUTPUT_FIELDS"]

_DIGEST: StateKey[tuple["Route | None", str]] = StateKey("cache_key.digest", tuple, "the digest computed for a route, memoised")

KEY_VERSION = "v2"
"""Bumped whenever the key's definition changes, so old entries are never read with new meaning."""

NON_OUTPUT_FIELDS = frozenset({"stream", "stream_options", "user", "metadata", "store", "service_tier", "safety_identifier", "prompt_cache_key"})
"""Request fields that do not change the generated answer."""


_INT64 = 2**63


def canonical(value: Any) -> Any:
    """Normalise a JSON value so equal requests serialise equally.

    Nulls inside objects are dropped (absent and null mean the same to the API), and a float with
    an integral value within the 64-bit range becomes an int (``1 == 1.0``; ``1e300`` stays a
    float, which orjson can write). Keys are sorted at serialisation.
    """
    if isinstance(value, dict):
        return {k: canonical(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [canonical(v) for v in value]
    if isinstance(value, float) and value.is_integer() and -_INT64 <= value < _INT64:
        return int(value)
    return value


def canonical_json(value: Any) -> bytes:
    """Canonical JSON bytes of ``value`` (sorted keys, normalised as :func:`canonical` says)."""
    return orjson.dumps(canonical(value), option=orjson.OPT_SORT_KEYS)


def cache_key(ctx: RequestContext, *, shared: bool = False) -> str:
    """The cache key of a request: ``hookgate:cache:v2:<namespace>:<sha256>``.

    :param shared: when true, every tenant shares one namespace; otherwise answers are scoped to
        ``ctx.tenant`` (anonymous requests share the ``anon`` namespace).

    The material is the body as the routed provider receives it (upstream model name, route
    defaults applied), plus the provider's name and the surface: aliases of one route share
    answers, re-routing a model in plugins.toml never replays another provider's answers, and an
    answer given through one API (``/v1/messages``) is never served through another.

    The digest is computed once per request and route (memory and Redis caches in one pipeline
    share it); a plugin that rewrites ``ctx.body`` must do so before ``cache_lookup``.
    """
    route = ctx.route
    identity = route.balanced or route if route is not None else None
    memo = ctx.get(_DIGEST)
    if memo is not None and memo[0] is identity:
        digest = memo[1]
    else:
        body, provider = cache_identity(ctx)
        material = {k: v for k, v in body.items() if k not in NON_OUTPUT_FIELDS}
        material["__provider__"] = provider
        material["__surface__"] = ctx.surface  # the same prompt asked through two APIs is two entries
        digest = hashlib.sha256(canonical_json(material)).hexdigest()
        ctx[_DIGEST] = (identity, digest)
    namespace = "shared" if shared else (ctx.tenant or "anon")
    return f"hookgate:cache:{KEY_VERSION}:{namespace}:{digest}"


def cache_identity(ctx: RequestContext) -> tuple[dict[str, Any], str]:
    """What a cache must tell requests apart by: the body as the routed provider receives it and
    the provider's name; for a load-balanced route, the body with the route's defaults under the
    public model name, and the route itself in place of a provider.

    Every deployment of a balanced route serves the same public model, so one answer serves them
    all, and the identity must not change between the lookup (before a deployment is picked) and
    the store (after one answered).
    """
    route = ctx.route
    balanced = route.balanced if route is not None else None
    if balanced is None:
        return upstream_body(ctx), ctx.provider_name
    body = {**balanced.params, **ctx.body, "model": balanced.model} if balanced.params else {**ctx.body, "model": balanced.model}
    return body, f"balanced:{balanced.model}"
