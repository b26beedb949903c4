"""retry: transient failures are retried with backoff, within the deadline and the budget; the
call counts come from the emulator."""
from __future__ import annotations

import time

import pytest
from structlog.testing import capture_logs

from conftest import CHAT, assert_conforms, upstream_config
from hookgate.plugins.retry import Retry, RetryConfig
from hookgate.testing.openai_emulator import Fault

# Every test runs once per transport of the openai provider (http, sdk): the same behaviour under both.
pytestmark = pytest.mark.usefixtures("upstream_transport")


FAST = {"backoff_base_seconds": 0.01, "backoff_cap_seconds": 0.05}


async def test_transient_failures_then_success_is_one_200_after_three_calls(gateway, emulator):
    client = await gateway(upstream_config(emulator, ["retry"], retry=FAST))
    emulator.script(Fault(status=503), Fault(status=529), None)
    response = await client.post("/v1/chat/completions", json=CHAT)
    assert response.status == 200
    assert_conforms("CreateChatCompletionResponse", await response.json())
    assert response.headers["x-hookgate-attempts"] == "3"
    assert emulator.stats.calls == 3


async def test_a_persistent_500_is_three_calls_then_502(gateway, emulator):
    client = await gateway(upstream_config(emulator, ["retry"], retry=FAST))
    emulator.settings.fault = Fault(status=500)
    response = await client.post("/v1/chat/completions", json=CHAT)
    assert response.status == 502
    assert_conforms("ErrorResponse", await response.json())
    assert response.headers["x-hookgate-attempts"] == "3"
    assert emulator.stats.calls == 3


@pytest.mark.parametrize(
    "fault",
    [
        Fault(status=400),
        Fault(status=401),
        Fault(status=403),
        Fault(status=404),
        Fault(status=413),
        Fault(status=422),
        Fault(status=429, code="insufficient_quota", error_type="insufficient_quota"),
    ],
    ids=lambda f: f"{f.status}-{f.code}",
)
async def test_non_retriable_statuses_are_one_call(gateway, emulator, fault):
    client = await gateway(upstream_config(emulator, ["retry"], retry=FAST))
    emulator.settings.fault = fault
    response = await client.post("/v1/chat/completions", json=CHAT)
    assert response.status >= 400
    assert emulator.stats.calls == 1
    assert response.headers["x-hookgate-attempts"] == "1"


async def test_one_attempt_allowed_is_one_call_and_its_error(gateway, emulator):
    client = await gateway(upstream_config(emulator, ["retry"], retry={**FAST, "max_attempts": 1}))
    emulator.settings.fault = Fault(status=500)
    response = await client.post("/v1/chat/completions", json=CHAT)
    assert response.status == 502 and emulator.stats.calls == 1
    assert response.headers["x-hookgate-attempts"] == "1"


async def test_a_retry_after_one_success_is_judged_afresh(gateway, emulator):
    """The first attempt runs without tenacity's loop; a request after a retried one starts from
    scratch (one success is one call, a failure after it is retried as the first was)."""
    client = await gateway(upstream_config(emulator, ["retry"], retry=FAST))
    emulator.script(Fault(status=503), None, None, Fault(status=502), None)
    first = await client.post("/v1/chat/completions", json=CHAT)
    second = await client.post("/v1/chat/completions", json=CHAT)
    third = await client.post("/v1/chat/completions", json=CHAT)
    assert [r.status for r in (first, second, third)] == [200, 200, 200]
    assert [r.headers["x-hookgate-attempts"] for r in (first, second, third)] == ["2", "1", "2"]
    assert emulator.stats.calls == 5


@pytest.mark.parametrize("fault", [Fault(status=408), Fault(status=429), Fault(status=502), Fault(status=504), Fault(malformed=False, drop_after=0)])
async def test_other_transient_failures_are_retried(gateway, emulator, fault):
    client = await gateway(upstream_config(emulator, ["retry"], retry=FAST))
    emulator.script(fault, None)
    response = await client.post("/v1/chat/completions", json=CHAT)
    assert response.status == 200
    assert emulator.stats.calls == 2


