"""The ``echo`` demo model: answers with the prompt, needs no key and no network.

It exists so that a fresh install works end to end (JSON, streaming, caching, usage) before any
provider is configured. Its "tokens" are whitespace-separated words: deterministic and
documented, not any real model's tokenizer.
"""
from __future__ import annotations

import asyncio
import hashlib
import time
from typing import Any, AsyncIterator

from pydantic import Field

from hookgate import Completion, CompletionStream, PluginConfig, RequestContext, hookimpl
from hookgate.messages import last_user_text, message_text

ECHO_PREFIX = "echo: "


class EchoConfig(PluginConfig):
    """Settings of the echo demo provider."""

    models: list[str] = Field(["echo"], min_length=1, description="model names the demo answers to")
    chunk_delay_seconds: float = Field(0.0, ge=0, le=10, description="pause between stream chunks (to watch streaming work)")


class EchoProvider:
    """Demo model: answers 'echo: <your last message>' (no key, no network)."""

    Config = EchoConfig
    name = "echo"

    def __init__(self, config: EchoConfig) -> None:
        self.config = config

    @hookimpl
    def register_providers(self, register):
        register(self)

    def models(self) -> list[str]:
        return list(self.config.models)

    async def complete(self, ctx: RequestContext) -> Completion | CompletionStream:
        answer = ECHO_PREFIX + last_user_text(ctx.body["messages"])
        prompt_tokens = sum(_count_words(message_text(m.get("content"))) for m in ctx.body["messages"])
        usage = _usage(prompt_tokens, _count_words(answer))
        completion_id = "chatcmpl-echo-" + hashlib.sha256(answer.encode()).hexdigest()[:24]
        created = int(time.time())
        model = ctx.body["model"]
        if ctx.stream:
            return CompletionStream(self._chunks(completion_id, created, model, answer, usage, ctx.include_usage))
        return Completion(
            {
                "id": completion_id,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "system_fingerprint": "hookgate-echo",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": answer, "refusal": None},
                        "finish_reason": "stop",
                        "logprobs": None,
                    }
                ],
                "usage": usage,
            }
        )

    async def _chunks(
        self, completion_id: str, created: int, model: str, answer: str, usage: dict[str, int], include_usage: bool
    ) -> AsyncIterator[dict[str, Any]]:
        base = {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model, "system_fingerprint": "hookgate-echo"}
        words = answer.split(" ")
        for i, word in enumerate(words):
            delta: dict[str, Any] = {"content": word if i == 0 else " " + word}
            if i == 0:
                delta["role"] = "assistant"
            yield {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None, "logprobs": None}]}
            if self.config.chunk_delay_seconds:
                await asyncio.sleep(self.config.chunk_delay_seconds)
        yield {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop", "logprobs": None}]}
        if include_usage:
            yield {**base, "choices": [], "usage": usage}


def _count_words(text: str) -> int:
    return len(text.split())


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": prompt_tokens + completion_tokens}
