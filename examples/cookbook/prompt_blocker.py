"""prompt_blocker: refuses requests whose messages match an operator's rules (403, code
``prompt_blocked``), naming the rule that matched and never the text.

Each rule is a named regular expression and the roles whose messages it reads (``user`` by
default), so a rule can watch what clients send without tripping on the operator's own system
prompt. Rules are compiled once at start-up, where a bad pattern fails naming it. Matching is
bounded: at most ``max_chars`` of each message are read, and a prompt longer than
``inline_chars`` is matched in a worker thread, so a large prompt never holds the event loop. The
patterns come from the operator, not from clients; Python's ``re`` can backtrack badly on a
careless pattern, so keep them simple (hookgate's guardrails use RE2 for untrusted ones).

The rule's name goes to ``ctx.annotations``, which the request log and the request store record,
so an operator sees which rule refused a request without the prompt being logged.

    [gateway]
    pipeline = ["request_log", "prompt_blocker", "echo"]

    [[plugins.prompt_blocker.rules]]
    name = "secrets"
    pattern = '(api[_-]?key|password)\\s*[:=]'

    [[plugins.prompt_blocker.rules]]
    name = "jailbreak"
    pattern = "ignore (all|previous) instructions"
    roles = ["user", "tool"]
"""
from __future__ import annotations

import asyncio
import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from hookgate import PermissionDenied, PluginConfig, RequestContext, hookimpl
from hookgate.messages import message_text

__all__ = ["BlockRule", "PromptBlocker", "PromptBlockerConfig"]

Role = Literal["system", "developer", "user", "assistant", "tool"]


class BlockRule(BaseModel):
    """One ``[[plugins.prompt_blocker.rules]]`` table."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,39}$", description="shown to the client and in the log")
    pattern: str = Field(min_length=1, max_length=500, description="a Python regular expression")
    roles: list[Role] = Field(["user"], min_length=1, description="whose messages it reads")
    ignore_case: bool = Field(True, description="match regardless of case")

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, pattern: str) -> str:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"not a regular expression: {exc}") from None
        return pattern


class PromptBlockerConfig(PluginConfig):
    """Settings of ``[plugins.prompt_blocker]``."""

    rules: list[BlockRule] = Field(default_factory=list, max_length=200, description="what is refused")
    max_chars: int = Field(100_000, ge=1, le=10_000_000, description="characters of each message that are read")
    inline_chars: int = Field(16_384, ge=0, description="prompts longer than this are matched in a worker thread")

    @field_validator("rules")
    @classmethod
    def _unique_names(cls, rules: list[BlockRule]) -> list[BlockRule]:
        names = [rule.name for rule in rules]
        if len(set(names)) != len(names):
            raise ValueError("two rules have the same name")
        return rules


class PromptBlocker:
    """Refuses requests whose messages match a named rule (403 prompt_blocked), never echoing them."""

    Config = PromptBlockerConfig

    def __init__(self, config: PromptBlockerConfig) -> None:
        self.config = config
        self._rules = [
            (rule.name, frozenset(rule.roles), re.compile(rule.pattern, re.IGNORECASE if rule.ignore_case else 0)) for rule in config.rules
        ]

    @hookimpl
    async def before_request(self, ctx: RequestContext) -> None:
        if not self._rules:
            return
        messages = ctx.body.get("messages") or ()
        texts = [(i, m.get("role"), message_text(m.get("content"))[: self.config.max_chars]) for i, m in enumerate(messages)]
        if sum(len(text) for _, _, text in texts) > self.config.inline_chars:
            found = await asyncio.to_thread(self._first_match, texts)
        else:
            found = self._first_match(texts)
        if found is not None:
            index, rule = found
            ctx.annotations["prompt_blocker.rule"] = rule
            raise PermissionDenied(f"The request was refused by the '{rule}' rule.", param=f"messages[{index}]", code="prompt_blocked")

    def _first_match(self, texts: list[tuple[int, object, str]]) -> tuple[int, str] | None:
        for index, role, text in texts:
            for name, roles, pattern in self._rules:
                if role in roles and pattern.search(text):
                    return index, name
        return None
