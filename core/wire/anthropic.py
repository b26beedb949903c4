"""Anthropic Messages ⇄ OpenAI chat completions, both ways, as pure dict translations.

Two jobs, one per direction of travel:

**Calling an Anthropic upstream for a chat client** (what the ``anthropic`` provider does):

* :func:`to_anthropic_request`: chat request → Messages request;
* :func:`from_anthropic_message`: Messages ``message`` → ``chat.completion``;
* :class:`AnthropicStreamTranslator`: Messages SSE events → ``chat.completion.chunk`` dicts;
* :func:`error_from_anthropic`: Anthropic error body → the gateway's error;
* :func:`openai_usage`, :func:`finish_reason`, :data:`FINISH_REASONS`.

**Serving an Anthropic client (``POST /v1/messages``) from a chat upstream**:

* :func:`to_chat_request`: Messages request → chat request;
* :func:`to_anthropic_message`: ``chat.completion`` → Messages ``message``;
* :class:`ChatStreamToAnthropic` / :func:`anthropic_events`: chat chunks → Anthropic's SSE
  events (``message_start``, ``content_block_start``/``_delta``/``_stop`` for text, thinking and
  ``tool_use`` with ``input_json_delta``, ``message_delta`` with stop reason and usage,
  ``message_stop``); :func:`encode_event` writes one as SSE bytes;
* :func:`message_events`: a complete ``message`` replayed as that event sequence;
* :func:`anthropic_error_body`: the gateway's error status, message and code in Anthropic's shape
  (``{"type": "error", "error": {"type", "message"}}``), as a body or an ``error`` event;
* :func:`anthropic_usage`, :func:`stop_reason`, :data:`STOP_REASONS`, :data:`ERROR_TYPES`.

Round trips are exact where both sides can say the same thing: text, images, tool calls and
results (ids kept), stop reasons, and usage including prompt-cache reads and writes
(``cache_read_input_tokens`` ⇄ ``prompt_tokens_details.cached_tokens``,
``cache_creation_input_tokens`` ⇄ ``prompt_tokens_details.cache_write_tokens``).

What each direction maps, drops (and why) and refuses with a 400 is listed in the docstrings of
:func:`to_anthropic_request` (module ``_anthropic_upstream``), :func:`to_chat_request`
(``_messages_request``) and :func:`to_anthropic_message` (``_messages_answer``); in short:
what changes only cost or caching (``cache_control``) or has no counterpart and no effect on the
answer is dropped; what would make the answer silently differ (server tools, ``n`` > 1,
``logprobs``, documents an upstream cannot read) is refused before any upstream call.
"""
from __future__ import annotations

from ._anthropic_errors import ERROR_STATUS, ERROR_TYPES, anthropic_error_body, anthropic_error_type, error_from_anthropic
from ._anthropic_upstream import (
    FINISH_REASONS,
    AnthropicStreamTranslator,
    finish_reason,
    from_anthropic_message,
    openai_usage,
    to_anthropic_request,
)
from ._messages_answer import (
    STOP_REASONS,
    ChatStreamToAnthropic,
    anthropic_events,
    anthropic_usage,
    message_events,
    stop_reason,
    to_anthropic_message,
)
from ._messages_request import MaxTokensField, ThinkingMode, to_chat_request
from ._sse import EventStream, encode_event

__all__ = [
    # Calling an Anthropic upstream for a chat client
    "FINISH_REASONS",
    "AnthropicStreamTranslator",
    "error_from_anthropic",
    "finish_reason",
    "from_anthropic_message",
    "openai_usage",
    "to_anthropic_request",
    # Serving an Anthropic client from a chat upstream
    "STOP_REASONS",
    "ChatStreamToAnthropic",
    "MaxTokensField",
    "ThinkingMode",
    "anthropic_events",
    "anthropic_usage",
    "encode_event",
    "EventStream",
    "message_events",
    "stop_reason",
    "to_anthropic_message",
    "to_chat_request",
    # Errors, both ways
    "ERROR_STATUS",
    "ERROR_TYPES",
    "anthropic_error_body",
    "anthropic_error_type",
]
