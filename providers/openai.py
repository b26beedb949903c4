"""The ``openai`` provider: OpenAI's chat completions API.

Built on :mod:`hookgate.provider_kit`. ``transport = "http"`` (the default) posts the body through
the app's shared aiohttp pool and relays the answer's bytes, parsed once; ``transport = "sdk"``
goes through the official ``openai`` SDK (``max_retries=0``, its aiohttp transport, the raw
``post()``), imported only then. Both send the organization and project headers the SDK would:
from the config, else ``$OPENAI_ORG_ID`` and ``$OPENAI_PROJECT_ID``.
"""
from __future__ import annotations

import os
from typing import Literal

from pydantic import Field

from hookgate.provider_kit import OpenAIShapedProvider, OpenAIWireConfig, SDKProviderPlugin, openai_wire_transport

OPENAI_BASE_URL = "https://api.openai.com/v1"


class OpenAIConfig(OpenAIWireConfig):
    """Settings of the openai provider."""

    base_url: str | None = Field(OPENAI_BASE_URL, description="API base URL")
    api_key_env: str = Field("OPENAI_API_KEY", description="environment variable holding the API key")
    organization: str | None = Field(None, description="OpenAI organization id, if any (default: $OPENAI_ORG_ID)")
    project: str | None = Field(None, description="OpenAI project id, if any (default: $OPENAI_PROJECT_ID)")
    models: list[str] = Field(
        ["gpt-4o-mini", "gpt-4o", "gpt-4.1", "gpt-4.1-mini", "gpt-4.1-nano", "o4-mini", "text-embedding-3-small", "text-embedding-3-large"],
        description="model names this provider serves (more via [models])",
    )
    kinds: list[Literal["chat", "embeddings", "completions"]] = Field(
        ["chat", "embeddings", "completions"], min_length=1, description="what the upstream answers"
    )


class OpenAIProvider(SDKProviderPlugin):
    """OpenAI's chat completions API (the shared HTTP pool, or the official SDK with max_retries=0)."""

    Config = OpenAIConfig

    def __init__(self, config: OpenAIConfig) -> None:
        self.config = config
        self.transport = openai_wire_transport(
            "openai",
            config,
            default_base_url=OPENAI_BASE_URL,
            organization=config.organization or os.environ.get("OPENAI_ORG_ID"),
            project=config.project or os.environ.get("OPENAI_PROJECT_ID"),
        )
        self.chat = OpenAIShapedProvider("openai", self.transport, "/chat/completions", config.models, config.kinds)
        self.providers, self.transports = [self.chat], [self.transport]
