"""word_guard: an example third-party hookgate plugin.

It shows the whole public contract in one place: a config model (typed, bounded, described,
overridable from the environment as ``HOOKGATE_WORD_GUARD__BANNED_WORDS='["x"]'``), a hook that
rejects requests with an OpenAI-shaped error, and a hook that adds a response header.
"""
from __future__ import annotations

from pydantic import Field

from hookgate import Completion, InvalidRequest, PluginConfig, RequestContext, StateKey, hookimpl
from hookgate.messages import message_text

ANSWERED: StateKey[bool] = StateKey("word_guard.answered", bool, "the request got an answer this plugin saw")
"""A fact of this plugin's own (private to it: other plugins do not read it)."""

__all__ = ["WordGuard", "WordGuardConfig", "command"]


class WordGuardConfig(PluginConfig):
    """Settings of ``[plugins.word_guard]``."""

    banned_words: list[str] = Field(default_factory=list, description="requests whose messages contain any of these (case-insensitive) are rejected")
    header_value: str = Field("checked", min_length=1, max_length=64, description="value of the x-word-guard response header")


class WordGuard:
    """Rejects requests containing banned words; stamps x-word-guard on answers."""

    Config = WordGuardConfig

    def __init__(self, config: WordGuardConfig) -> None:
        self.config = config
        self._banned = [word.lower() for word in config.banned_words]

    @hookimpl
    async def before_request(self, ctx: RequestContext) -> None:
        for index, message in enumerate(ctx.body["messages"]):
            text = message_text(message.get("content")).lower()
            for word in self._banned:
                if word in text:
                    raise InvalidRequest(
                        f"Message {index} contains a blocked word.", param=f"messages[{index}].content", code="content_blocked"
                    )
        ctx.response_headers["x-word-guard"] = self.config.header_value

    @hookimpl
    async def after_response(self, ctx: RequestContext, response: Completion) -> None:
        ctx[ANSWERED] = True


def command(argv: list[str]) -> None:
    """``hookgate word-guard TEXT --banned WORD...``: check a text as the plugin would."""
    import argparse

    parser = argparse.ArgumentParser(prog="hookgate word-guard", description="Check a text against banned words.")
    parser.add_argument("text")
    parser.add_argument("--banned", nargs="+", default=[])
    args = parser.parse_args(argv)
    hits = [word for word in args.banned if word.lower() in args.text.lower()]
    print(f"blocked: {', '.join(hits)}" if hits else "allowed")
    raise SystemExit(1 if hits else 0)
