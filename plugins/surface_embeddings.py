"""``embeddings``: OpenAI's embeddings API, ``POST /v1/embeddings``.

For the openai SDK's ``client.embeddings.create`` and LangChain's ``OpenAIEmbeddings``, through the
same chain as chat completions: keys, rate limits and budgets (an embedding request's tokens are
its input's), caches (exact: the same input to the same model is answered from the cache),
retries, timeouts, tokens, cost, usage, metrics and logs. Routed by model to any provider that
serves embeddings: OpenAI, an OpenAI-compatible server, or the built-in offline model
(``local_embeddings``: all-MiniLM-L6-v2, no key, no network).

The canonical request is OpenAI's, with the input as given (a string, a list of strings, or token
arrays) and without ``encoding_format``: upstreams are always asked for floats, so one cached
answer serves both encodings, and the surface writes base64 (little-endian float32, as OpenAI does)
for a client that asked for it. ``dimensions`` is part of the request (and of the cache key).
Input is bounded: at most ``max_inputs`` texts.
"""
from __future__ import annotations

import base64
import struct
from typing import Any

from pydantic import Field

from hookgate import Completion, InvalidRequest, PluginConfig, RequestContext, StateKey, hookimpl
from hookgate.embeddings import check_model_and_dimensions
from hookgate.surfaces import EMBEDDINGS, OpenAIShapedSurface, ParsedRequest

_BASE64: StateKey[bool] = StateKey("embeddings.base64", bool, "the client asked for base64 vectors")


class EmbeddingsConfig(PluginConfig):
    """Settings of the embeddings surface."""

    max_inputs: int = Field(2048, ge=1, description="texts (or token arrays) one request may embed")
    max_input_chars: int = Field(1_000_000, ge=1, description="characters of input one request may send, all texts together")


class EmbeddingsSurface(OpenAIShapedSurface):
    """The surface itself (see :class:`hookgate.surfaces.Surface`)."""

    name = "embeddings"
    kind = EMBEDDINGS
    wire = "openai.embeddings"
    path = "/v1/embeddings"
    content_type = "application/json"

    def __init__(self, config: EmbeddingsConfig) -> None:
        self.config = config

    async def parse(self, ctx: RequestContext, body: Any) -> ParsedRequest:
        if not isinstance(body, dict):
            raise InvalidRequest("The request body must be a JSON object.")
        check_model_and_dimensions(body)
        inputs = body.get("input")
        texts = [inputs] if isinstance(inputs, str) else inputs
        if not isinstance(texts, list) or not texts:
            raise InvalidRequest("input must be a string, or a non-empty list of strings or of token arrays.", param="input")
        if len(texts) > self.config.max_inputs:
            raise InvalidRequest(f"input may hold at most {self.config.max_inputs} items.", param="input")
        chars = 0
        for index, text in enumerate(texts):
            if isinstance(text, str):
                if not text:
                    raise InvalidRequest("An input text is empty.", param=f"input[{index}]")
                chars += len(text)
            elif isinstance(text, list) and text and all(isinstance(t, int) and not isinstance(t, bool) and 0 <= t < 2**31 for t in text):
                chars += len(text)
            elif isinstance(text, int) and not isinstance(text, bool) and isinstance(inputs, list) and all(isinstance(t, int) for t in inputs):
                break  # one token array given flat
            else:
                raise InvalidRequest("Each input must be a non-empty string or a non-empty list of token ids.", param=f"input[{index}]")
        if chars > self.config.max_input_chars:
            raise InvalidRequest(f"The input is over {self.config.max_input_chars} characters.", param="input")
        encoding = body.get("encoding_format", "float")
        if encoding not in ("float", "base64"):
            raise InvalidRequest("encoding_format must be 'float' or 'base64'.", param="encoding_format")
        ctx[_BASE64] = encoding == "base64"
        canonical = {key: value for key, value in body.items() if key not in ("encoding_format", "stream")}
        return ParsedRequest(canonical)

    def render(self, ctx: RequestContext, completion: Completion) -> dict[str, Any]:
        if not ctx.get(_BASE64):
            return completion.body
        body = dict(completion.body)
        body["data"] = [_as_base64(item) for item in body.get("data") or ()]
        return body

    def open_stream(self, ctx: RequestContext) -> Any:
        raise InvalidRequest("Embeddings are not streamed.", param="stream")


class EmbeddingsAPI:
    """OpenAI's embeddings API (POST /v1/embeddings), float or base64, through the whole chain."""

    Config = EmbeddingsConfig

    def __init__(self, config: EmbeddingsConfig) -> None:
        self.config = config
        self.surface = EmbeddingsSurface(config)

    @hookimpl
    def register_surfaces(self, register):
        register(self.surface)


def _as_base64(item: Any) -> Any:
    if not isinstance(item, dict) or not isinstance(item.get("embedding"), list):
        return item
    vector = item["embedding"]
    return {**item, "embedding": base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")}
