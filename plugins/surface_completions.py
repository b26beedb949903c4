"""``completions``: OpenAI's legacy completions API, ``POST /v1/completions``.

Routed to OpenAI-wire upstreams that serve it (OpenAI, OpenAI-compatible servers such as vLLM);
a model whose provider does not serve text completions is a 404 naming the model. The request
passes through as it is (``prompt`` a string or a list), JSON or SSE (``text_completion`` chunks,
then ``data: [DONE]``), through the same chain as chat completions.
"""
from __future__ import annotations

from typing import Any

from hookgate import InvalidRequest, PluginConfig, RequestContext, hookimpl
from hookgate.surfaces import COMPLETIONS, OpenAIShapedSurface, ParsedRequest


class CompletionsSurface(OpenAIShapedSurface):
    """The surface itself (see :class:`hookgate.surfaces.Surface`)."""

    name = "completions"
    kind = COMPLETIONS
    wire = "openai.completions"
    path = "/v1/completions"
    content_type = "text/event-stream"

    async def parse(self, ctx: RequestContext, body: Any) -> ParsedRequest:
        if not isinstance(body, dict):
            raise InvalidRequest("The request body must be a JSON object.")
        if not isinstance(body.get("model"), str) or not body["model"]:
            raise InvalidRequest("Missing required parameter: 'model'.", param="model")
        prompt = body.get("prompt")
        if not (isinstance(prompt, str) or (isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt))):
            raise InvalidRequest("prompt must be a string or a non-empty list of strings.", param="prompt")
        stream = body.get("stream")
        if stream is not None and not isinstance(stream, bool):
            raise InvalidRequest("stream must be a boolean.", param="stream")
        return ParsedRequest(body)


class CompletionsAPI:
    """OpenAI's legacy completions API (POST /v1/completions), for upstreams that serve it."""

    Config = PluginConfig

    def __init__(self, config: PluginConfig) -> None:
        self.config = config
        self.surface = CompletionsSurface()

    @hookimpl
    def register_surfaces(self, register):
        register(self.surface)
