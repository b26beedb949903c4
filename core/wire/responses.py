"""OpenAI Responses ⇄ chat completions, as pure dict translations, for serving
``POST /v1/responses`` from any chat-completions upstream (Groq, vLLM, Ollama, Anthropic through
its provider's translation…).

* :func:`to_chat_request`: Responses request (+ the items of earlier turns, resolved by the
  caller's store) → chat request;
* :func:`hosted_tools`: the tools in a request that only OpenAI's servers run (``web_search``,
  ``file_search``, ``code_interpreter``…), so the surface passes it through to OpenAI or refuses
  it with a 400 elsewhere;
* :func:`to_response`: ``chat.completion`` → ``response`` object (message, function_call and
  reasoning output items, usage, the request's settings echoed);
* :class:`ChatStreamToResponses` / :func:`responses_events`: chat chunks → the typed Responses
  stream events with their ``sequence_number`` (``response.created``,
  ``response.in_progress``, ``response.output_item.added``, ``response.content_part.added``,
  ``response.output_text.delta``/``.done``, ``response.function_call_arguments.delta``/``.done``,
  ``response.output_item.done``, ``response.completed``…); :func:`encode_event` writes one as
  SSE bytes;
* :func:`response_events`: a complete ``response`` replayed as that event sequence;
* :func:`responses_usage`, :func:`new_response_id`.

Function tools round-trip exactly: a ``function_call`` item's ``call_id`` is the chat tool
call's ``id``, and a later ``function_call_output`` with that ``call_id`` becomes the ``tool``
message answering it. What is mapped, dropped (and why) and refused is listed in the docstrings
of :func:`to_chat_request` (module ``_responses_request``) and :func:`to_response`
(``_responses_answer``). Errors before a stream starts are the gateway's usual OpenAI-shaped
errors, which is also the Responses API's error shape.
"""
from __future__ import annotations

from ._responses_answer import (
    ChatStreamToResponses,
    new_response_id,
    response_events,
    responses_events,
    responses_usage,
    to_response,
)
from ._responses_request import hosted_tools, to_chat_request
from ._sse import EventStream, encode_event

__all__ = [
    "ChatStreamToResponses",
    "encode_event",
    "EventStream",
    "hosted_tools",
    "new_response_id",
    "response_events",
    "responses_events",
    "responses_usage",
    "to_chat_request",
    "to_response",
]
