"""circuit_breaker: a failing route is paused (fast 503 with Retry-After, no upstream call) and
recovers through half-open probes."""
from __future__ import annotations

import asyncio

import pytest

from conftest import CHAT, upstream_config
from hookgate.testing.openai_emulator import Fault

# Every test runs once per transport of the openai provider (http, sdk): the same behaviour under both.
pytestmark = pytest.mark.usefixtures("upstream_transport")


def breaker_config(emulator, **settings) -> str:
    return upstream_config(emulator, ["circuit_breaker"], circuit_breaker={"failure_threshold": 3, "open_seconds": 0.3, **settings})


async def test_opens_after_consecutive_failures_and_fails_fast(gateway, emulator):
    client = await gateway(breaker_config(emulator))
    emulator.settings.fault = Fault(status=500)
    for _ in range(3):
        assert (await client.post("/v1/chat/completions", json=CHAT)).status == 502
    rejected = await client.post("/v1/chat/completions", json=CHAT)
    assert rejected.status == 503
    assert (await rejected.json())["error"]["code"] == "circuit_open"
    assert rejected.headers["Retry-After"] == "1"
    assert emulator.stats.calls == 3, "no upstream call while open"


async def test_recovers_through_a_half_open_probe(gateway, emulator):
    client = await gateway(breaker_config(emulator))
    emulator.settings.fault = Fault(status=503)
    for _ in range(3):
        await client.post("/v1/chat/completions", json=CHAT)
    assert (await client.post("/v1/chat/completions", json=CHAT)).headers.get("x-hookgate-provider") == "openai"
    emulator.settings.fault = None
    await asyncio.sleep(0.35)
    assert (await client.post("/v1/chat/completions", json=CHAT)).status == 200, "the probe goes through"
    statuses = [(await client.post("/v1/chat/completions", json=CHAT)).status for _ in range(3)]
    assert statuses == [200, 200, 200], "closed again"


async def test_a_failed_probe_opens_it_again(gateway, emulator):
    client = await gateway(breaker_config(emulator))
    emulator.settings.fault = Fault(status=500)
    for _ in range(3):
        await client.post("/v1/chat/completions", json=CHAT)
    await asyncio.sleep(0.35)
    assert (await client.post("/v1/chat/completions", json=CHAT)).status == 502, "the probe fails"
    assert (await client.post("/v1/chat/completions", json=CHAT)).status == 503, "open again"
    assert emulator.stats.calls == 4


async def test_only_one_probe_at_a_time_while_half_open(gateway, emulator):
    client = await gateway(breaker_config(emulator))
    emulator.settings.fault = Fault(status=500)
    for _ in range(3):
        await client.post("/v1/chat/completions", json=CHAT)
    await asyncio.sleep(0.35)
    emulator.settings.fault = Fault(delay=0.2)
    statuses = sorted(r.status for r in await asyncio.gather(*(client.post("/v1/chat/completions", json=CHAT) for _ in range(3))))
    assert statuses == [200, 503, 503]


async def test_request_errors_do_not_count(gateway, emulator):
    client = await gateway(breaker_config(emulator))
    emulator.settings.fault = Fault(status=400)
    for _ in range(5):
        assert (await client.post("/v1/chat/completions", json=CHAT)).status == 400
    emulator.settings.fault = Fault(status=429)
    for _ in range(5):
        assert (await client.post("/v1/chat/completions", json=CHAT)).status == 429
    assert emulator.stats.calls == 10


async def test_opens_on_the_error_ratio_over_the_window(gateway, emulator):
    client = await gateway(breaker_config(emulator, failure_threshold=100, min_requests=6, error_ratio=0.5, window_seconds=30))
    for _ in range(3):
        emulator.script(None, Fault(status=502))
        await client.post("/v1/chat/completions", json=CHAT)
        await client.post("/v1/chat/completions", json=CHAT)
    assert (await client.post("/v1/chat/completions", json=CHAT)).status == 503
    assert emulator.stats.calls == 6


async def test_retry_does_not_hammer_an_open_circuit(gateway, emulator):
    client = await gateway(upstream_config(
        emulator, ["retry", "circuit_breaker"],
        retry={"backoff_base_seconds": 0.01, "backoff_cap_seconds": 0.02, "max_attempts": 5},
        circuit_breaker={"failure_threshold": 2, "open_seconds": 30},
    ))
    emulator.settings.fault = Fault(status=500)
    response = await client.post("/v1/chat/completions", json=CHAT)
    assert response.status == 503 and (await response.json())["error"]["code"] == "circuit_open"
    assert emulator.stats.calls == 2


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _breaker(monkeypatch, **settings):
    from plugins import circuit_breaker

    clock = _Clock()
    monkeypatch.setattr(circuit_breaker, "monotonic", clock)
    config = circuit_breaker.CircuitBreakerConfig(**{"failure_threshold": 1000, "min_requests": 10, "error_ratio": 0.5, "window_seconds": 30, **settings})
    return circuit_breaker.Breaker(config), clock


def test_the_error_ratio_forgets_outcomes_older_than_the_window(monkeypatch):
    breaker, clock = _breaker(monkeypatch)
    for _ in range(9):
        assert breaker.record(True) is None  # 9 failures: under min_requests
    clock.now += 31  # those fall out of the window
    for _ in range(10):
        breaker.record(False)
    assert breaker.record(True) is None and breaker.state == "closed"  # 1 failure in 11 calls
    for _ in range(10):
        breaker.record(True)
    assert breaker.state == "open"  # 11 failures in 21 calls


def test_the_window_holds_the_same_few_buckets_whatever_the_request_rate(monkeypatch):
    from plugins.circuit_breaker import WINDOW_BUCKETS

    breaker, clock = _breaker(monkeypatch, min_requests=10**9)
    for _ in range(120):  # two minutes at 1,000 outcomes a second
        for _ in range(1000):
            breaker.record(False)
        clock.now += 1
    breaker.record(True)
    assert len(breaker.window) <= WINDOW_BUCKETS + 1
    assert 30_000 <= breaker.calls <= 32_000 and breaker.failures == 1
