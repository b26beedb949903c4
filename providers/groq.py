"""The ``groq`` provider: Groq's OpenAI-shaped API through the official ``groq`` SDK.

Built on :mod:`hookgate.provider_kit` (``max_retries=0``, aiohttp transport, raw
``post()``); Groq answers in OpenAI's wire format, so chunks are relayed unchanged.
"""
from __future__ import annotations

import groq
import httpx
from pydantic import Field

from hookgate.provider_kit import OpenAIShapedProvider, SDKProviderConfig, SDKProviderPlugin, SDKTransport


class GroqConfig(SDKProviderConfig):
    """Settings of the groq provider."""

    base_url: str | None = Field("https://api.groq.com", description="API base URL (the SDK adds /openai/v1)")
    api_key_env: str = Field("GROQ_API_KEY", description="environment variable holding the API key")
    models: list[str] = Field(
        ["llama-3.3-70b-versatile", "llama-3.1-8b-instant"],
        description='model names this provider serves (more via [models], e.g. a "groq/*" pattern)',
    )


class GroqProvider(SDKProviderPlugin):
    """Groq's chat completions API (official groq SDK, max_retries=0)."""

    Config = GroqConfig

    def __init__(self, config: GroqConfig) -> None:
        self.config = config

        self.transport = SDKTransport("groq", config, sdk=groq, client_class=groq.AsyncGroq, response_type=httpx.Response)
        self.chat = OpenAIShapedProvider("groq", self.transport, "/openai/v1/chat/completions", config.models, config.kinds)
        self.providers, self.transports = [self.chat], [self.transport]
