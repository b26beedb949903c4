"""A local stand-in for OpenAI's HTTP API, with faults on demand: chat completions, the
Responses API, embeddings, legacy completions and the models API.

Why it exists: the gateway's retry, timeout, streaming and cancellation behaviour can only be
tested against an upstream that misbehaves exactly when a test says so, and a throughput
benchmark needs an upstream that costs next to nothing. Tests of the gateway and of third-party
plugins both use this one emulator, so they exercise the same wire format the official `openai`
SDK expects (bodies and SSE chunks follow OpenAI's published schema).

Answers are deterministic: the reply is ``"emulated: " + <last user message>``, tokens are
whitespace-separated words, and a streamed reply sends one chunk per word (``stream_piece_chars``
cuts it into fixed-size pieces instead, splitting words across chunks). Per endpoint:

* ``POST /v1/chat/completions``: when the request has function ``tools`` and the last user
  message names one (or ``tool_choice`` is ``required`` or a named function), the answer calls
  it instead (``finish_reason: "tool_calls"``, arguments from the tool's ``parameters``, see
  :func:`tool_input_for`; ``parallel_tool_calls: false`` keeps one); a conversation ending in
  ``tool`` messages is answered from their content (and that of a user message after them).
  As OpenAI, it refuses ``tool`` messages that answer no preceding ``tool_calls`` and
  ``tool_calls`` left unanswered;
* ``POST /v1/responses`` (JSON and typed SSE events, function calls, ``previous_response_id``),
  ``GET``/``DELETE /v1/responses/{id}`` and ``GET /v1/responses/{id}/input_items``: see
  ``_openai_responses``;
* ``POST /v1/embeddings``: deterministic unit vectors (a hashed bag of words, see
  :func:`embedding_for`), batched input, ``encoding_format`` float or base64, ``dimensions``;
* ``POST /v1/completions`` (legacy): ``"emulated: " + <prompt>`` per prompt, for the models in
  ``completion_models`` only (others: 404, as OpenAI answers for chat models);
* ``GET /v1/models`` and ``GET /v1/models/{id}`` (404 for a model not listed).

Every ``POST`` is an API call: counted (``stats.calls``, per path in ``stats.calls_by_path``),
recorded and scripted with faults alike.

    async with OpenAIEmulator().serve() as emu:
        client = openai.AsyncOpenAI(base_url=emu.base_url, api_key="sk-test", max_retries=0)
        emu.script(Fault(status=429, retry_after=1), Fault(status=500), None)
        ...  # the next three calls get a 429, a 500, then a normal answer
        assert emu.stats.calls == 3

For pytest-aiohttp's ``aiohttp_client`` use ``await aiohttp_client(emu.make_app())`` instead.
For a benchmark upstream: ``python -m hookgate.testing.openai_emulator --port 8001``.
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, final

import orjson
from aiohttp import web

from ..messages import last_user_text, message_text
from ..wire.responses import response_events
from ._emulation import (
    REPLY_PREFIX,
    SSE_HEADERS,
    Emulator,
    EmulatorStats,
    RecordedRequest,
    check_fault_counts,
    check_fault_outcome,
    count_tokens,
    parse_command_line,
    serve_until_interrupted,
    stream_events,
    stream_pieces,
    tool_input_for,
    tools_to_call,
    unstreamed_fault_response,
)
from ._openai_completions import DEFAULT_COMPLETION_MODELS, completion_body, completion_events
from ._openai_completions import request_problem as completion_problem
from ._openai_embeddings import DEFAULT_EMBEDDING_MODELS, EmbeddingModel, embedding_for, embeddings_body
from ._openai_embeddings import request_problem as embedding_problem
from ._openai_responses import ResponseStore, input_item_page
from ._openai_responses import answer as responses_answer
from ._openai_responses import request_problem as responses_problem
from ._openai_wire import SSE_DONE, Problem, error_response, pieces, problem_response, sse_data, sse_event

__all__ = [
    "DEFAULT_COMPLETION_MODELS",
    "DEFAULT_EMBEDDING_MODELS",
    "DEFAULT_MODELS",
    "REPLY_PREFIX",
    "EmbeddingModel",
    "EmulatorSettings",
    "EmulatorStats",
    "Fault",
    "OpenAIEmulator",
    "RecordedRequest",
    "count_tokens",
    "embedding_for",
    "main",
    "reply_for",
    "tool_input_for",
]

DEFAULT_MODELS: Final[tuple[str, ...]] = ("gpt-4o-mini", "gpt-4o", "gpt-4.1-mini", "o3-mini")
"""Model ids listed by ``GET /v1/models``. Chat completions accept any model id, as a proxy
in front of several deployments would; the reply echoes the requested one."""

_MALFORMED_BODY: Final = b'{"id": "chatcmpl-emu-broken", "object": "chat.completion", "choi'
_MALFORMED_EVENT: Final = b"data: {this is not json\n\n"
_JSON_PIECE: Final = 12  # characters of tool arguments per streamed chunk


# ---------------------------------------------------------------------------------------------
# Configuration: what the emulator does, set by tests at runtime
# ---------------------------------------------------------------------------------------------


@final
@dataclass(frozen=True, slots=True, kw_only=True)
class Fault:
    """How one API call (chat completion, response, embeddings, completion) misbehaves.

    Delays combine with any one outcome (``status``, ``hang``, ``drop_after``, ``stall_after``,
    ``malformed``); with no outcome the call is answered normally, just slower. Script faults
    with :meth:`OpenAIEmulator.script`, or set a standing one in :attr:`EmulatorSettings.fault`.

    Example: ``Fault(status=429, retry_after=0.5)``, ``Fault(drop_after=3)``, ``Fault(hang=True)``.
    """

    delay: float = 0.0
    """Seconds to wait before the response starts, on top of ``EmulatorSettings.latency``."""
    chunk_delay: float = 0.0
    """Seconds between stream chunks, on top of ``EmulatorSettings.chunk_latency``."""

    status: int | None = None
    """Answer with this HTTP error status (400-599) and an OpenAI error body
    ``{"error": {"message", "type", "param", "code"}}``; streaming requests get it too, as JSON,
    before any chunk, as OpenAI does."""
    retry_after: float | None = None
    """With ``status``: seconds sent in ``retry-after`` (rounded up) and ``retry-after-ms``,
    the headers the official SDK reads to pace its retries."""
    message: str | None = None
    """With ``status``: the error message; a realistic one for the status by default."""
    error_type: str | None = None
    """With ``status``: ``error.type``; e.g. ``"server_error"`` for 5xx by default."""
    code: str | None = None
    """With ``status``: ``error.code``; e.g. ``"rate_limit_exceeded"`` for 429 by default."""
    headers: Mapping[str, str] = field(default_factory=dict)
    """Extra response headers, e.g. ``{"x-should-retry": "false"}`` to steer the SDK."""

    hang: bool = False
    """Never answer: the call stays in flight until the client disconnects (counted in
    ``stats.cancelled``) or the server shuts down. Models an upstream that accepts and stalls."""
    drop_after: int | None = None
    """Close the connection abruptly after sending this many SSE chunks (0: right after the
    headers). A non-streaming call has its connection closed with no response at all."""
    stall_after: int | None = None
    """Streaming calls only: send this many chunks, then go silent without closing, to exercise
    idle-read timeouts. A non-streaming call hangs like ``hang``."""
    malformed: bool = False
    """Answer 200 with a body that is not valid JSON (a streaming call gets one SSE event whose
    data is not JSON), as a broken proxy in front of the real API might."""

    def __post_init__(self) -> None:
        check_fault_outcome(self, ("status", "hang", "drop_after", "stall_after", "malformed"))
        error_details = (self.retry_after, self.message, self.error_type, self.code)
        if self.status is None and any(detail is not None for detail in error_details):
            raise ValueError("retry_after, message, error_type and code need a status")
        check_fault_counts(self, ("drop_after", "stall_after"))


@final
@dataclass(slots=True, kw_only=True)
class EmulatorSettings:
    """Standing behaviour for every API call; tests may change it at any time and
    the next call sees the change."""

    latency: float = 0.0
    """Seconds before every response starts, like a model's time to first token."""
    chunk_latency: float = 0.0
    """Seconds between stream chunks. At 0 a whole stream goes out in one write (fastest)."""
    fault: Fault | None = None
    """Applies to every call not covered by a scripted entry, e.g. ``Fault(status=503)`` for an
    upstream that is down until a test sets it back to ``None``."""
    record_requests: bool = True
    """Keep each request's headers and body in ``stats.requests``. The benchmark entry point
    turns it off so memory stays flat under load; counters are always kept."""
    cached_prompt_tokens: int = 0
    """Prompt tokens reported as read from OpenAI's prompt cache (``cached_tokens`` in chat and
    Responses usage; at most the prompt's tokens). 0 leaves the field out of chat usage."""
    stream_piece_chars: int = 0
    """0: a streamed reply sends one text delta per word; N: the text is cut every N characters
    instead, so that a word (a placeholder, a card number) arrives split across chunks. Token
    counts are the same either way."""


