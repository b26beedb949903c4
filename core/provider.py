"""The provider contract: what a provider plugin registers with ``register_providers``."""
from __future__ import annotations

from typing import TYPE_CHECKING, Iterable, Protocol, runtime_checkable

if TYPE_CHECKING:
    from .context import RequestContext
    from .responses import ProviderResponse

__all__ = ["Provider", "kinds_of", "passes_through", "KINDS_ATTRIBUTE", "WIRES_ATTRIBUTE"]


@runtime_checkable
class Provider(Protocol):
    """Something that answers requests for a set of model names (chat by default; see
    :data:`KINDS_ATTRIBUTE` and :data:`WIRES_ATTRIBUTE` for other kinds and native pass-through).

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


KINDS_ATTRIBUTE = "kinds"
"""Optional provider attribute: the kinds of canonical request it answers (``{"chat"}`` when
absent; ``"embeddings"``, ``"completions"``). A model served by a provider that does not answer a
request's kind is a 404 naming the model and the kind."""

WIRES_ATTRIBUTE = "wires"
"""Optional provider attribute: the surfaces' wire formats it speaks natively
(``{"anthropic.messages"}``); with a ``complete_native(ctx)`` method, the core passes a request of
such a surface through (``ctx.native``) while no plugin changed the canonical body."""


def kinds_of(provider: object) -> frozenset[str]:
    """The kinds of request ``provider`` answers."""
    return frozenset(getattr(provider, KINDS_ATTRIBUTE, ("chat",)))


def passes_through(provider: object, wire: str) -> bool:
    """Whether ``provider`` can answer a request of the ``wire`` format natively."""
    return wire in getattr(provider, WIRES_ATTRIBUTE, ()) and callable(getattr(provider, "complete_native", None))
