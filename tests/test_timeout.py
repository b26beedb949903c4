"""timeout: a deadline per request, a budget per attempt, and stream-aware limits; expiry
cancels the upstream call and the client gets a 504 (or, mid-stream, an error event)."""
from __future__ import annotations

import time

import orjson
import pytest

from conftest import CHAT, assert_conforms, eventually, upstream_config
from hookgate.testing.openai_emulator import Fault

# Every test runs once per transport of the openai provider (http, sdk): the same behaviour under both.
pytestmark = pytest.mark.usefixtures("upstream_transport")


async def test_a_hanging_upstream_gets_504_by_the_deadline_and_is_cancelled(gateway, emulator):
    client = await gateway(upstream_config(
        emulator, ["retry", "timeout"],
        retry={"backoff_base_seconds": 0.5, "backoff_cap_seconds": 8},
        timeout={"deadline_seconds": 3, "per_attempt_seconds": 1},
    ))
    emulator.settings.fault = Fault(hang=True)
    started = time.monotonic()
    response = await client.post("/v1/chat/completions", json=CHAT)
    elapsed = time.monotonic() - started
    assert response.status == 504
    assert_conforms("ErrorResponse", await response.json())
    assert 2.5 <= elapsed <= 3.5, elapsed
    assert emulator.stats.calls >= 2
    await eventually(lambda: emulator.stats.in_flight == 0)
    assert emulator.stats.cancelled == emulator.stats.calls, "every hung attempt was cancelled upstream"


async def test_per_request_deadline_header_within_the_maximum(gateway, emulator):
    client = await gateway(upstream_config(emulator, ["timeout"], timeout={"deadline_seconds": 30, "max_deadline_seconds": 0.5}))
    emulator.settings.fault = Fault(hang=True)
    started = time.monotonic()
    response = await client.post("/v1/chat/completions", json=CHAT, headers={"x-hookgate-timeout": "20"})
    assert response.status == 504
    assert time.monotonic() - started < 1.5, "capped by max_deadline_seconds"
    bad = await client.post("/v1/chat/completions", json=CHAT, headers={"x-hookgate-timeout": "soon"})
    assert bad.status == 400 and (await bad.json())["error"]["code"] == "invalid_timeout"


async def test_per_model_deadline(gateway, emulator):
    client = await gateway(upstream_config(emulator, ["timeout"], timeout={"deadline_seconds": 30, "per_model": {"gpt-4o-mini": 0.3}}))
    emulator.settings.fault = Fault(hang=True)
    started = time.monotonic()
    assert (await client.post("/v1/chat/completions", json=CHAT)).status == 504
    assert time.monotonic() - started < 1.0


async def test_a_slow_first_token_is_a_504_before_any_byte(gateway, emulator):
    client = await gateway(upstream_config(emulator, ["timeout"], timeout={"first_token_seconds": 0.3}))
    emulator.settings.fault = Fault(stall_after=0)
    response = await client.post("/v1/chat/completions", json={**CHAT, "stream": True})
    assert response.status == 504
    await eventually(lambda: emulator.stats.in_flight == 0)


async def test_a_stalled_stream_ends_with_an_error_event_and_the_upstream_is_closed(gateway, emulator):
    client = await gateway(upstream_config(emulator, ["timeout"], timeout={"chunk_gap_seconds": 0.3}))
    emulator.settings.fault = Fault(stall_after=2)
    started = time.monotonic()
    response = await client.post("/v1/chat/completions", json={**CHAT, "stream": True})
    assert response.status == 200
    events = [e[6:] for e in (await response.text()).split("\n\n") if e.startswith("data: ")]
    assert time.monotonic() - started < 2
    assert events[-1] == "[DONE]"
    error = orjson.loads(events[-2])
    assert_conforms("ErrorResponse", error)
    assert error["error"]["code"] == "timeout"
    await eventually(lambda: emulator.stats.in_flight == 0 and emulator.stats.cancelled == 1, timeout=1.0)


async def test_a_long_stream_with_steady_chunks_is_not_cut(gateway, emulator):
    client = await gateway(upstream_config(emulator, ["timeout"], timeout={"per_attempt_seconds": 0.2, "first_token_seconds": 0.2, "chunk_gap_seconds": 0.2}))
    emulator.settings.chunk_latency = 0.05
    response = await client.post("/v1/chat/completions", json={**CHAT, "stream": True, "messages": [{"role": "user", "content": " ".join(["word"] * 12)}]})
    body = await response.text()
    assert response.status == 200 and '"error"' not in body and body.endswith("data: [DONE]\n\n")


async def test_a_stream_still_going_at_the_requests_deadline_ends_with_an_error_event(gateway, emulator):
    """Chunks keep coming (no gap is too long), but the whole request's deadline passes mid-stream."""
    client = await gateway(upstream_config(emulator, ["timeout"], timeout={"deadline_seconds": 0.6, "min_attempt_seconds": 0.0}))
    emulator.settings.chunk_latency = 0.1
    started = time.monotonic()
    response = await client.post("/v1/chat/completions", json={**CHAT, "stream": True, "messages": [{"role": "user", "content": " ".join(["word"] * 30)}]})
    assert response.status == 200
    events = [e[6:] for e in (await response.text()).split("\n\n") if e.startswith("data: ")]
    assert time.monotonic() - started < 1.5
    error = orjson.loads(events[-2])
    assert error["error"]["code"] == "timeout" and "deadline passed" in error["error"]["message"]
    await eventually(lambda: emulator.stats.in_flight == 0, timeout=1.0)
