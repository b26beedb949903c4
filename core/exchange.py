"""One request's run through the pipeline: the one owner of its phases and of its ending.

The HTTP layer reads the request and writes bytes; everything between is an :class:`Exchange`.
It runs the phases in order (``authenticate``, ``before_request``, routing, ``cache_lookup``, the
``call_provider`` chain), and it alone ends the request: exactly one of ``after_response`` or
``on_error`` is called, once, whatever way the request ends (a JSON answer, a relayed stream, a
cache hit replayed, an upstream stream drained for a JSON client, a client that went away), and
then ``request_finished`` is emitted, once, with the outcome. Observers are told of every phase
and attempt at the same points whatever the pipeline's order.
"""
from __future__ import annotations

from time import perf_counter
from typing import TYPE_CHECKING, Any

import structlog

from .context import RequestContext
from .errors import GatewayError, InternalError, ModelNotFound
from .events import Outcome
from .facts import CLIENT_KEY, COST_USD, USAGE
from .identity import ClientKey
from .responses import Completion, ProviderResponse

if TYPE_CHECKING:
    from .gateway import Gateway

__all__ = ["Exchange", "as_gateway_error"]

log = structlog.get_logger("hookgate.exchange")

_MAX_MODEL_ECHO = 256
"""Characters of a client's model name that an error message quotes."""


