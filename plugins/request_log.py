"""``request_log``: one structured log line per request, success or failure.

Fields: request id, model, provider, status, cache result, latency, stream flag, token usage (the
provider's own figures, also for a stream whose usage chunk the client did not see), the key id,
the prompt estimate and the cost when the plugins producing them are enabled, each upstream
attempt's outcome, and whatever other plugins annotated (``ctx.annotations``).

The line is written from the ``request_finished`` event, after every other plugin has had its
say, so its content does not depend on where ``request_log`` is listed. Prompts and answers are
left out unless ``log_bodies`` is on, and credentials never appear (the context's ``api_key`` is
not read here, and the log set-up masks credential-named fields). Client-chosen strings (the model
name) are clipped to a bounded length.
"""
from __future__ import annotations

import logging

from typing import Any

import structlog
from pydantic import Field

from hookgate import Outcome, PluginConfig, RequestContext, hookimpl
from hookgate.accounting import TokenUsage, format_usd
from hookgate.facts import CLIENT_KEY, COST_USD, PROMPT_ESTIMATE, USAGE_ESTIMATED
from hookgate.rules import Reads

MAX_LOGGED_CHARS = 256
"""Longest client-chosen string (a model name) written to the log."""


class RequestLogConfig(PluginConfig):
    """Settings of the request log."""

    log_bodies: bool = Field(False, description="also log the request messages and the answer (may contain personal data)")


class RequestLog:
    """One structured log line per request: id, model, provider, status, cache, latency, tokens."""

    Config = RequestLogConfig
    roles = ("observer",)
    rules = (
        Reads(CLIENT_KEY, "request_finished", why="the key id"),
        Reads(PROMPT_ESTIMATE, "request_finished", why="the prompt estimate"),
        Reads(COST_USD, "request_finished", why="the cost"),
    )

    def __init__(self, config: RequestLogConfig) -> None:
        self.config = config
        self.log = structlog.get_logger("hookgate.request")
        self._answers_logged: bool | None = None
        """Whether the configured level keeps an answered request's info line; read at the first
        request, when structlog fixes this logger's level too (``cache_logger_on_first_use``)."""

    @hookimpl
    def request_finished(self, ctx: RequestContext, outcome: Outcome) -> None:
        if outcome.error is None:
            logged = self._answers_logged
            if logged is None:
                logged = self._answers_logged = self.log.is_enabled_for(logging.INFO)
            if not logged:
                return  # an answered request is an info line, which the configured level discards
        fields: dict[str, Any] = {
            "request_id": ctx.request_id,
            "model": _clip(ctx.model),
            "provider": ctx.provider_name,
            "status": outcome.status,
            "cache": ctx.cache_status,
            "stream": ctx.stream,
            "latency_ms": round(outcome.total_seconds * 1000, 2),
        }
        if outcome.usage:
            usage = TokenUsage.of(outcome.usage)
            fields["prompt_tokens"] = usage.prompt
            fields["completion_tokens"] = usage.completion
            if usage.cached:
                fields["cached_tokens"] = usage.cached
            if usage.reasoning:
                fields["reasoning_tokens"] = usage.reasoning
        if ctx.get(USAGE_ESTIMATED):
            fields["usage_estimated"] = True
        key = ctx.get(CLIENT_KEY)
        if key is not None:
            fields["key_id"] = key.id
        estimate = ctx.get(PROMPT_ESTIMATE)
        if estimate is not None:
            fields["estimated_prompt_tokens"] = estimate.prompt_tokens
            fields["estimate_method"] = estimate.method
        if COST_USD in ctx:
            cost = ctx[COST_USD]
            fields["cost_usd"] = format_usd(cost) if cost is not None else None
            if cost is None:
                fields["price_missing"] = True
        if ctx.attempts:
            fields["attempts"] = [attempt.outcome for attempt in ctx.attempts]
        if ctx.annotations:
            fields.update(ctx.annotations)
        error = outcome.error
        if error is None:
            if self.config.log_bodies and outcome.response is not None:
                fields["messages"] = ctx.body.get("messages")
                fields["answer"] = [c.get("message", {}).get("content") for c in outcome.response.body.get("choices", ()) if isinstance(c, dict)]
            self.log.info("request", **fields)
            return
        fields["error_code"] = error.code
        fields["error"] = _clip(error.message, 1024)
        self.log.warning("request", **fields)


def _clip(value: Any, limit: int = MAX_LOGGED_CHARS) -> Any:
    if isinstance(value, str) and len(value) > limit:
        return value[:limit] + f"… ({len(value)} characters)"
    return value