# ---------------------------------------------------------------------------------------------
# The emulator
# ---------------------------------------------------------------------------------------------


@final
class OpenAIEmulator(Emulator[Fault, EmulatorSettings]):
    """An OpenAI-compatible upstream with scripted faults and call counters.

    One instance holds its settings, script, stats and stored responses; every app it makes
    shares them, so a test can serve it, point a client at :attr:`base_url`, and inspect
    :attr:`stats` afterwards. Scripting, counting and serving are shared with the other
    emulators (``_emulation``).
    """

    __slots__ = ("_completion_models", "_embedding_models", "_models", "responses")

    _CALL_PATH = "/chat/completions"

    def __init__(
        self,
        settings: EmulatorSettings | None = None,
        *,
        models: Sequence[str] = DEFAULT_MODELS,
        embedding_models: Mapping[str, EmbeddingModel] = DEFAULT_EMBEDDING_MODELS,
        completion_models: Sequence[str] | None = DEFAULT_COMPLETION_MODELS,
        stored_responses: int = 1000,
        api_prefix: str = "/v1",
        base_path: str = "/v1",
    ) -> None:
        """``models`` are listed by ``GET /v1/models`` and found by ``GET /v1/models/{id}``
        (chat completions and responses accept any model id, as a proxy in front of several
        deployments would); ``embedding_models`` are served by ``/v1/embeddings``;
        ``completion_models`` by ``/v1/completions`` (None: any model, as vLLM serves);
        ``stored_responses`` bounds the response store. ``api_prefix`` is where the routes live
        and ``base_path`` what :attr:`base_url` ends with: OpenAI's SDK takes ``…/v1``; Groq
        serves the same API under ``/openai/v1`` and its SDK takes the bare host (see
        ``hookgate.testing.groq_emulator``)."""
        self._models = {
            model: {"id": model, "object": "model", "created": 1_700_000_000, "owned_by": "hookgate"} for model in models
        }
        self._embedding_models = dict(embedding_models)
        self._completion_models = None if completion_models is None else tuple(completion_models)
        self.responses = ResponseStore(stored_responses)
        """The stored Responses API answers (bounded; the oldest is dropped first)."""
        super().__init__(
            settings if settings is not None else EmulatorSettings(),
            models_body=orjson.dumps({"object": "list", "data": list(self._models.values())}),
            api_prefix=api_prefix,
            base_path=base_path,
        )

    def reset(self) -> None:
        """Drop the remaining script, the stored responses and zero the counters."""
        super().reset()
        self.responses.clear()

    # -- Routes --------------------------------------------------------------------------------

    def _counted_routes(self) -> Sequence[tuple[str, Any]]:
        return [
            ("/chat/completions", self._answer),
            ("/responses", self._answer_response),
            ("/embeddings", self._answer_embeddings),
            ("/completions", self._answer_completion),
        ]

    def _add_routes(self, app: web.Application, prefix: str) -> None:
        app.router.add_get(f"{prefix}/models/{{model}}", self._get_model)
        app.router.add_get(f"{prefix}/responses/{{response_id}}", self._get_response)
        app.router.add_delete(f"{prefix}/responses/{{response_id}}", self._delete_response)
        app.router.add_get(f"{prefix}/responses/{{response_id}}/input_items", self._list_input_items)

    async def _begin(self, request: web.Request, stats: EmulatorStats) -> tuple[Any, Fault | None, EmulatorSettings, web.Response | None]:
        """Receive a call: (body, fault, settings, the error response when the fault is a
        status). Faults come before request validation, as a real rate limiter or outage answers
        whatever the client sent."""
        settings = self.settings
        body, fault = await self._receive(request, stats, settings)
        if fault is not None and fault.status is not None:
            return body, fault, settings, _fault_response(fault)
        return body, fault, settings, None

    async def _send(
        self,
        request: web.Request,
        stats: EmulatorStats,
        *,
        fault: Fault | None,
        settings: EmulatorSettings,
        json_body: Callable[[], Any] | None = None,
        events: Callable[[], list[bytes]] | None = None,
    ) -> web.StreamResponse:
        """Answer with ``json_body()`` or stream ``events()``, under the call's fault."""
        if events is None:
            if fault is not None:
                faulty = await unstreamed_fault_response(request, fault, _MALFORMED_BODY)
                if faulty is not None:
                    return faulty
            assert json_body is not None
            return web.Response(body=orjson.dumps(json_body()), content_type="application/json", headers=fault.headers if fault else None)
        response = web.StreamResponse(headers=SSE_HEADERS)
        if fault is not None:
            response.headers.update(fault.headers)
        return await stream_events(
            request, response, stats, events(), settings=settings, fault=fault, malformed_event=_MALFORMED_EVENT
        )

    # -- Chat completions ----------------------------------------------------------------------

    async def _answer(self, request: web.Request, stats: EmulatorStats) -> web.StreamResponse:
        """Answer a chat completion call under its fault."""
        body, fault, settings, refused = await self._begin(request, stats)
        if refused is not None:
            return refused
        problem = _request_problem(body)
        if problem is not None:
            return problem_response(problem)
        completion_id = f"chatcmpl-emu{next(self._ids):08d}"
        answer = _chat_answer(completion_id, int(time.time()), body, settings.cached_prompt_tokens)
        if body.get("stream") is True:
            return await self._send(request, stats, fault=fault, settings=settings, events=lambda: _sse_events(answer, body, settings.stream_piece_chars))
        return await self._send(request, stats, fault=fault, settings=settings, json_body=lambda: answer)

    # -- Responses -----------------------------------------------------------------------------

    async def _answer_response(self, request: web.Request, stats: EmulatorStats) -> web.StreamResponse:
        body, fault, settings, refused = await self._begin(request, stats)
        if refused is not None:
            return refused
        problem = responses_problem(body, self.responses)
        if problem is not None:
            return problem_response(problem)
        stored = responses_answer(body, self.responses, number=next(self._ids), cached_tokens=settings.cached_prompt_tokens)
        if body.get("store", True) is not False:
            self.responses.put(stored)
        if body.get("stream") is True:
            return await self._send(
                request, stats, fault=fault, settings=settings, events=lambda: [sse_event(e) for e in response_events(stored.response)]
            )
        return await self._send(request, stats, fault=fault, settings=settings, json_body=lambda: stored.response)

    def _stored(self, request: web.Request) -> Any:
        response_id = request.match_info["response_id"]
        stored = self.responses.get(response_id)
        if stored is None:
            return problem_response(Problem(f"Response with id '{response_id}' not found.", status=404, param="response_id"))
        return stored

    async def _get_response(self, request: web.Request) -> web.StreamResponse:
        stored = self._stored(request)
        if isinstance(stored, web.Response):
            return stored
        if request.query.get("stream") == "true":
            response = web.StreamResponse(headers=SSE_HEADERS)
            await response.prepare(request)
            await response.write(b"".join(sse_event(e) for e in response_events(stored.response)))
            return response
        return web.Response(body=orjson.dumps(stored.response), content_type="application/json")

    async def _delete_response(self, request: web.Request) -> web.Response:
        response_id = request.match_info["response_id"]
        if not self.responses.delete(response_id):
            return problem_response(Problem(f"Response with id '{response_id}' not found.", status=404, param="response_id"))
        return web.Response(body=orjson.dumps({"id": response_id, "object": "response", "deleted": True}), content_type="application/json")

    async def _list_input_items(self, request: web.Request) -> web.Response:
        stored = self._stored(request)
        if isinstance(stored, web.Response):
            return stored
        page = input_item_page(stored.input_items, request.query)
        if isinstance(page, Problem):
            return problem_response(page)
        return web.Response(body=orjson.dumps(page), content_type="application/json")

    # -- Embeddings, legacy completions, models ------------------------------------------------

    async def _answer_embeddings(self, request: web.Request, stats: EmulatorStats) -> web.StreamResponse:
        body, fault, settings, refused = await self._begin(request, stats)
        if refused is not None:
            return refused
        problem = embedding_problem(body, self._embedding_models)
        if problem is not None:
            return problem_response(problem)
        # Hashing every word of up to 300,000 tokens is CPU work: off the event loop.
        answer = await asyncio.to_thread(embeddings_body, body, self._embedding_models)
        return await self._send(request, stats, fault=fault, settings=settings, json_body=lambda: answer)

    async def _answer_completion(self, request: web.Request, stats: EmulatorStats) -> web.StreamResponse:
        body, fault, settings, refused = await self._begin(request, stats)
        if refused is not None:
            return refused
        problem = completion_problem(body, self._completion_models)
        if problem is not None:
            return problem_response(problem)
        completion_id, created = f"cmpl-emu{next(self._ids):08d}", int(time.time())
        if body.get("stream") is True:
            return await self._send(request, stats, fault=fault, settings=settings, events=lambda: completion_events(completion_id, created, body, settings.stream_piece_chars))
        return await self._send(request, stats, fault=fault, settings=settings, json_body=lambda: completion_body(completion_id, created, body))

    async def _get_model(self, request: web.Request) -> web.Response:
        model = self._models.get(request.match_info["model"])
        if model is None:
            name = request.match_info["model"]
            return problem_response(Problem(f"The model '{name}' does not exist", status=404, param="model", code="model_not_found"))
        return web.Response(body=orjson.dumps(model), content_type="application/json")


# ---------------------------------------------------------------------------------------------
# Chat completions: answers, tool calls, tokens
# ---------------------------------------------------------------------------------------------


def reply_for(messages: Sequence[Mapping[str, Any]]) -> str:
    """The emulator's deterministic answer: ``REPLY_PREFIX`` + the last user turn's text: the
    last user message's, or, when the conversation ends with ``tool`` messages (and maybe one
    user message after them), their content and that message's, joined by spaces."""
    return REPLY_PREFIX + _last_turn_text(messages)


def _last_turn_text(messages: Sequence[Mapping[str, Any]]) -> str:
    end = len(messages)
    tail: list[str] = []
    if end and messages[-1].get("role") == "user":
        tail.append(message_text(messages[-1].get("content")))
        end -= 1
    results: list[str] = []
    while end and messages[end - 1].get("role") == "tool":
        results.insert(0, message_text(messages[end - 1].get("content")))
        end -= 1
    if results:
        return " ".join(text for text in [*results, *tail] if text)
    return last_user_text(messages)


def _usage(messages: Sequence[Mapping[str, Any]], completion: int, cached: int) -> dict[str, Any]:
    prompt = sum(count_tokens(message_text(m.get("content"))) for m in messages)
    usage: dict[str, Any] = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
    if cached:
        usage["prompt_tokens_details"] = {"cached_tokens": min(cached, prompt)}
    return usage