async def test_retry_after_is_honoured(gateway, emulator):
    client = await gateway(upstream_config(emulator, ["retry", "timeout"], retry=FAST))
    emulator.script(Fault(status=429, retry_after=2), None)
    response = await client.post("/v1/chat/completions", json=CHAT)
    assert response.status == 200
    first, second = emulator.stats.requests
    assert second.received_at - first.received_at >= 2.0


async def test_retry_after_ms_is_preferred(gateway, emulator):
    client = await gateway(upstream_config(emulator, ["retry"], retry=FAST))
    emulator.script(Fault(status=503, headers={"retry-after-ms": "300", "retry-after": "20"}), None)
    started = time.monotonic()
    assert (await client.post("/v1/chat/completions", json=CHAT)).status == 200
    assert 0.3 <= time.monotonic() - started < 5
    first, second = emulator.stats.requests
    assert second.received_at - first.received_at >= 0.3


async def test_a_retry_after_beyond_the_deadline_is_passed_to_the_client_at_once(gateway, emulator):
    client = await gateway(upstream_config(emulator, ["retry", "timeout"], retry=FAST, timeout={"deadline_seconds": 30}))
    emulator.script(Fault(status=429, retry_after=300))
    started = time.monotonic()
    response = await client.post("/v1/chat/completions", json=CHAT)
    assert time.monotonic() - started < 1.0
    assert response.status == 429
    assert response.headers["retry-after"] == "300"
    assert emulator.stats.calls == 1


def test_backoff_is_full_jitter_within_the_cap():
    plugin = Retry(RetryConfig(backoff_base_seconds=0.5, backoff_cap_seconds=8))

    class State:
        def __init__(self, attempt_number):
            self.attempt_number = attempt_number
            self.outcome = None

    samples = [plugin._wait(State(n)) for n in range(1, 11) for _ in range(100)]
    assert len(samples) == 1000
    assert all(0 <= s <= 8 for s in samples)
    assert len(set(samples)) > 900, "delays vary"
    first_retry = [plugin._wait(State(1)) for _ in range(200)]
    assert max(first_retry) <= 0.5, "the first window is base * 2**0"
    late = [plugin._wait(State(10)) for _ in range(200)]
    assert max(late) > 4, "the window grows up to the cap"


async def test_the_retry_budget_stops_retry_storms(gateway, emulator):
    client = await gateway(upstream_config(emulator, ["retry"], retry={**FAST, "budget_ratio": 0.0, "budget_min_retries": 2}))
    emulator.settings.fault = Fault(status=503)
    with capture_logs() as logs:
        for _ in range(3):
            await client.post("/v1/chat/completions", json=CHAT)
    # 3 first attempts + the 2 retries the budget allows per window
    assert emulator.stats.calls == 5
    assert any(entry["event"] == "retry_budget_exhausted" for entry in logs)


async def test_streams_are_retried_before_the_first_chunk_only(gateway, emulator):
    client = await gateway(upstream_config(emulator, ["retry"], retry=FAST))
    emulator.script(Fault(status=503), None)
    response = await client.post("/v1/chat/completions", json={**CHAT, "stream": True})
    assert response.status == 200 and b"[DONE]" in await response.read()
    assert emulator.stats.calls == 2

    emulator.script(Fault(drop_after=2))
    response = await client.post("/v1/chat/completions", json={**CHAT, "stream": True})
    body = await response.read()
    assert response.status == 200 and b'"error"' in body
    assert emulator.stats.calls == 3, "no retry once a chunk may have reached the client"


async def test_each_attempt_is_in_the_request_log(gateway, emulator):
    client = await gateway(upstream_config(emulator, ["request_log", "retry"], retry=FAST))
    emulator.script(Fault(status=503), None)
    with capture_logs() as logs:
        await client.post("/v1/chat/completions", json=CHAT)
    (line,) = [entry for entry in logs if entry["event"] == "request"]
    assert line["attempts"] == ["http_503", "ok"]
