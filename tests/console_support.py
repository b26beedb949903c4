"""Shared by the console's tests (admin API, keys API, sessions, browser): a gateway with the
request store, gateway keys, token counting, prices and two demo models, and helpers to send
traffic and wait for it to be stored."""
from __future__ import annotations

import asyncio
import time
from typing import Any

from accounting_support import bearer, keys_section, new_key
from conftest import pipeline_config

ADMIN, ALICE = new_key("console-admin"), new_key("console-alice")
MODELS = ["echo", "echo-large"]
PRICES = {"echo": {"input": "1", "output": "2"}, "echo-large": {"input": "10", "output": "30"}}
PIPELINE = ["request_store", "api_keys", "token_counter", "cost", "memory_cache", "echo"]


def console_config(store: dict[str, Any], *, redis: dict[str, Any] | None = None, pipeline: list[str] | None = None,
                   request_store: dict[str, Any] | None = None, **sections: dict[str, Any]) -> str:
    """plugins.toml text: the console over ``store`` (``{"url": …, "postgres_schema": …}``), an
    admin key and a non-admin key (alice) in plugins.toml, and ``redis`` options for api_keys."""
    keys = keys_section({"admin": (ADMIN, {"admin": True}), "alice": (ALICE, {"metadata": {"team": "a"}})}, **(redis or {}))
    store_section = {"flush_interval_ms": 10, "retention_days": 0, "dashboard_refresh_s": 1, **store, **(request_store or {})}
    return pipeline_config(
        pipeline or PIPELINE,
        request_store=store_section,
        api_keys=keys,
        cost={"prices": PRICES},
        echo={"models": MODELS},
        **sections,
    )


def chat(model: str = "echo", text: str = "hello console") -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}]}


async def send(client: Any, count: int, *, key: str = ALICE, model: str = "echo", distinct: bool = True) -> list[int]:
    """``count`` chat requests (distinct prompts unless told: no cache hits); their statuses."""
    statuses = []
    for i in range(count):
        response = await client.post("/v1/chat/completions", json=chat(model, f"hello {i}" if distinct else "same"), headers=bearer(key))
        await response.read()
        statuses.append(response.status)
    return statuses


async def stored(client: Any, count: int, *, timeout: float = 15.0, **filters: str) -> list[dict[str, Any]]:
    """Wait until the admin API lists ``count`` requests matching ``filters`` (rows are written
    in the background, a few milliseconds after the answer); returns them, newest first."""
    deadline = time.monotonic() + timeout
    while True:
        rows: list[dict[str, Any]] = []
        cursor = None
        while True:
            query = {**filters, "limit": "500", **({"cursor": cursor} if cursor else {})}
            page = await (await client.get("/-/api/requests", params=query, headers=bearer(ADMIN))).json()
            rows.extend(page["data"])
            cursor = page["next_cursor"]
            if cursor is None:
                break
        if len(rows) >= count or time.monotonic() > deadline:
            assert len(rows) == count, f"{len(rows)} stored rows, expected {count}"
            return rows
        await asyncio.sleep(0.02)
