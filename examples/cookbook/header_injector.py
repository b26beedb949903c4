"""header_injector: adds response headers to every answer: fixed ones from its settings, and one
naming the key the request was authenticated with.

Where a header is set decides which answers carry it. A stream's headers leave with its first
chunk, and ``after_response`` runs after its last, so a header meant for every answer (JSON,
stream, cache hit) is set in ``before_request``, which every request that is answered went
through. The key comes from the ``CLIENT_KEY`` fact, which an auth plugin (``api_keys``, or one of
your own) produces in ``authenticate``, before ``before_request``: the rule
``Reads(CLIENT_KEY, "before_request")`` declares it, and the gateway checks at start-up that its
producer runs in time.

Header names and values come from the operator, but a value with a line break would split the
response (header injection), so both are validated at start-up: names are RFC 9110 tokens, values
printable text, and the headers the core owns are refused.

    [gateway]
    pipeline = ["api_keys", "header_injector", "memory_cache", "echo"]

    [plugins.header_injector]
    headers = { "x-served-by" = "gateway-eu-1", "x-robots-tag" = "noindex" }
    key_header = "x-key-id"
"""
from __future__ import annotations

import re

from pydantic import Field, field_validator

from hookgate import PluginConfig, RequestContext, hookimpl
from hookgate.facts import CLIENT_KEY
from hookgate.rules import Reads

__all__ = ["HeaderInjector", "HeaderInjectorConfig"]

_TOKEN = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,64}$")
"""An HTTP field name (RFC 9110 token), at most 64 characters."""
_VALUE = re.compile(r"^[\x20-\x7e\t]{0,512}$")
"""A field value: printable ASCII (no line break, no control character), at most 512 characters."""
OWNED_BY_THE_CORE = ("content-type", "content-length", "transfer-encoding", "connection", "x-request-id")
"""Headers the core sets itself; ``x-hookgate-*`` too."""


def _check_name(name: str) -> str:
    if not _TOKEN.match(name):
        raise ValueError(f"{name!r} is not a header name (letters, digits and !#$%&'*+.^_`|~- only, at most 64)")
    lowered = name.lower()
    if lowered in OWNED_BY_THE_CORE or lowered.startswith("x-hookgate-"):
        raise ValueError(f"{name!r} is set by the gateway itself")
    return lowered


class HeaderInjectorConfig(PluginConfig):
    """Settings of ``[plugins.header_injector]``."""

    headers: dict[str, str] = Field(default_factory=dict, max_length=32, description="response headers added to every answer")
    key_header: str | None = Field(None, description="a header naming the authenticated key's id (left out for anonymous requests)")

    @field_validator("headers")
    @classmethod
    def _valid_headers(cls, headers: dict[str, str]) -> dict[str, str]:
        checked = {}
        for name, value in headers.items():
            if not _VALUE.match(value):
                raise ValueError(f"the value of {name!r} must be printable text without line breaks, at most 512 characters")
            checked[_check_name(name)] = value
        return checked

    @field_validator("key_header")
    @classmethod
    def _valid_key_header(cls, name: str | None) -> str | None:
        return None if name is None else _check_name(name)


class HeaderInjector:
    """Adds fixed response headers, and one naming the caller's key, to every answer."""

    Config = HeaderInjectorConfig
    rules = (Reads(CLIENT_KEY, "before_request", why="the key header names the authenticated key"),)

    def __init__(self, config: HeaderInjectorConfig) -> None:
        self.config = config

    @hookimpl
    async def before_request(self, ctx: RequestContext) -> None:
        ctx.response_headers.update(self.config.headers)
        if self.config.key_header is not None:
            key = ctx.get(CLIENT_KEY)
            if key is not None:
                ctx.response_headers[self.config.key_header] = key.id
