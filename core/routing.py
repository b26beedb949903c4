"""Routes: which provider answers a public model name, as which upstream model."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping

if TYPE_CHECKING:
    from .provider import Provider

__all__ = ["Route"]


@dataclass(frozen=True, slots=True)
class Route:
    """One way to answer a public model name.

    ``upstream_model`` is the name the provider is asked for; ``params`` are default request
    parameters (a client's own values win); ``fallbacks`` are further public model names tried in
    order when this route fails with a retriable error before the first byte reached the client.
    """

    model: str
    provider: Provider
    upstream_model: str
    params: Mapping[str, Any] = field(default_factory=dict)
    fallbacks: tuple[str, ...] = ()