def _request_problem(body: Any) -> Problem | None:
    """Why OpenAI would refuse this chat request, or None when it is usable."""
    if not isinstance(body, dict):
        return Problem("We could not parse the JSON body of your request.")
    if not isinstance(body.get("model"), str):
        return Problem("you must provide a model parameter")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
        return Problem("'messages' must be a non-empty array of message objects.", code="invalid_type")
    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list) or not all(
            isinstance(t, dict) and isinstance(t.get("function"), dict) and isinstance(t["function"].get("name"), str) for t in tools
        ):
            return Problem("Invalid 'tools': expected an array of function tools with names.", param="tools", code="invalid_type")
    return _tool_message_problem(messages)


def _tool_message_problem(messages: Sequence[Mapping[str, Any]]) -> Problem | None:
    """OpenAI's two rules: a ``tool`` message answers a call of the assistant message just
    before its run of tool messages, and every such call gets its answer."""
    waiting: list[str] = []
    for index, message in enumerate(messages):
        role = message.get("role")
        if role == "tool":
            if message.get("tool_call_id") not in waiting:
                return Problem(
                    "Invalid parameter: messages with role 'tool' must be a response to a preceeding message with 'tool_calls'.",
                    param=f"messages.[{index}].role",
                )
            waiting.remove(message["tool_call_id"])
            continue
        if waiting:
            return Problem(
                "An assistant message with 'tool_calls' must be followed by tool messages responding to each 'tool_call_id'. "
                f"The following tool_call_ids did not have response messages: {', '.join(waiting)}",
                param=f"messages.[{index}].role",
            )
        calls = message.get("tool_calls") if role == "assistant" else None
        waiting = [c.get("id") for c in calls if isinstance(c, dict)] if isinstance(calls, list) else []
    return None


