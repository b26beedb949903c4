"""The provider contract: what a provider plugin registers with ``register_providers``."""
from __future__ import annotations

from typing import TYPE_CHECKING, Iterable, Protocol, runtime_checkable

if TYPE_CHECKING:
    from .context import RequestContext
    from .responses import ProviderResponse

__all__ = ["Provider"]


@runtime_checkable
class Provider(Protocol):
    """Something that answers chat requests for a set of model names.

    The core routes a request to the provider that lists its ``model`` and calls ``complete`` at
    the innermost end of the ``call_provider`` middleware chain. ``complete`` must not retry or
    apply timeouts of its own (the reliability plugins own those), and for a stream it should
    return only once the upstream has accepted the request, so that an error raised before the
    first chunk can still be retried or turned into a clean HTTP error.
    """

    name: str
    """Shown in ``x-hookgate-provider`` and logs."""

    def models(self) -> Iterable[str]:
        """The public model names this provider serves."""
        ...

    async def complete(self, ctx: RequestContext) -> ProviderResponse:
        """Answer ``ctx.body``: a :class:`Completion`, or a :class:`CompletionStream` when
        ``ctx.stream`` is true. Raise a :class:`GatewayError` for failures."""
        ...
