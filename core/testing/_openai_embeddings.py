"""The OpenAI emulator's embeddings: deterministic vectors that behave like embeddings.

:func:`embedding_for` hashes each lower-cased word of a text to a few signed positions (a
"hashed bag of words") and normalises the sum to length 1, so the same text always gets the
same vector, texts sharing words are closer (cosine similarity) than texts that share none, and
any dimension count works. Token arrays are embedded as the text of their numbers. Limits are
OpenAI's: 2,048 inputs per request, 8,192 tokens per input, 300,000 tokens per request (tokens
being words, as everywhere in the emulators).
"""
from __future__ import annotations

import base64
import hashlib
import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, final

from ._emulation import count_tokens
from ._openai_wire import Problem

__all__ = ["DEFAULT_EMBEDDING_MODELS", "EmbeddingModel", "embedding_for", "embeddings_body", "request_problem"]

MAX_INPUTS: Final = 2048
MAX_INPUT_TOKENS: Final = 8192
MAX_REQUEST_TOKENS: Final = 300_000
_POSITIONS_PER_WORD: Final = 4


@final
@dataclass(frozen=True, slots=True)
class EmbeddingModel:
    """An embedding model the emulator serves: its vector length, and whether ``dimensions``
    may shorten it (text-embedding-3 models can; ada-002 refuses the parameter)."""

    dimensions: int
    shortenable: bool = True


DEFAULT_EMBEDDING_MODELS: Final[Mapping[str, EmbeddingModel]] = {
    "text-embedding-3-small": EmbeddingModel(1536),
    "text-embedding-3-large": EmbeddingModel(3072),
    "text-embedding-ada-002": EmbeddingModel(1536, shortenable=False),
}
"""The models ``POST /v1/embeddings`` serves by default (any other is a 404)."""


def embedding_for(text: str, dimensions: int) -> list[float]:
    """The emulator's embedding of ``text``: ``dimensions`` floats, unit length (see the module
    docstring). ``dimensions`` must be at least 1."""
    vector = [0.0] * dimensions
    for word in text.lower().split():
        digest = hashlib.blake2b(word.encode(), digest_size=4 * _POSITIONS_PER_WORD).digest()
        for offset in range(0, len(digest), 4):
            value = int.from_bytes(digest[offset : offset + 4], "little")
            vector[(value >> 1) % dimensions] += 1.0 if value & 1 else -1.0
    norm = math.sqrt(sum(x * x for x in vector))
    if norm == 0.0:  # no words, or every position cancelled out: still a unit vector
        vector[int.from_bytes(hashlib.blake2b(text.encode(), digest_size=4).digest(), "little") % dimensions] = 1.0
        return vector
    return [x / norm for x in vector]


def _texts(value: Any) -> list[str] | None:
    """The texts of ``input``: a string, strings, one token array or token arrays; None when
    ``input`` is none of these or holds an empty entry (OpenAI refuses both)."""
    if isinstance(value, str):
        return [value] if value else None
    if not isinstance(value, list) or not value:
        return None
    if all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        return [" ".join(map(str, value))]
    texts = []
    for entry in value:
        if isinstance(entry, str) and entry:
            texts.append(entry)
        elif isinstance(entry, list) and entry and all(isinstance(v, int) and not isinstance(v, bool) for v in entry):
            texts.append(" ".join(map(str, entry)))
        else:
            return None
    return texts


def request_problem(body: Any, models: Mapping[str, EmbeddingModel]) -> Problem | None:
    """Why OpenAI would refuse this embeddings request, or None when it is usable."""
    if not isinstance(body, dict):
        return Problem("We could not parse the JSON body of your request.")
    model = body.get("model")
    if not isinstance(model, str):
        return Problem("Missing required parameter: 'model'.", param="model", code="missing_required_parameter")
    if model not in models:
        return Problem(f"The model `{model}` does not exist or you do not have access to it.", status=404, code="model_not_found")
    raw = body.get("input")
    if isinstance(raw, list) and len(raw) > MAX_INPUTS:
        return Problem(f"'$.input' is invalid: at most {MAX_INPUTS} inputs per request.", param="input", code="invalid_value")
    texts = _texts(raw)
    if texts is None:
        return Problem("'$.input' is invalid. Please check the API reference: https://platform.openai.com/docs/api-reference.", param="input")
    counts = [count_tokens(text) for text in texts]
    if max(counts) > MAX_INPUT_TOKENS:
        return Problem(f"This model's maximum context length is {MAX_INPUT_TOKENS} tokens; an input has {max(counts)}.", param="input")
    if sum(counts) > MAX_REQUEST_TOKENS:
        return Problem(f"Requested {sum(counts)} tokens, max {MAX_REQUEST_TOKENS} tokens per request.", param="input", code="max_tokens_per_request")
    if body.get("encoding_format", "float") not in ("float", "base64"):
        return Problem("Invalid value for 'encoding_format': expected 'float' or 'base64'.", param="encoding_format", code="invalid_value")
    dimensions = body.get("dimensions")
    if dimensions is not None:
        spec = models[model]
        if not spec.shortenable:
            return Problem("This model does not support specifying dimensions.", param="dimensions")
        if not isinstance(dimensions, int) or isinstance(dimensions, bool) or not 1 <= dimensions <= spec.dimensions:
            return Problem(f"Invalid value for 'dimensions': expected an integer from 1 to {spec.dimensions}.", param="dimensions", code="invalid_value")
    return None


def embeddings_body(body: Mapping[str, Any], models: Mapping[str, EmbeddingModel]) -> dict[str, Any]:
    """The answer to a valid request. CPU work proportional to the input: run it in a thread."""
    texts = _texts(body["input"]) or []
    dimensions = body.get("dimensions") or models[body["model"]].dimensions
    as_base64 = body.get("encoding_format") == "base64"
    data = []
    for index, text in enumerate(texts):
        vector = embedding_for(text, dimensions)
        encoded: Sequence[float] | str = base64.b64encode(struct.pack(f"<{dimensions}f", *vector)).decode() if as_base64 else vector
        data.append({"object": "embedding", "index": index, "embedding": encoded})
    tokens = sum(count_tokens(text) for text in texts)
    return {"object": "list", "data": data, "model": body["model"], "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
