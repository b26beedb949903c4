"""concurrency: the emulator never sees more calls in flight than the limit, per instance or
across instances sharing Redis; slots always come back."""
from __future__ import annotations

import asyncio
import signal
import time

import aiohttp
import pytest

from conftest import CHAT, eventually, upstream_config
from hookgate.testing.openai_emulator import Fault


async def test_limit_3_with_30_concurrent_requests(gateway, emulator):
    client = await gateway(upstream_config(emulator, ["concurrency"], concurrency={"limit": 3}))
    emulator.settings.latency = 0.05
    responses = await asyncio.gather(*(client.post("/v1/chat/completions", json=CHAT) for _ in range(30)))
    assert [r.status for r in responses] == [200] * 30
    assert emulator.stats.peak_in_flight == 3


async def test_a_request_that_waits_too_long_gets_429_with_retry_after(gateway, emulator):
    client = await gateway(upstream_config(emulator, ["concurrency"], concurrency={"limit": 1, "max_wait_seconds": 0.1, "retry_after_seconds": 2}))
    emulator.settings.latency = 0.5
    slow = asyncio.ensure_future(client.post("/v1/chat/completions", json=CHAT))
    await eventually(lambda: emulator.stats.in_flight == 1)
    rejected = await client.post("/v1/chat/completions", json=CHAT)
    assert rejected.status == 429
    assert rejected.headers["Retry-After"] == "2"
    assert (await rejected.json())["error"]["code"] == "concurrency_limit"
    assert (await slow).status == 200


async def test_503_can_be_chosen_for_rejections(gateway, emulator):
    client = await gateway(upstream_config(emulator, ["concurrency"], concurrency={"limit": 1, "max_wait_seconds": 0.05, "reject_status": 503}))
    emulator.settings.latency = 0.3
    slow = asyncio.ensure_future(client.post("/v1/chat/completions", json=CHAT))
    await eventually(lambda: emulator.stats.in_flight == 1)
    assert (await client.post("/v1/chat/completions", json=CHAT)).status == 503
    await slow


@pytest.mark.parametrize(
    ("scope", "headers_a", "headers_b", "expected_peak"),
    [
        ("instance", {"Authorization": "Bearer sk-a"}, {"Authorization": "Bearer sk-b"}, 1),
        ("api_key", {"Authorization": "Bearer sk-a"}, {"Authorization": "Bearer sk-b"}, 2),
    ],
)
async def test_scopes(gateway, emulator, scope, headers_a, headers_b, expected_peak):
    client = await gateway(upstream_config(emulator, ["concurrency"], concurrency={"limit": 1, "scope": scope}))
    emulator.settings.latency = 0.2
    await asyncio.gather(
        client.post("/v1/chat/completions", json=CHAT, headers=headers_a),
        client.post("/v1/chat/completions", json=CHAT, headers=headers_b),
    )
    assert emulator.stats.peak_in_flight == expected_peak


async def test_slots_are_released_on_errors_timeouts_and_cancellation(gateway, emulator):
    config = upstream_config(emulator, ["concurrency", "timeout"], concurrency={"limit": 1, "max_wait_seconds": 0.2}, timeout={"per_attempt_seconds": 0.2})
    client = await gateway(config)
    emulator.script(Fault(status=500), Fault(hang=True))
    assert (await client.post("/v1/chat/completions", json=CHAT)).status == 502
    assert (await client.post("/v1/chat/completions", json=CHAT)).status == 504
    assert (await client.post("/v1/chat/completions", json=CHAT)).status == 200, "both slots came back"


async def test_a_client_leaving_mid_stream_closes_upstream_and_frees_the_slot(gateway, emulator):
    client = await gateway(upstream_config(emulator, ["concurrency"], concurrency={"limit": 1, "max_wait_seconds": 0.2}))
    emulator.settings.chunk_latency = 0.2
    response = await client.post("/v1/chat/completions", json={**CHAT, "stream": True})
    await response.content.readline()
    left_at = time.monotonic()
    response.close()
    await eventually(lambda: emulator.stats.cancelled == 1, timeout=1.0)
    assert time.monotonic() - left_at < 1.0
    emulator.settings.chunk_latency = 0.0
    assert (await client.post("/v1/chat/completions", json=CHAT)).status == 200, "the slot is free"


async def test_a_stream_holds_its_slot_until_it_ends(gateway, emulator):
    client = await gateway(upstream_config(emulator, ["concurrency"], concurrency={"limit": 1}))
    emulator.settings.chunk_latency = 0.05
    streams = [client.post("/v1/chat/completions", json={**CHAT, "stream": True}) for _ in range(3)]
    for response in await asyncio.gather(*streams):
        assert b"[DONE]" in await response.read()
    assert emulator.stats.peak_in_flight == 1


# ------------------------------------------------------------------- the per-instance slots ---


