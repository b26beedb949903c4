"""``request_log``: one structured log line per request, success or failure.

Fields: request id, model, provider, status, cache result, latency, stream flag, token usage
(``ctx.usage`` when token_counter recorded it, so a stream's hidden usage chunk still counts),
when the retry plugin ran each upstream attempt's outcome, and the facts other plugins added to
``ctx.log_fields`` (key id, cost, prompt estimate…): list it after those plugins.
Prompts and answers are left out unless ``log_bodies`` is on, and credentials never appear (the
context's ``api_key`` is not read here, and the log set-up masks credential-named fields).
"""
from __future__ import annotations

from typing import Any

import structlog
from pydantic import Field

from hookgate import Completion, GatewayError, PluginConfig, RequestContext, hookimpl


class RequestLogConfig(PluginConfig):
    """Settings of the request log."""

    log_bodies: bool = Field(False, description="also log the request messages and the answer (may contain personal data)")


class RequestLog:
    """One structured log line per request: id, model, provider, status, cache, latency, tokens."""

    Config = RequestLogConfig

    def __init__(self, config: RequestLogConfig) -> None:
        self.config = config
        self.log = structlog.get_logger("hookgate.request")

    @hookimpl
    async def after_response(self, ctx: RequestContext, response: Completion) -> None:
        usage = ctx.usage or response.usage or {}
        fields = self._common(ctx)
        fields["prompt_tokens"] = usage.get("prompt_tokens")
        fields["completion_tokens"] = usage.get("completion_tokens")
        cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens")
        reasoning = (usage.get("completion_tokens_details") or {}).get("reasoning_tokens")
        if cached:
            fields["cached_tokens"] = cached
        if reasoning:
            fields["reasoning_tokens"] = reasoning
        if self.config.log_bodies:
            fields["messages"] = ctx.body.get("messages")
            fields["answer"] = [c.get("message", {}).get("content") for c in response.body.get("choices", ())]
        self.log.info("request", **fields)

    @hookimpl
    async def on_error(self, ctx: RequestContext, error: GatewayError) -> None:
        fields = self._common(ctx)
        fields["status"] = error.status
        fields["error_code"] = error.code
        fields["error"] = error.message
        if ctx.usage:
            fields["prompt_tokens"] = ctx.usage.get("prompt_tokens")
            fields["completion_tokens"] = ctx.usage.get("completion_tokens")
        self.log.warning("request", **fields)

    def _common(self, ctx: RequestContext) -> dict[str, Any]:
        fields = {
            "request_id": ctx.request_id,
            "model": ctx.model,
            "provider": ctx.provider_name,
            "status": ctx.status,
            "cache": ctx.cache_status,
            "stream": ctx.stream,
            "latency_ms": round(ctx.elapsed_ms(), 2),
        }
        if ctx.attempts:
            fields["attempts"] = [attempt.outcome for attempt in ctx.attempts]
        fields.update(ctx.log_fields)
        return fields