def _tool_calls(body: Mapping[str, Any], call_prefix: str) -> list[dict[str, Any]]:
    tools = [(t["function"]["name"], t["function"]) for t in body.get("tools") or ()]
    choice = body.get("tool_choice", "auto")
    forced = choice.get("function", {}).get("name") if isinstance(choice, dict) else None
    mode = "tool" if forced else {"required": "any", "none": "none"}.get(choice if isinstance(choice, str) else "auto", "auto")
    prompt = _last_turn_text(body["messages"])
    chosen = tools_to_call(tools, prompt, choice=mode, forced=forced, parallel=body.get("parallel_tool_calls") is not False)
    return [
        {
            "id": f"{call_prefix}{index:02d}",
            "type": "function",
            "function": {"name": name, "arguments": orjson.dumps(tool_input_for(function.get("parameters") or {}, prompt)).decode()},
        }
        for index, (name, function) in enumerate(chosen)
    ]


def _chat_answer(completion_id: str, created: int, body: Mapping[str, Any], cached: int) -> dict[str, Any]:
    """The ``chat.completion`` answering a valid request."""
    calls = _tool_calls(body, "call_" + completion_id.removeprefix("chatcmpl-"))
    message: dict[str, Any] = {"role": "assistant", "content": None, "refusal": None, "annotations": []}
    if calls:
        message["tool_calls"] = calls
        finish, completion = "tool_calls", sum(count_tokens(c["function"]["arguments"]) for c in calls)
    else:
        message["content"] = reply_for(body["messages"])
        finish, completion = "stop", count_tokens(message["content"])
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": body["model"],
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
        "usage": _usage(body["messages"], completion, cached),
    }


