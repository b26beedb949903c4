"""A local emulator of Groq's API, for tests that exercise the official ``groq`` SDK.

Groq serves OpenAI's chat completions API under ``/openai/v1`` on its host, and its SDK's
``base_url`` is the bare host; everything else (faults, counters, deterministic answers) is the
OpenAI emulator's::

    async with groq_emulator().serve() as emu:
        client = groq.AsyncGroq(base_url=emu.base_url, api_key="gsk-test", max_retries=0)
"""
from __future__ import annotations

from typing import Any

from .openai_emulator import OpenAIEmulator

GROQ_MODELS = ("llama-3.3-70b-versatile", "llama-3.1-8b-instant")


def groq_emulator(**kwargs: Any) -> OpenAIEmulator:
    """An :class:`OpenAIEmulator` laid out as Groq's API."""
    kwargs.setdefault("models", GROQ_MODELS)
    return OpenAIEmulator(api_prefix="/openai/v1", base_path="", **kwargs)
