"""The OpenAI emulator's legacy completions (``POST /v1/completions``).

One choice per prompt (times ``n``): ``"emulated: " + <prompt>``, cut before the first ``stop``
sequence (``finish_reason: "stop"``) or after ``max_tokens`` words (default 16, OpenAI's;
``finish_reason: "length"``); ``echo`` prepends the prompt. Token arrays are prompted as the
text of their numbers. Served only for the models given (OpenAI's instruct and base models by
default: it refuses chat models with a 404), so a gateway can be tested for the clear 404 it
owes a model that has no completions endpoint.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from ._emulation import REPLY_PREFIX, count_tokens, stream_pieces
from ._openai_wire import SSE_DONE, Problem, pieces, sse_data

__all__ = ["DEFAULT_COMPLETION_MODELS", "completion_body", "completion_events", "request_problem"]

DEFAULT_COMPLETION_MODELS: Final[tuple[str, ...]] = ("gpt-3.5-turbo-instruct", "davinci-002", "babbage-002")
"""Models ``POST /v1/completions`` serves by default."""
DEFAULT_MAX_TOKENS: Final = 16
MAX_CHOICES: Final = 2048
MAX_STOP: Final = 4


def _prompts(value: Any) -> list[str] | None:
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not value:
        return None
    if all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        return [" ".join(map(str, value))]
    prompts = []
    for entry in value:
        if isinstance(entry, str):
            prompts.append(entry)
        elif isinstance(entry, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in entry):
            prompts.append(" ".join(map(str, entry)))
        else:
            return None
    return prompts


def _stops(body: Mapping[str, Any]) -> list[str]:
    stop = body.get("stop")
    return [stop] if isinstance(stop, str) else [s for s in stop or () if isinstance(s, str) and s]


def request_problem(body: Any, models: Sequence[str] | None) -> Problem | None:
    """Why OpenAI would refuse this completions request, or None; ``models`` None serves any."""
    if not isinstance(body, dict):
        return Problem("We could not parse the JSON body of your request.")
    model = body.get("model")
    if not isinstance(model, str):
        return Problem("Missing required parameter: 'model'.", param="model", code="missing_required_parameter")
    if models is not None and model not in models:
        return Problem(
            f"The model `{model}` is not supported in the v1/completions endpoint; use v1/chat/completions.",
            status=404,
            param="model",
            code="model_not_found",
        )
    prompts = _prompts(body.get("prompt"))
    if prompts is None:
        return Problem("Invalid value for 'prompt': expected a string, strings or token arrays.", param="prompt", code="invalid_value")
    n = body.get("n", 1)
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 128:
        return Problem("Invalid value for 'n': expected an integer from 1 to 128.", param="n", code="invalid_value")
    if len(prompts) * n > MAX_CHOICES:
        return Problem(f"At most {MAX_CHOICES} choices (prompts × n) per request.", param="n", code="invalid_value")
    limit = body.get("max_tokens", DEFAULT_MAX_TOKENS)
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 0):
        return Problem("Invalid value for 'max_tokens': expected an integer >= 0.", param="max_tokens", code="invalid_value")
    stop = body.get("stop")
    if stop is not None and not isinstance(stop, str) and not (isinstance(stop, list) and len(stop) <= MAX_STOP and all(isinstance(s, str) for s in stop)):
        return Problem(f"Invalid value for 'stop': expected a string or up to {MAX_STOP} strings.", param="stop", code="invalid_value")
    return None


def _generate(prompt: str, body: Mapping[str, Any]) -> tuple[str, str]:
    """(text, finish_reason) for one choice."""
    text, finish = REPLY_PREFIX + prompt, "stop"
    cuts = [text.find(s) for s in _stops(body) if s in text]
    if cuts:
        text = text[: min(cuts)]
    limit = body.get("max_tokens", DEFAULT_MAX_TOKENS)
    if limit is not None and count_tokens(text) > limit:
        text, finish = "".join(pieces(text)[:limit]).rstrip(), "length"
    if body.get("echo") is True:
        text = prompt + text
    return text, finish


def _choices(body: Mapping[str, Any]) -> tuple[list[tuple[str, str]], int]:
    """The (text, finish_reason) of every choice, in index order, and the prompt tokens."""
    prompts = _prompts(body["prompt"]) or []
    n = body.get("n", 1)
    return [_generate(prompt, body) for prompt in prompts for _ in range(n)], sum(count_tokens(p) for p in prompts)


def _usage(choices: Sequence[tuple[str, str]], prompt_tokens: int) -> dict[str, int]:
    completion = sum(count_tokens(text) for text, _ in choices)
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion, "total_tokens": prompt_tokens + completion}


def completion_body(completion_id: str, created: int, body: Mapping[str, Any]) -> dict[str, Any]:
    """The ``text_completion`` answering a valid request."""
    choices, prompt_tokens = _choices(body)
    return {
        "id": completion_id,
        "object": "text_completion",
        "created": created,
        "model": body["model"],
        "choices": [{"text": text, "index": i, "logprobs": None, "finish_reason": finish} for i, (text, finish) in enumerate(choices)],
        "usage": _usage(choices, prompt_tokens),
    }


def completion_events(completion_id: str, created: int, body: Mapping[str, Any], piece_chars: int = 0) -> list[bytes]:
    """The streamed answer: per choice one chunk per word, then one finish chunk per choice,
    the usage chunk (``stream_options.include_usage``) and ``[DONE]``."""
    choices, prompt_tokens = _choices(body)
    head = {"id": completion_id, "object": "text_completion", "created": created, "model": body["model"]}
    events = []
    for index, (text, _) in enumerate(choices):
        for piece in stream_pieces(text, pieces, piece_chars) if text else ():
            events.append(sse_data({**head, "choices": [{"text": piece, "index": index, "logprobs": None, "finish_reason": None}]}))
    for index, (_, finish) in enumerate(choices):
        events.append(sse_data({**head, "choices": [{"text": "", "index": index, "logprobs": None, "finish_reason": finish}]}))
    options = body.get("stream_options")
    if isinstance(options, dict) and options.get("include_usage") is True:
        events.append(sse_data({**head, "choices": [], "usage": _usage(choices, prompt_tokens)}))
    events.append(SSE_DONE)
    return events
