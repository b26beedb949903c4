"""Output filters: what the client sees, apart from what the pipeline keeps.

A plugin that changes the answer *for this client only* (restoring the values guardrails masked
before the provider saw them, say) must not change what caches store or observers record: a cached
answer serves other clients too. So it does not edit the answer in a hook; it adds an
:class:`OutputFilter` to the request, and the core applies it while writing bytes, after every
``after_response`` hook has seen the canonical answer::

    from hookgate.output import add_output_filter

    @hookimpl
    async def before_request(self, ctx):
        add_output_filter(ctx, Restorer(values))

For a JSON answer the core calls ``body`` with a copy of the answer's body; for a stream it calls
``chunk`` for every chunk (a filter may hold text back and return nothing, or return several
chunks) and ``end`` once after the last one, before the stream's end; a cached answer replayed as
a stream goes through ``chunk`` too. Filters run in the order they were added. A filter that
raises ends the answer with an error (as a broken upstream would): keep them simple and bounded.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from .state import StateKey

if TYPE_CHECKING:
    from .context import RequestContext

__all__ = ["OutputFilter", "OUTPUT_FILTERS", "add_output_filter", "output_filters"]


@runtime_checkable
class OutputFilter(Protocol):
    """Changes what one client receives of an answer."""

    def body(self, body: dict[str, Any]) -> dict[str, Any]:
        """The complete answer's body as the client gets it (``body`` is a copy: edit it freely)."""
        ...

    def chunk(self, chunk: dict[str, Any]) -> list[dict[str, Any]]:
        """The chunks to send in place of ``chunk`` (a copy: edit it freely), none while text
        is held back."""
        ...

    def end(self) -> list[dict[str, Any]]:
        """Chunks still held back, sent after the last one and before the stream's end."""
        ...


OUTPUT_FILTERS: StateKey[list[OutputFilter]] = StateKey(
    "output_filters", list, "The output filters the core applies to this request's answer, in order."
)


def add_output_filter(ctx: RequestContext, output_filter: OutputFilter) -> None:
    """Apply ``output_filter`` to what this request's client receives."""
    ctx.setdefault(OUTPUT_FILTERS, []).append(output_filter)


def output_filters(ctx: RequestContext) -> list[OutputFilter]:
    """The request's output filters (empty for most requests)."""
    return ctx.get(OUTPUT_FILTERS) or []
