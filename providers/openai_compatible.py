"""``openai_compatible``: any server that speaks OpenAI's API (vLLM, Ollama, LM Studio, Together…).

Several named servers can be configured; each becomes a provider of its own, with its own base
URL, key and models, over the app's shared HTTP pool (or, with ``transport = "sdk"``, the
official ``openai`` SDK with ``max_retries=0``)::

    [plugins.openai_compatible.servers.local-vllm]
    base_url = "http://127.0.0.1:8000/v1"
    models = ["llama-3.1-8b"]

    [plugins.openai_compatible.servers.together]
    base_url = "https://api.together.xyz/v1"
    api_key_env = "TOGETHER_API_KEY"
    models = ["meta-llama/Llama-3.3-70B-Instruct-Turbo"]

A server without ``api_key``/``api_key_env`` is called without a key (local servers need none);
one that names a key variable which is unset gets 503s naming it.
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from hookgate import PluginConfig
from hookgate.provider_kit import OpenAIShapedProvider, OpenAIWireConfig, SDKProviderPlugin, openai_wire_transport


class ServerConfig(OpenAIWireConfig):
    """One OpenAI-compatible server."""

    base_url: str = Field(description="the server's OpenAI-style base URL, e.g. http://127.0.0.1:8000/v1")
    models: list[str] = Field(min_length=1, description="model names served by this server")
    kinds: list[Literal["chat", "embeddings", "completions"]] = Field(
        ["chat", "embeddings", "completions"], min_length=1, description="what the server answers (vLLM serves all three)"
    )


class OpenAICompatibleConfig(PluginConfig):
    """Settings of openai_compatible: a table per server under ``servers``."""

    servers: dict[str, ServerConfig] = Field(default_factory=dict, description="named servers; each name becomes a provider name")

    @field_validator("servers")
    @classmethod
    def _names(cls, servers: dict[str, ServerConfig]) -> dict[str, ServerConfig]:
        for name in servers:
            if not name or any(c.isspace() for c in name):
                raise ValueError(f"server name {name!r} must be a non-empty word")
        return servers


class OpenAICompatible(SDKProviderPlugin):
    """Any OpenAI-compatible server, several named instances (shared HTTP pool or the openai SDK)."""

    Config = OpenAICompatibleConfig

    def __init__(self, config: OpenAICompatibleConfig) -> None:
        self.config = config
        servers = {name: server for name, server in config.servers.items() if server.enabled}
        transports = {
            name: openai_wire_transport(name, server, key_required=bool(server.api_key or server.api_key_env)) for name, server in servers.items()
        }
        self.transports = list(transports.values())
        self.providers = [
            OpenAIShapedProvider(name, transports[name], "/chat/completions", server.models, server.kinds) for name, server in servers.items()
        ]
