"""hookgate: an asynchronous LLM gateway whose every feature is a pluggy plugin.

The public surface for plugin authors is what this module exports plus the modules listed in
:data:`PUBLIC_MODULES` (each with its own ``__all__``); everything else is internal, and the
built-in plugins use nothing else (a test checks it).

    from hookgate import hookimpl, PluginConfig, RequestContext, Completion, RateLimited
"""
from .cache_keys import cache_key, canonical_json
from .config import PluginConfig
from .context import Attempt, CacheStatus, ClientKey, RequestContext
from .events import Outcome
from .registry import PluginLoadError
from .state import StateKey
from .errors import (
    AuthenticationFailed,
    ClientDisconnected,
    GatewayError,
    GatewayTimeout,
    InternalError,
    InvalidRequest,
    ModelNotFound,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    RequestTimeout,
    RateLimited,
    ServiceUnavailable,
    UpstreamError,
)
from .health import Readiness
from .markers import hookimpl, hookspec
from .provider import Provider
from .responses import (
    Completion,
    CompletionStream,
    ProviderResponse,
    assemble_stream,
    check_chunk,
    check_completion,
    completion_to_chunks,
    is_complete,
    with_first_chunk,
)

__version__ = "0.1.0"

PUBLIC_MODULES = (
    "hookgate",
    "hookgate.accounting",
    "hookgate.balancing",
    "hookgate.balancing_redis",
    "hookgate.bounds",
    "hookgate.cache_control",
    "hookgate.chat_request",
    "hookgate.cache_keys",
    "hookgate.conversations",
    "hookgate.conversations_redis",
    "hookgate.detectors",
    "hookgate.dispatch",
    "hookgate.embeddings",
    "hookgate.events",
    "hookgate.facts",
    "hookgate.hookspecs",
    "hookgate.http",
    "hookgate.logs",
    "hookgate.messages",
    "hookgate.openapi",
    "hookgate.output",
    "hookgate.provider_kit",
    "hookgate.redis",
    "hookgate.routing",
    "hookgate.rules",
    "hookgate.sse",
    "hookgate.surfaces",
    "hookgate.tasks",
    "hookgate.testing",
    "hookgate.upstream",
    "hookgate.web",
    "hookgate.wire",
)
"""The documented modules a plugin may import from (docs/reference.md lists their names); a
module under one of them (``hookgate.testing.openai_emulator``) is public too."""

__all__ = [
    "hookimpl",
    "hookspec",
    "PluginConfig",
    "PluginLoadError",
    "RequestContext",
    "StateKey",
    "Outcome",
    "CacheStatus",
    "Provider",
    "Readiness",
    "Completion",
    "CompletionStream",
    "ProviderResponse",
    "assemble_stream",
    "check_chunk",
    "check_completion",
    "completion_to_chunks",
    "is_complete",
    "with_first_chunk",
    "Attempt",
    "ClientKey",
    "cache_key",
    "canonical_json",
    "GatewayError",
    "InvalidRequest",
    "AuthenticationFailed",
    "PermissionDenied",
    "NotFound",
    "ModelNotFound",
    "PayloadTooLarge",
    "RequestTimeout",
    "RateLimited",
    "InternalError",
    "UpstreamError",
    "ServiceUnavailable",
    "GatewayTimeout",
    "ClientDisconnected",
]