def _sse_events(answer: Mapping[str, Any], body: Mapping[str, Any], piece_chars: int = 0) -> list[bytes]:
    """The answer as OpenAI streams it: a role chunk (empty content; with a tool call, null
    content and the call's id and name), one chunk per word or per piece of the arguments, a
    finish chunk with an empty delta, the usage chunk when ``stream_options.include_usage`` is
    set (every chunk then carries ``usage``, null until the last), and ``[DONE]``."""
    options = body.get("stream_options")
    include_usage = isinstance(options, dict) and options.get("include_usage") is True
    head = {"id": answer["id"], "object": "chat.completion.chunk", "created": answer["created"], "model": answer["model"]}
    no_usage_yet: dict[str, Any] = {"usage": None} if include_usage else {}

    def event(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return sse_data({**head, "choices": [choice], **no_usage_yet})

    choice = answer["choices"][0]
    message = choice["message"]
    events = []
    calls = message.get("tool_calls") or []
    if calls:
        for index, call in enumerate(calls):
            opened = {"index": index, "id": call["id"], "type": "function", "function": {"name": call["function"]["name"], "arguments": ""}}
            delta: dict[str, Any] = {"role": "assistant", "content": None, "refusal": None} if index == 0 else {}
            events.append(event({**delta, "tool_calls": [opened]}))
            arguments = call["function"]["arguments"]
            for start in range(0, len(arguments), _JSON_PIECE):
                events.append(event({"tool_calls": [{"index": index, "function": {"arguments": arguments[start : start + _JSON_PIECE]}}]}))
    else:
        events.append(event({"role": "assistant", "content": "", "refusal": None}))
        events.extend(event({"content": piece}) for piece in stream_pieces(message["content"], pieces, piece_chars))
    events.append(event({}, choice["finish_reason"]))
    if include_usage:
        events.append(sse_data({**head, "choices": [], "usage": answer["usage"]}))
    events.append(SSE_DONE)
    return events


def _fault_response(fault: Fault) -> web.Response:
    assert fault.status is not None
    return error_response(
        fault.status, message=fault.message, error_type=fault.error_type, code=fault.code, retry_after=fault.retry_after, headers=fault.headers
    )


# ---------------------------------------------------------------------------------------------
# Command line: a standalone upstream for benchmarks
# ---------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> None:
    """Serve the emulator until interrupted; records no request bodies so memory stays flat."""
    options = parse_command_line(
        argv,
        prog="python -m hookgate.testing.openai_emulator",
        description="Serve an emulated OpenAI API.",
        default_port=8001,
        chunk_unit="chunks",
    )
    settings = EmulatorSettings(latency=options.latency, chunk_latency=options.chunk_latency, record_requests=False)
    serve_until_interrupted(
        OpenAIEmulator(settings).make_app(),
        host=options.host,
        port=options.port,
        banner=f"OpenAI emulator on http://{options.host}:{options.port}/v1",
    )


if __name__ == "__main__":
    main()