class Exchange:
    """The phases of one request, and its single ending."""

    __slots__ = ("gateway", "ctx", "kind", "response", "error", "phases", "_settled", "_finished", "_observe_phases")

    def __init__(self, gateway: Gateway, ctx: RequestContext, kind: str | None = None) -> None:
        self.gateway = gateway
        self.ctx = ctx
        self.kind = kind or ctx.kind
        """What the canonical request asks for (``chat``, ``embeddings``, ``completions``)."""
        self.response: Completion | None = None
        """The complete answer, once ``after_response`` was called with it."""
        self.error: GatewayError | None = None
        """What the client was told, once the request failed."""
        self.phases: dict[str, float] = {}
        self._settled = False
        self._finished = False
        runner = gateway.runner
        self._observe_phases = bool(runner.calls("phase_started") or runner.calls("phase_finished"))
        if runner.calls("request_started"):
            runner.emit("request_started", ctx=ctx)

    # ---------------------------------------------------------------------------- phases ---

    async def authenticate(self) -> None:
        """Ask the ``authenticate`` hooks who the client is, from its headers alone."""
        runner = self.gateway.runner
        if not runner.calls("authenticate"):
            return
        ctx = self.ctx
        started = self._phase_start("authenticate")
        outcome = "ok"
        try:
            _, key = await runner.first("authenticate", credential=ctx.api_key, headers=ctx.headers)
        except BaseException as exc:
            outcome = type(exc).__name__
            raise
        finally:
            self._phase_done("authenticate", started, outcome)
        if key is not None:
            if not isinstance(key, ClientKey):
                raise InternalError(f"An authenticate hook returned {type(key).__name__}, not a ClientKey (request id {ctx.request_id}).")
            ctx[CLIENT_KEY] = key
            ctx.tenant = key.cache_namespace or key.id

    async def answer(self) -> ProviderResponse:
        """Run the request phases up to the provider's answer: a complete one, or a stream whose
        first chunk is in hand."""
        gateway, ctx = self.gateway, self.ctx
        runner = gateway.runner
        started = self._phase_start("before_request")
        outcome = "ok"
        try:
            await runner.each("before_request", ctx=ctx)
        except BaseException as exc:
            outcome = type(exc).__name__
            raise
        finally:
            self._phase_done("before_request", started, outcome)
        route = gateway.routes.resolve(ctx.body["model"])
        if route is None:
            raise ModelNotFound(
                f"The model '{_clipped(ctx.body['model'])}' does not exist or is not served by this gateway.", param="model"
            )
        if self.kind not in route.kinds:
            raise ModelNotFound(f"The model '{_clipped(ctx.body['model'])}' does not serve {self.kind} requests.", param="model")
        ctx.route, ctx.provider = route, route.provider
        if gateway.has_cache:
            ctx.cache_status = "MISS"
            started = self._phase_start("cache_lookup")
            outcome = "ok"
            try:
                source, hit = await runner.first("cache_lookup", ctx=ctx)
                if hit is not None:
                    outcome = "hit"
                    if not ctx.cache_hit:
                        ctx.cache_status = "HIT"
                    ctx.cache_source = source
                    return hit
            except BaseException as exc:
                outcome = type(exc).__name__
                raise
            finally:
                self._phase_done("cache_lookup", started, outcome)
        started = self._phase_start("call_provider")
        outcome = "ok"
        try:
            return await gateway.call_provider(ctx, route, self.kind)
        except BaseException as exc:
            outcome = type(exc).__name__
            raise
        finally:
            self._phase_done("call_provider", started, outcome)

    # ---------------------------------------------------------------------------- ending ---

    async def complete(self, completion: Completion) -> None:
        """The answer is complete: run ``after_response`` (once).

        An exception from a hook becomes the request's error (re-raised as a GatewayError for the
        caller to send, if nothing was sent yet); ``on_error`` is then not called.
        """
        if self._settled:
            return
        self._settled = True
        self.response = completion
        started = self._phase_start("after_response")
        outcome = "ok"
        try:
            await self.gateway.runner.each("after_response", ctx=self.ctx, response=completion)
        except Exception as exc:
            outcome = type(exc).__name__
            self.error = as_gateway_error(exc, self.ctx.request_id)
            self.ctx.status = self.error.status
            if not isinstance(exc, GatewayError):
                log.error("after_response_failed", request_id=self.ctx.request_id, exc_info=exc)
            raise self.error from exc
        finally:
            self._phase_done("after_response", started, outcome)

    async def fail(self, error: GatewayError) -> None:
        """The request failed with ``error`` (what the client is told): run ``on_error`` (once;
        nothing when the request already ended)."""
        if self._settled:
            if self.error is None and isinstance(error, GatewayError) and error.status == 499:
                self.error = error  # the answer was complete, but its client left before the last byte
                self.ctx.status = error.status
            return
        self._settled = True
        self.error = error
        self.ctx.status = error.status
        started = self._phase_start("on_error")
        await self.gateway.runner.notify("on_error", ctx=self.ctx, error=error)
        self._phase_done("on_error", started, "ok")

    def finish(self) -> None:
        """Emit ``request_finished`` (once). Call it when the last byte was sent or the client is
        gone; a request that was never settled counts as an internal error."""
        if self._finished:
            return
        self._finished = True
        ctx = self.ctx
        if not self._settled:
            # Only a bug can leave a request unsettled: say so rather than count it as answered.
            self._settled = True
            self.error = InternalError(f"The gateway failed to process this request (request id {ctx.request_id}).")
            ctx.status = self.error.status
        runner = self.gateway.runner
        if not runner.calls("request_finished"):
            return
        now = perf_counter()
        response = self.response if self.error is None else None
        usage = ctx.get(USAGE)
        if usage is None and self.response is not None:
            usage = self.response.usage
        outcome = Outcome(
            status=ctx.status,
            error=self.error,
            response=response,
            usage=usage,
            cost_usd=ctx.get(COST_USD),
            total_seconds=now - ctx.started_at,
            upstream_seconds=ctx.upstream_seconds,
            time_to_first_byte_seconds=None if ctx.first_byte_at is None else ctx.first_byte_at - ctx.started_at,
            phases=self.phases,
        )
        runner.emit("request_finished", ctx=ctx, outcome=outcome)

    def _phase_start(self, phase: str) -> float:
        started = perf_counter()
        if self._observe_phases:
            self.gateway.runner.emit("phase_started", ctx=self.ctx, phase=phase, started_at=started)
        return started

    def _phase_done(self, phase: str, started: float, outcome: str) -> None:
        seconds = perf_counter() - started
        self.phases[phase] = seconds
        if self._observe_phases:
            self.gateway.runner.emit("phase_finished", ctx=self.ctx, phase=phase, started_at=started, seconds=seconds, outcome=outcome)


def as_gateway_error(exc: BaseException, request_id: str) -> GatewayError:
    """What the client is told about ``exc``: itself if it is a GatewayError, else a 500 that
    names the request id (the traceback goes to the server log only)."""
    if isinstance(exc, GatewayError):
        return exc
    return InternalError(f"The gateway failed to process this request (request id {request_id}).")


def _clipped(value: Any) -> str:
    """A client-chosen string as an error message may quote it: bounded, printable."""
    text = value if isinstance(value, str) else repr(value)
    text = text if len(text) <= _MAX_MODEL_ECHO else text[:_MAX_MODEL_ECHO] + "…"
    return text.encode("unicode_escape").decode("ascii") if not text.isprintable() else text
