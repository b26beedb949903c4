"""The ``openai`` provider: OpenAI's chat completions API through the official ``openai`` SDK.

Built on :mod:`hookgate.provider_kit`: ``max_retries=0`` on the SDK's aiohttp transport,
pre-serialised bodies through its ``post()``, raw responses parsed once.
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from hookgate.provider_kit import OpenAIShapedProvider, SDKProviderConfig, SDKProviderPlugin, openai_transport


class OpenAIConfig(SDKProviderConfig):
    """Settings of the openai provider."""

    base_url: str | None = Field("https://api.openai.com/v1", description="API base URL")
    api_key_env: str = Field("OPENAI_API_KEY", description="environment variable holding the API key")
    organization: str | None = Field(None, description="OpenAI organization id, if any")
    models: list[str] = Field(
        ["gpt-4o-mini", "gpt-4o", "gpt-4.1", "gpt-4.1-mini", "gpt-4.1-nano", "o4-mini", "text-embedding-3-small", "text-embedding-3-large"],
        description="model names this provider serves (more via [models])",
    )
    kinds: list[Literal["chat", "embeddings", "completions"]] = Field(
        ["chat", "embeddings", "completions"], min_length=1, description="what the upstream answers"
    )


class OpenAIProvider(SDKProviderPlugin):
    """OpenAI's chat completions API (official SDK, max_retries=0)."""

    Config = OpenAIConfig

    def __init__(self, config: OpenAIConfig) -> None:
        self.config = config
        self.transport = openai_transport("openai", config, organization=config.organization)
        self.chat = OpenAIShapedProvider("openai", self.transport, "/chat/completions", config.models, config.kinds)
        self.providers, self.transports = [self.chat], [self.transport]
