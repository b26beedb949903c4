"""Shared by the tests of the accounting plugins (api_keys, token_counter, cost, rate_limit,
budget, usage): gateway keys, their plugins.toml sections, expected usage from the emulator, and
the check that no log line ever contains a raw gateway or provider key."""
from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any, Iterator

import pytest
from structlog.testing import capture_logs

from hookgate.messages import message_text
from hookgate.plugins.api_keys import key_digest
from hookgate.testing.openai_emulator import count_tokens, reply_for

UPSTREAM_KEY = "sk-upstream-secret-123"
"""The provider key conftest's upstream_config gives the openai plugin."""

ANTHROPIC_KEY = "sk-ant-upstream-secret-456"
"""The provider key the tests give the anthropic plugin."""

RAW_SECRETS: list[str] = [UPSTREAM_KEY, ANTHROPIC_KEY]
"""Every raw key the tests hand out; none may ever appear in a log line."""

ACCOUNTING = ["api_keys", "token_counter", "rate_limit", "cost", "budget", "usage", "request_log"]
"""The accounting plugins in their documented order (before caches and reliability middlewares)."""


def new_key(name: str) -> str:
    """A fresh raw gateway key, remembered for the log check."""
    key = f"hg-test-{name}-{uuid.uuid4().hex}"
    RAW_SECRETS.append(key)
    return key


def keys_section(keys: dict[str, tuple[str, dict[str, Any]]], **options: Any) -> dict[str, Any]:
    """``[plugins.api_keys]`` with ``keys`` as id -> (raw key, settings): only hashes are written."""
    table = {key_id: {"hash": key_digest(raw), **settings} for key_id, (raw, settings) in keys.items()}
    return {"keys": table, **options}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def emulated_usage(messages: list[dict[str, Any]]) -> tuple[int, int]:
    """(prompt, completion) tokens the emulator reports for ``messages``."""
    prompt = sum(count_tokens(message_text(m.get("content"))) for m in messages)
    return prompt, count_tokens(reply_for(messages))


def cost_of(prompt: int, completion: int, input_price: str, output_price: str) -> Decimal:
    """The exact cost at prices in USD per million tokens."""
    return (prompt * Decimal(input_price) + completion * Decimal(output_price)) / 1_000_000


def assert_no_secrets(text: str, where: str = "log") -> None:
    for secret in RAW_SECRETS:
        assert secret not in text, f"a raw key appeared in the {where}"


def stop_and_check(*processes: Any) -> list[str]:
    """Stop gateway processes and return their stderr, after checking it holds no raw key."""
    outputs = [process.stop() for process in processes]
    for output in outputs:
        assert_no_secrets(output, "gateway process's stderr")
    return outputs


DEBUG_LOGS = {"HOOKGATE_LOG_LEVEL": "debug", "HOOKGATE_LOG_FORMAT": "json"}
"""Environment for gateway processes: log everything, so the secret check sees the most."""


@pytest.fixture(autouse=True)
def captured_logs() -> Iterator[list[dict[str, Any]]]:
    """Capture every structlog line a test causes in this process, and fail the test if one
    holds a raw gateway or provider key."""
    with capture_logs() as logs:
        yield logs
    assert_no_secrets(repr(logs))
