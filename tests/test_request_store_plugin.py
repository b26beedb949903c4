"""The request_store plugin in a running gateway: a database outage under load costs rows, never
a request (the rows are counted in /metrics, logged once per interval, and /readyz says
degraded); a database that is down at start-up does not stop the gateway, which connects when
it comes back; the metrics and readiness are the store's own."""
from __future__ import annotations

import asyncio
import re
import time

import pytest

from accounting_support import bearer, captured_logs  # noqa: F401  (captured_logs: autouse)
from console_support import ADMIN, PIPELINE, chat, console_config, send, stored
from request_store_support import database_url, pg_proxy, pg_schema, via_port  # noqa: F401

WITH_METRICS = [*PIPELINE[:-1], "metrics", PIPELINE[-1]]


async def scrape(client) -> dict[str, float]:
    """The request store's samples from /metrics, by name and labels."""
    text = await (await client.get("/metrics", headers=bearer(ADMIN))).text()
    return {m[1]: float(m[2]) for m in re.finditer(r"^(hookgate_request_store_[^ ]+) ([0-9.e+-]+)$", text, flags=re.M)}


def dropped(samples: dict[str, float]) -> float:
    return sum(v for k, v in samples.items() if k.startswith("hookgate_request_store_rows_dropped_total"))


async def until(condition, timeout: float = 20.0) -> None:
    """The writer and the reconnect loop work in the background: poll what they expose."""
    deadline = time.monotonic() + timeout
    while not await condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def test_a_database_outage_under_load_drops_and_counts_rows_while_every_request_succeeds(
    gateway, database_url, pg_schema, pg_proxy, captured_logs
):
    store = {"url": via_port(database_url, pg_proxy.port), "postgres_schema": pg_schema, "queue_capacity": 200, "batch_size": 50,
             "write_timeout_s": 1.0, "connect_timeout_s": 1.0, "connect_retry_s": 0.2}
    client = await gateway(console_config(store, pipeline=WITH_METRICS))
    assert await send(client, 30) == [200] * 30
    await stored(client, 30)

    await pg_proxy.cut()
    started = time.perf_counter()
    slowest = 0.0
    for burst in range(8):  # 400 requests, 50 at a time
        async def one(i: int) -> int:
            nonlocal slowest
            sent = time.perf_counter()
            response = await client.post("/v1/chat/completions", json=chat("echo", f"outage {burst}-{i}"), headers=bearer(ADMIN))
            await response.read()
            slowest = max(slowest, time.perf_counter() - sent)
            return response.status
        assert await asyncio.gather(*(one(i) for i in range(50))) == [200] * 50
    elapsed = time.perf_counter() - started
    assert slowest < 2.0 and elapsed < 30, (slowest, elapsed)

    async def counted() -> bool:
        samples = await scrape(client)
        return dropped(samples) >= 200 and samples['hookgate_request_store_connected'] == 0.0
    await until(counted)
    samples = await scrape(client)
    assert samples["hookgate_request_store_queue_rows"] <= 200, "memory stays bounded by queue_capacity"
    assert samples["hookgate_request_store_rows_written_total"] == 30
    assert 30 + dropped(samples) + samples["hookgate_request_store_queue_rows"] == 430, "every row is written, dropped or queued"
    ready = await (await client.get("/readyz")).json()
    assert ready["checks"]["request_store"]["status"] == "degraded"
    assert (await client.get("/-/api/requests", headers=bearer(ADMIN))).status == 503
    warnings = [e for e in captured_logs if e["event"] == "request_store_rows_dropped"]
    assert len(warnings) == 1, "one line per interval (the next one sums what was dropped meanwhile), however many rows"

    await pg_proxy.start()  # the database is back
    async def writing_again() -> bool:
        await send(client, 1)
        return (await scrape(client))["hookgate_request_store_rows_written_total"] > 30
    await until(writing_again)
    assert (await client.get("/-/api/requests", headers=bearer(ADMIN))).status == 200


async def test_a_database_down_at_start_up_does_not_stop_the_gateway_which_connects_later(
    gateway, database_url, pg_schema, pg_proxy, captured_logs
):
    await pg_proxy.cut()
    store = {"url": via_port(database_url, pg_proxy.port), "postgres_schema": pg_schema, "connect_timeout_s": 1.0, "connect_retry_s": 0.2}
    client = await gateway(console_config(store))
    assert await send(client, 3) == [200] * 3
    ready = await (await client.get("/readyz")).json()
    assert ready["checks"]["request_store"]["status"] == "degraded"
    assert "cannot reach its database" in ready["checks"]["request_store"]["detail"]
    assert any(e["event"] == "request_store_unreachable_at_startup" for e in captured_logs)
    unavailable = await client.get("/-/api/requests", headers=bearer(ADMIN))
    assert unavailable.status == 503 and (await unavailable.json())["error"]["code"] == "request_store_unavailable"

    await pg_proxy.start()

    async def connected() -> bool:
        return (await client.get("/-/api/requests", headers=bearer(ADMIN))).status == 200
    await until(connected)
    await send(client, 2)
    await stored(client, 5)  # the rows queued while it was connecting are written too
    assert (await (await client.get("/readyz")).json())["checks"]["request_store"]["status"] == "ok"


async def test_the_store_reports_its_own_metrics_and_readiness(gateway, tmp_path):
    client = await gateway(console_config({"url": f"sqlite:///{tmp_path / 'r.db'}", "queue_capacity": 1234}, pipeline=WITH_METRICS))
    await send(client, 4)
    await stored(client, 4)
    samples = await scrape(client)
    assert samples["hookgate_request_store_rows_written_total"] == 4
    assert samples["hookgate_request_store_queue_capacity"] == 1234
    assert samples["hookgate_request_store_connected"] == 1.0 and dropped(samples) == 0
    assert (await (await client.get("/readyz")).json())["checks"]["request_store"]["status"] == "ok"


@pytest.mark.parametrize("surface_path, body", [
    ("/v1/chat/completions", {"model": "echo", "stream": True, "messages": [{"role": "user", "content": "stream me"}]}),
])
async def test_a_streamed_answer_is_stored_with_its_time_to_first_byte(gateway, tmp_path, surface_path, body):
    client = await gateway(console_config({"url": f"sqlite:///{tmp_path / 'r.db'}"}))
    response = await client.post(surface_path, json=body, headers=bearer(ADMIN))
    assert response.status == 200 and b"[DONE]" in await response.read()
    row = (await stored(client, 1))[0]
    assert row["status"] == 200 and row["surface"] == "chat.completions"
    assert 0 < row["timings"]["ttft_ms"] <= row["timings"]["total_ms"]
    assert row["tokens"]["completion"] > 0
