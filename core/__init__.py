"""hookgate: an asynchronous LLM gateway whose every feature is a pluggy plugin.

The public surface for plugin authors is what this module exports; everything else is internal.

    from hookgate import hookimpl, PluginConfig, RequestContext, Completion, RateLimited
"""
from .cache_keys import cache_key, canonical_json
from .config import PluginConfig
from .context import Attempt, CacheStatus, ClientKey, RequestContext
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
    completion_to_chunks,
    is_complete,
    with_first_chunk,
)

__version__ = "0.1.0"

__all__ = [
    "hookimpl",
    "hookspec",
    "PluginConfig",
    "RequestContext",
    "CacheStatus",
    "Provider",
    "Readiness",
    "Completion",
    "CompletionStream",
    "ProviderResponse",
    "assemble_stream",
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
    "RateLimited",
    "InternalError",
    "UpstreamError",
    "ServiceUnavailable",
    "GatewayTimeout",
    "ClientDisconnected",
]
