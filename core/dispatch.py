"""Asking a model through the gateway itself, from inside a plugin.

Some plugins need a model's answer of their own: a summary of the oldest turns of a conversation,
a judge deciding whether a prompt is an injection. They ask through the same pipeline a client's
request takes (routing, caches, retries, limits, accounting, observers), in the process, without
an HTTP round trip::

    from hookgate.dispatch import complete

    answer = await complete(app, {"model": "judge", "messages": [...]}, key=ctx.get(CLIENT_KEY), timeout=5.0)
    text = answer.body["choices"][0]["message"]["content"]

:func:`embed` does the same for an embeddings request (the ``embeddings`` surface's canonical
request, OpenAI's shape), so a plugin can use whatever embedding model the gateway routes
(OpenAI's, a vLLM server's, the offline one) by its public name::

    answer = await embed(app, {"model": "embed", "input": ["How do I reset my password?"]}, caller="semantic_cache", timeout=2.0)
    vector = answer.body["data"][0]["embedding"]

The request is validated like a client's, is counted against ``key``'s limits and budgets when one
is given (else it is the gateway's own, anonymous), and carries ``x-hookgate-internal`` with the
name of the plugin that made it so that logs tell it apart. It never streams. A failure raises the
:class:`~hookgate.GatewayError` a client would have got. A plugin must not ask through itself in a
loop: ``depth`` bounds how deep internal requests may nest.
"""
from __future__ import annotations

import asyncio
import uuid
from typing import Any, Mapping

from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

from .chat_request import validate_chat_request
from .context import RequestContext
from .embeddings import check_model_and_dimensions
from .errors import ClientDisconnected, GatewayError, GatewayTimeout, InvalidRequest, UpstreamError
from .exchange import as_gateway_error
from .facts import CLIENT_KEY
from .identity import ClientKey
from .pipelines import PIPELINES
from .responses import Completion, CompletionStream, assemble_stream, is_complete
from .state import StateKey

__all__ = ["complete", "embed", "INTERNAL_HEADER", "MAX_DEPTH"]

INTERNAL_HEADER = "x-hookgate-internal"
"""Request header naming the plugin that made an internal request."""
MAX_DEPTH = 3
"""How deep internal requests may nest (a summary asked for while answering a judge's request…)."""

_DEPTH: StateKey[int] = StateKey("dispatch.depth", int, "how many internal requests this one is nested in")
_EMBEDDINGS_SURFACE = "embeddings"
"""``ctx.surface`` of an internal embeddings request: the embeddings surface's, so caches keep
its answers with the clients' embeddings (never with chat answers)."""
_MAX_INPUTS = 2048
"""Texts one internal embeddings request may carry (OpenAI's limit)."""


async def complete(
    app: web.Application,
    body: dict[str, Any],
    *,
    caller: str,
    key: ClientKey | None = None,
    parent: RequestContext | None = None,
    timeout: float | None = None,
    headers: Mapping[str, str] | None = None,
) -> Completion:
    """The complete answer to a chat request ``body``, through the app's current pipeline.

    :param caller: the plugin asking (logged, and sent as ``x-hookgate-internal``).
    :param key: whose request it is, for limits, budgets and the ledger (None: the gateway's own).
    :param parent: the request this one is made for, if any (bounds nesting; its id is kept).
    :param timeout: seconds before it is abandoned (its upstream call cancelled); None for the
        pipeline's own deadlines only.
    """
    if body.get("stream"):
        body = {**body, "stream": False}
    validate_chat_request(body)
    return await _dispatch(app, body, "chat.completions", "chat", caller=caller, key=key, parent=parent, timeout=timeout, headers=headers)


async def embed(
    app: web.Application,
    body: dict[str, Any],
    *,
    caller: str,
    key: ClientKey | None = None,
    parent: RequestContext | None = None,
    timeout: float | None = None,
    headers: Mapping[str, str] | None = None,
) -> Completion:
    """The answer to an embeddings request ``body`` (``model``, ``input`` as a non-empty list of
    non-empty strings, optionally ``dimensions``), through the app's current pipeline, as the
    ``embeddings`` surface would serve it: ``answer.body["data"][i]["embedding"]`` are floats.

    Parameters as :func:`complete`. ``encoding_format`` is not accepted: the answer is floats.
    """
    _validate_embeddings_request(body)
    return await _dispatch(app, body, _EMBEDDINGS_SURFACE, "embeddings", caller=caller, key=key, parent=parent, timeout=timeout, headers=headers)


async def _dispatch(
    app: web.Application,
    body: dict[str, Any],
    surface: str,
    kind: str,
    *,
    caller: str,
    key: ClientKey | None,
    parent: RequestContext | None,
    timeout: float | None,
    headers: Mapping[str, str] | None,
) -> Completion:
    depth = (parent.get(_DEPTH, 0) + 1) if parent is not None else 1
    if depth > MAX_DEPTH:
        raise InvalidRequest(f"internal requests nest deeper than {MAX_DEPTH} levels", code="internal_recursion")
    request_headers = CIMultiDictProxy(CIMultiDict({**(headers or {}), INTERNAL_HEADER: caller}))
    request_id = (parent.request_id + "." if parent is not None else "internal_") + uuid.uuid4().hex[:8]
    gateway = app[PIPELINES].current
    ctx = RequestContext(request_id=request_id, body=body, headers=request_headers, surface=surface, kind=kind)
    ctx[_DEPTH] = depth
    if key is not None:
        ctx[CLIENT_KEY] = key
        ctx.tenant = key.cache_namespace or key.id
    exchange = gateway.exchange(ctx, kind)
    gateway.in_flight += 1
    try:
        async with asyncio.timeout(timeout):
            answer = await exchange.answer()
            if isinstance(answer, CompletionStream):
                answer = await _drain(answer)
            await exchange.complete(answer)
        return answer
    except asyncio.CancelledError:
        await exchange.fail(ClientDisconnected("The internal request was cancelled."))
        raise
    except TimeoutError:
        error = GatewayTimeout(f"The internal request of {caller} took longer than {timeout} s.", code="timeout")
        await exchange.fail(error)
        raise error from None
    except Exception as exc:
        error = exchange.error or as_gateway_error(exc, request_id)
        await exchange.fail(error)
        raise error from (None if isinstance(exc, GatewayError) else exc)
    finally:
        exchange.finish()
        gateway.in_flight -= 1


async def _drain(stream: CompletionStream) -> Completion:
    try:
        completion = assemble_stream([chunk async for chunk in stream])
    finally:
        await stream.aclose()
    if not is_complete(completion):
        raise UpstreamError("The provider ended the stream before the answer was complete.", code="upstream_incomplete")
    return completion


def _validate_embeddings_request(body: Any) -> None:
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    check_model_and_dimensions(body)
    texts = body.get("input")
    if not isinstance(texts, list) or not 1 <= len(texts) <= _MAX_INPUTS:
        raise InvalidRequest(f"input must be a list of 1 to {_MAX_INPUTS} strings.", param="input")
    for index, text in enumerate(texts):
        if not isinstance(text, str) or not text:
            raise InvalidRequest("Each input must be a non-empty string.", param=f"input[{index}]")
    if "encoding_format" in body or body.get("stream"):
        raise InvalidRequest("An internal embeddings request is answered in floats, never streamed.", param="encoding_format")