async def test_slots_go_to_waiters_first_come_first_served_and_a_newcomer_never_overtakes():
    from hookgate.plugins.concurrency import KeyedSemaphore

    slots = KeyedSemaphore(1)
    assert slots.try_acquire("k")
    order: list[str] = []

    async def wait(name: str) -> None:
        assert await slots.acquire("k", timeout=5)
        order.append(name)

    first = asyncio.ensure_future(wait("first"))
    await asyncio.sleep(0)  # first is now waiting
    second = asyncio.ensure_future(wait("second"))
    await asyncio.sleep(0)
    slots.release("k")  # to first, not to whoever asks next
    assert not slots.try_acquire("k"), "a newcomer must not take the slot handed to a waiter"
    await first
    slots.release("k")
    await second
    slots.release("k")
    assert order == ["first", "second"]
    assert len(slots) == 0, "a key nobody holds or waits for is dropped"


async def test_a_waiter_that_times_out_gets_false_and_leaves_no_trace():
    from hookgate.plugins.concurrency import KeyedSemaphore

    slots = KeyedSemaphore(2)
    assert slots.try_acquire("k") and slots.try_acquire("k")
    assert not await slots.acquire("k", timeout=0.01)
    slots.release("k")
    slots.release("k")
    assert len(slots) == 0
    assert slots.try_acquire("k") and slots.try_acquire("k") and not slots.try_acquire("k"), "still two slots, not more"


async def test_a_waiter_cancelled_after_being_handed_a_slot_passes_it_on():
    from hookgate.plugins.concurrency import KeyedSemaphore

    slots = KeyedSemaphore(1)
    assert slots.try_acquire("k")
    handed_over = asyncio.ensure_future(slots.acquire("k", timeout=5))
    await asyncio.sleep(0)
    next_in_line = asyncio.ensure_future(slots.acquire("k", timeout=5))
    await asyncio.sleep(0)
    slots.release("k")  # the slot is handed to the first waiter...
    handed_over.cancel()  # ...which is cancelled before it could run again
    with pytest.raises(asyncio.CancelledError):
        await handed_over
    assert await next_in_line, "the slot went on to the next waiter"
    slots.release("k")
    assert len(slots) == 0, "and no slot was lost or made up"


# ------------------------------------------------------------------------------- distributed ---


def distributed(emulator, redis_url: str, prefix: str, **overrides) -> str:
    settings = {"limit": 4, "distributed": True, "redis_url": redis_url, "key_prefix": prefix, "lease_seconds": 3, "max_wait_seconds": 10, **overrides}
    return upstream_config(emulator, ["concurrency"], concurrency=settings)


async def test_two_processes_sharing_redis_hold_one_global_limit(gateway_process, emulator, redis_url, redis_prefix):
    config = distributed(emulator, redis_url, redis_prefix)
    first, second = gateway_process(config), gateway_process(config)
    emulator.settings.latency = 0.2
    async with aiohttp.ClientSession() as session:

        async def ask(url: str) -> int:
            async with session.post(f"{url}/v1/chat/completions", json=CHAT) as response:
                await response.read()
                return response.status

        statuses = await asyncio.gather(*(ask(gw.url) for _ in range(10) for gw in (first, second)))
    assert statuses == [200] * 20
    assert emulator.stats.peak_in_flight == 4


async def test_a_crashed_instance_gives_its_slots_back_after_the_lease(gateway_process, emulator, redis_url, redis_prefix):
    crashing = gateway_process(distributed(emulator, redis_url, redis_prefix, limit=2, lease_seconds=1))
    survivor = gateway_process(distributed(emulator, redis_url, redis_prefix, limit=2, lease_seconds=1, max_wait_seconds=0.2))
    emulator.settings.fault = Fault(hang=True)
    async with aiohttp.ClientSession() as session:
        hung = [asyncio.ensure_future(session.post(f"{crashing.url}/v1/chat/completions", json=CHAT)) for _ in range(2)]
        await eventually(lambda: emulator.stats.in_flight == 2, timeout=5)
        crashing.process.send_signal(signal.SIGKILL)
        crashing.process.wait(timeout=5)
        emulator.settings.fault = None
        async with session.post(f"{survivor.url}/v1/chat/completions", json=CHAT) as response:
            assert response.status == 429, "the dead instance's leases still hold both slots"
        killed_at = time.monotonic()
        while True:
            async with session.post(f"{survivor.url}/v1/chat/completions", json=CHAT) as response:
                if response.status == 200:
                    break
            assert time.monotonic() - killed_at < 3, "slots did not come back after the 1 s lease"
            await asyncio.sleep(0.1)
        for task in hung:
            task.cancel()
        await asyncio.gather(*hung, return_exceptions=True)


async def test_redis_unreachable_falls_back_to_the_local_limit(gateway, emulator, redis_prefix):
    from servers import free_port

    dead = f"redis://127.0.0.1:{free_port()}/0"
    client = await gateway(distributed(emulator, dead, redis_prefix, limit=2))
    emulator.settings.latency = 0.1
    responses = await asyncio.gather(*(client.post("/v1/chat/completions", json=CHAT) for _ in range(6)))
    assert [r.status for r in responses] == [200] * 6
    assert emulator.stats.peak_in_flight == 2
    ready = await (await client.get("/readyz")).json()
    assert ready["checks"]["concurrency"]["status"] == "degraded"
