"""``local_embeddings``: embeddings from the built-in offline model, no key and no network.

all-MiniLM-L6-v2 as int8 ONNX (:mod:`hookgate.embeddings`), 384 dimensions, loaded when the app
starts (in a worker thread) and run off the event loop, concurrent requests batched together. It
answers ``POST /v1/embeddings`` for its model names in OpenAI's shape, with usage counted in the
model's own tokens; token-array inputs and a ``dimensions`` other than the model's are a 400.
``model_dir`` points it at any sentence-transformers ONNX export instead.
"""
from __future__ import annotations

import asyncio
from typing import Any

from pydantic import Field

from hookgate import Completion, InvalidRequest, PluginConfig, Readiness, RequestContext, hookimpl
from hookgate.embeddings import OnnxEmbedderConfig, OnnxSentenceEmbedder, shared_embedder


class LocalEmbeddingsConfig(PluginConfig):
    """Settings of the offline embedding provider."""

    models: list[str] = Field(["all-minilm-l6-v2"], min_length=1, description="model names it answers to")
    model_dir: str | None = Field(None, description="a directory with model.onnx and tokenizer.json (default: the built-in model)")
    threads: int = Field(1, ge=1, le=16, description="onnxruntime threads (each request batch runs on them)")


class LocalEmbeddings:
    """Offline embeddings (all-MiniLM-L6-v2, ONNX int8): no key, no network."""

    Config = LocalEmbeddingsConfig
    name = "local_embeddings"
    kinds = frozenset({"embeddings"})

    def __init__(self, config: LocalEmbeddingsConfig) -> None:
        self.config = config
        self.embedder: OnnxSentenceEmbedder | None = None
        self._own_embedder = False

    @hookimpl
    def register_providers(self, register):
        register(self)

    @hookimpl
    async def startup(self, app) -> None:
        options: dict[str, Any] = {"threads": self.config.threads}
        if self.config.model_dir:
            options["model_dir"] = self.config.model_dir
        # The app's shared model: the semantic cache embeds with the same one, loaded once.
        self.embedder, self._own_embedder = await shared_embedder(app, OnnxEmbedderConfig(**options))

    @hookimpl
    async def shutdown(self) -> None:
        if self.embedder is not None and self._own_embedder:
            await self.embedder.aclose()

    @hookimpl
    async def check_ready(self) -> Readiness:
        return Readiness("ok", self.embedder.model_id) if self.embedder is not None else Readiness("unavailable", "the model is not loaded")

    def models(self) -> list[str]:
        return list(self.config.models)

    async def complete(self, ctx: RequestContext) -> Completion:
        assert self.embedder is not None, "started with the app"
        inputs = ctx.body.get("input")
        texts = [inputs] if isinstance(inputs, str) else inputs
        if not isinstance(texts, list) or not all(isinstance(text, str) for text in texts):
            raise InvalidRequest("This model embeds text only (no token arrays).", param="input")
        dimensions = ctx.body.get("dimensions")
        if dimensions is not None and dimensions != self.embedder.dimensions:
            raise InvalidRequest(f"This model's vectors have {self.embedder.dimensions} dimensions.", param="dimensions")
        result = await self.embedder.embed(texts)
        # Floats into JSON-ready lists: 2,048 vectors are ~800,000 numbers, kept off the loop.
        vectors = await asyncio.to_thread(result.as_lists) if len(texts) > 64 else result.as_lists()
        tokens = result.total_tokens
        return Completion(
            {
                "object": "list",
                "data": [{"object": "embedding", "index": index, "embedding": vector} for index, vector in enumerate(vectors)],
                "model": ctx.model,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )
