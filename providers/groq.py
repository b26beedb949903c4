"""The ``groq`` provider: Groq's OpenAI-shaped API.

Built on :mod:`hookgate.provider_kit`. Groq answers in OpenAI's wire format under
``/openai/v1`` on its host, so chunks are relayed unchanged. ``transport = "http"`` (the default)
uses the app's shared aiohttp pool; ``transport = "sdk"`` the official ``groq`` SDK
(``max_retries=0``, aiohttp transport, raw ``post()``), imported only then.
"""
from __future__ import annotations

from pydantic import Field

from hookgate.provider_kit import HTTPTransport, OpenAIShapedProvider, OpenAIWireConfig, SDKProviderPlugin, SDKTransport, UpstreamTransport

GROQ_BASE_URL = "https://api.groq.com"
CHAT_PATH = "/openai/v1/chat/completions"


class GroqConfig(OpenAIWireConfig):
    """Settings of the groq provider."""

    base_url: str | None = Field(GROQ_BASE_URL, description="API base URL (the provider adds /openai/v1)")
    api_key_env: str = Field("GROQ_API_KEY", description="environment variable holding the API key")
    models: list[str] = Field(
        ["llama-3.3-70b-versatile", "llama-3.1-8b-instant"],
        description='model names this provider serves (more via [models], e.g. a "groq/*" pattern)',
    )


class GroqProvider(SDKProviderPlugin):
    """Groq's chat completions API (the shared HTTP pool, or the official groq SDK with max_retries=0)."""

    Config = GroqConfig

    def __init__(self, config: GroqConfig) -> None:
        self.config = config
        self.transport = groq_transport(config)
        self.chat = OpenAIShapedProvider("groq", self.transport, CHAT_PATH, config.models, config.kinds)
        self.providers, self.transports = [self.chat], [self.transport]


def groq_transport(config: GroqConfig) -> UpstreamTransport:
    """The transport ``config.transport`` names; the ``groq`` SDK is imported only for ``sdk``."""
    if config.transport == "http":
        return HTTPTransport("groq", config, default_base_url=GROQ_BASE_URL, max_response_bytes=config.max_response_bytes)
    import groq
    import httpx

    return SDKTransport("groq", config, sdk=groq, client_class=groq.AsyncGroq, response_type=httpx.Response)
