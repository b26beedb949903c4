"""hookgate.balancing: which deployment of a model takes each attempt, under every strategy, with
tiers, health, per-deployment limits, and state shared across instances through Redis."""
from __future__ import annotations

import asyncio
import heapq
import os
import random
import signal
from collections import Counter
from typing import Any, AsyncIterator, Callable

import pytest
import redis.asyncio as aioredis
from pydantic import ValidationError
from structlog.testing import capture_logs

from hookgate import ClientDisconnected, GatewayTimeout, RateLimited, ServiceUnavailable, UpstreamError
from hookgate.balancing import (
    Balancer,
    Deployment,
    LatencyTuning,
    Lease,
    LocalBalancingState,
    NoDeploymentAvailable,
    RouteBalancingConfig,
    deployments_from_config,
    outcome_of,
)
from hookgate.balancing_redis import RedisBalancingState

STRATEGIES = ["weighted", "least_busy", "lowest_latency", "usage"]


def deployment(name: str, **settings: Any) -> Deployment:
    return Deployment(route="gpt-4o", name=name, provider=settings.pop("provider", "openai"), upstream_model="gpt-4o", **settings)


class FakeClock:
    """Time that moves only when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def pick_and_release(balancer: Balancer, picks: int, outcome: Any = "success", **pick: Any) -> Counter[str]:
    """Pick ``picks`` times, releasing each lease at once; how many went to each deployment."""
    counts: Counter[str] = Counter()
    for _ in range(picks):
        lease = await balancer.pick(**pick)
        counts[lease.deployment.name] += 1
        await lease.release(outcome)
    return counts


# ------------------------------------------------------------------------------ strategies ---


async def test_weights_1_1_2_give_shares_within_3_points_over_4000_picks():
    balancer = Balancer("gpt-4o", [deployment("a"), deployment("b"), deployment("c", weight=2)], rng=random.Random(20240601))
    counts = await pick_and_release(balancer, 4000)
    shares = {name: counts[name] / 4000 for name in "abc"}
    assert shares["a"] == pytest.approx(0.25, abs=0.03)
    assert shares["b"] == pytest.approx(0.25, abs=0.03)
    assert shares["c"] == pytest.approx(0.50, abs=0.03)


async def run_workload(strategy: str, slow: str, requests: int = 240, workers: int = 8) -> Counter[str]:
    """``workers`` concurrent tasks send ``requests`` in all; each holds its lease for the time its
    deployment takes to answer (``slow`` takes 25 times longer)."""
    deployments = [deployment("a"), deployment("b"), deployment("c")]
    balancer = Balancer("gpt-4o", deployments, strategy=strategy, rng=random.Random(5))  # type: ignore[arg-type]
    counts: Counter[str] = Counter()
    remaining = [requests]

    async def worker() -> None:
        while remaining[0] > 0:
            remaining[0] -= 1
            lease = await balancer.pick()
            counts[lease.deployment.name] += 1
            await asyncio.sleep(0.05 if lease.deployment.name == slow else 0.002)  # the upstream's service time
            await lease.release("success")

    await asyncio.gather(*(worker() for _ in range(workers)))
    return counts


async def test_least_busy_sends_fewer_requests_to_a_slow_deployment():
    weighted = await run_workload("weighted", slow="c")
    least_busy = await run_workload("least_busy", slow="c")
    assert sum(least_busy.values()) == 240
    assert weighted["c"] > 240 * 0.25, f"load-blind choice gives the slow one its third: {weighted}"
    assert least_busy["c"] < 240 * 0.12, f"the slow deployment holds its slots longer, so it gets fewer: {least_busy}"
    assert least_busy["a"] > 240 * 0.4 and least_busy["b"] > 240 * 0.4, least_busy


async def simulate_latency(
    balancer: Balancer, clock: FakeClock, latency: Callable[[str, float], float], until: float, rate: float = 20.0
) -> list[tuple[float, str]]:
    """Requests arrive ``rate`` per second of simulated time; each holds its lease for the latency
    of its deployment at that time, and completions are released in time order."""
    rng = random.Random(11)
    events: list[tuple[float, int, Lease | None]] = []
    t, seq = clock.now, 0
    while t < until:
        t += rng.expovariate(rate)
        heapq.heappush(events, (t, seq, None))
        seq += 1
    picks = []
    while events:
        t, _, lease = heapq.heappop(events)
        clock.now = t
        if lease is not None:
            await lease.release("success")
            continue
        lease = await balancer.pick()
        picks.append((t, lease.deployment.name))
        heapq.heappush(events, (t + latency(lease.deployment.name, t) * rng.uniform(0.8, 1.2), seq, lease))
        seq += 1
    return picks


def share(picks: list[tuple[float, str]], name: str, start: float, end: float) -> float:
    names = [n for t, n in picks if start <= t < end]
    return names.count(name) / len(names)


async def test_lowest_latency_moves_traffic_away_from_a_slow_deployment_and_back_after_it_recovers():
    clock = FakeClock()
    start = clock.now
    balancer = Balancer(
        "gpt-4o", [deployment("a"), deployment("b"), deployment("c")], strategy="lowest_latency", rng=random.Random(3), clock=clock,
        state=LocalBalancingState(clock=clock),
    )
    slow_from, slow_until = start + 60, start + 120

    def latency(name: str, t: float) -> float:
        return 3.0 if name == "c" and slow_from <= t < slow_until else 0.3

    picks = await simulate_latency(balancer, clock, latency, until=start + 180)
    assert share(picks, "c", start + 10, slow_from) > 0.2, "equal deployments share the traffic"
    assert share(picks, "c", slow_from + 10, slow_until) < 0.05, "the slow one is left alone (but for exploration)"
    assert share(picks, "c", slow_until + 30, start + 180) > 0.2, "and gets its share back once it is fast again"


async def test_lowest_latency_without_exploration_never_sees_the_recovery():
    """Why exploration exists: the same run with exploration = 0 leaves the recovered deployment idle."""
    clock = FakeClock()
    start = clock.now
    balancer = Balancer(
        "gpt-4o", [deployment("a"), deployment("b"), deployment("c")], strategy="lowest_latency", rng=random.Random(3), clock=clock,
        state=LocalBalancingState(clock=clock), latency=LatencyTuning(exploration=0),
    )
    slow = lambda name, t: 3.0 if name == "c" and start + 60 <= t < start + 120 else 0.3  # noqa: E731
    picks = await simulate_latency(balancer, clock, slow, until=start + 180)
    assert share(picks, "c", start + 150, start + 180) == 0


async def test_lowest_latency_ranks_streams_by_time_to_first_token():
    clock = FakeClock()
    balancer = Balancer("gpt-4o", [deployment("a"), deployment("b")], strategy="lowest_latency", clock=clock, rng=random.Random(1),
                        state=LocalBalancingState(clock=clock), latency=LatencyTuning(exploration=0))
    for name, ttft, total in (("a", 0.1, 5.0), ("b", 1.0, 2.0)):
        lease = await balancer.pick(exclude={"b" if name == "a" else "a"})
        await lease.release("success", ttft=ttft, total=total)
    streams = await pick_and_release(balancer, 20, "abandoned", stream=True)  # "abandoned": no latency sample
    assert streams == {"a": 20}, "a starts streaming first"
    completions = await pick_and_release(balancer, 20, "abandoned")
    assert completions == {"b": 20}, "b finishes whole answers sooner"


async def test_a_deployment_failing_fast_does_not_look_fast():
    clock = FakeClock()
    balancer = Balancer("gpt-4o", [deployment("a"), deployment("b")], strategy="lowest_latency", clock=clock, rng=random.Random(2),
                        state=LocalBalancingState(clock=clock), latency=LatencyTuning(exploration=0))
    for name in "ab":
        lease = await balancer.pick(exclude={"b" if name == "a" else "a"})
        await lease.release("success", total=1.0)
    for _ in range(3):  # b answers 500 in 10 ms
        lease = await balancer.pick(exclude={"a"})
        await lease.release("failure", total=0.01)
    assert await pick_and_release(balancer, 20, "abandoned") == {"a": 20}


async def test_usage_prefers_the_deployment_furthest_from_its_limits():
    balancer = Balancer(
        "gpt-4o", [deployment("small", requests_per_minute=100), deployment("large", requests_per_minute=400)],
        strategy="usage", rng=random.Random(4),
    )
    counts = await pick_and_release(balancer, 250)
    assert counts["small"] == pytest.approx(50, abs=2), counts
    assert counts["large"] == pytest.approx(200, abs=2), counts


# ------------------------------------------------------------------------- tiers and health ---


async def test_tier_2_is_used_only_while_tier_1_refuses():
    balancer = Balancer(
        "gpt-4o", [deployment("a", max_in_flight=1), deployment("b", max_in_flight=1), deployment("overflow", provider="groq", tier=2)],
        rng=random.Random(6),
    )
    assert set(await pick_and_release(balancer, 200)) == {"a", "b"}, "tier 1 takes everything it can"
    first, second = await balancer.pick(), await balancer.pick()
    assert {first.deployment.name, second.deployment.name} == {"a", "b"}
    overflow = await balancer.pick()
    assert overflow.deployment.name == "overflow", "tier 1 saturated"
    await first.release("success")
    again = await balancer.pick()
    assert again.deployment.name == first.deployment.name, "back to tier 1 as soon as it has room"
    for lease in (second, overflow, again):
        await lease.release("success")
    assert (await balancer.pick(healthy=lambda d: d.tier != 1)).deployment.name == "overflow", "tier 1 open or missing its key"
    assert (await balancer.pick(exclude={"a", "b"})).deployment.name == "overflow", "tier 1 already tried by this request"


@pytest.mark.parametrize("strategy", STRATEGIES)
async def test_an_unhealthy_deployment_gets_nothing(strategy):
    balancer = Balancer("gpt-4o", [deployment("a"), deployment("b", weight=10), deployment("c")], strategy=strategy, rng=random.Random(7))
    counts = await pick_and_release(balancer, 500, healthy=lambda d: d.name != "b")
    assert counts["b"] == 0
    assert counts["a"] + counts["c"] == 500


async def test_a_retry_goes_to_another_deployment_until_every_one_was_tried():
    balancer = Balancer("gpt-4o", [deployment("a"), deployment("b"), deployment("c")], rng=random.Random(8))
    tried: list[str] = []
    for _ in range(3):
        lease = await balancer.pick(exclude=tried)
        tried.append(lease.deployment.name)
        await lease.release("failure")
    assert sorted(tried) == ["a", "b", "c"]
    with pytest.raises(NoDeploymentAvailable) as refused:
        await balancer.pick(exclude=tried)
    assert refused.value.status == 503 and refused.value.refusals == {}


async def test_no_healthy_deployment_is_a_503_naming_each_refusal():
    balancer = Balancer("gpt-4o", [deployment("a"), deployment("b", requests_per_minute=1)])
    await (await balancer.pick(exclude={"a"})).release("success")
    with pytest.raises(NoDeploymentAvailable) as refused:
        await balancer.pick(healthy=lambda d: d.name != "a")
    error = refused.value
    assert error.status == 503 and error.code == "no_deployment_available"
    assert error.refusals == {"a": "unhealthy", "b": "requests_limit"}
    assert "a (unhealthy)" in error.message and "b (requests limit)" in error.message


# ------------------------------------------------------------------ limits of a deployment ---


async def test_requests_per_minute_is_enforced_and_refused_with_429_and_retry_after():
    clock = FakeClock()
    balancer = Balancer("gpt-4o", [deployment("a", requests_per_minute=30)], clock=clock, state=LocalBalancingState(clock=clock))
    for _ in range(30):
        await (await balancer.pick()).release("success")
        clock.now += 1
    with pytest.raises(NoDeploymentAvailable) as refused:
        await balancer.pick()
    assert refused.value.status == 429 and refused.value.type == "rate_limit_error"
    assert 1 <= int(refused.value.headers["Retry-After"]) <= 35
    clock.now += int(refused.value.headers["Retry-After"])
    await (await balancer.pick()).release("success")


async def test_tokens_are_reserved_at_pick_and_corrected_on_release():
    clock = FakeClock()
    balancer = Balancer("gpt-4o", [deployment("a", tokens_per_minute=1000)], clock=clock, state=LocalBalancingState(clock=clock))
    lease = await balancer.pick(tokens=900)
    with pytest.raises(NoDeploymentAvailable):
        await balancer.pick(tokens=200)
    await lease.release("success", tokens=100)  # the answer was short
    await (await balancer.pick(tokens=800)).release("success")
    with pytest.raises(NoDeploymentAvailable) as refused:
        await balancer.pick(tokens=2000)
    assert refused.value.refusals == {"a": "tokens_limit"}


async def test_an_upstream_429_cools_the_deployment_down_for_its_retry_after():
    clock = FakeClock()
    balancer = Balancer("gpt-4o", [deployment("a"), deployment("b")], clock=clock, state=LocalBalancingState(clock=clock), rng=random.Random(9))
    error = RateLimited("slow down", headers={"retry-after": "7"})
    error.upstream_status = 429
    outcome, cooldown = outcome_of(error)
    lease = await balancer.pick(exclude={"b"})
    await lease.release(outcome, cooldown=cooldown)
    assert await pick_and_release(balancer, 50) == {"b": 50}
    clock.now += 7.1
    assert (await pick_and_release(balancer, 50))["a"] > 0


async def test_release_is_idempotent_and_frees_the_slot_once():
    balancer = Balancer("gpt-4o", [deployment("a", max_in_flight=2)])
    first, _still_held = await balancer.pick(), await balancer.pick()
    await first.release("abandoned")
    await first.release("abandoned")
    await balancer.pick()
    with pytest.raises(NoDeploymentAvailable):
        await balancer.pick()  # a second release would have freed the slot still held


def test_outcomes_of_errors():
    limited = RateLimited("x", headers={"Retry-After": "3"})
    limited.upstream_status = 429
    quota = RateLimited("x", code="insufficient_quota")
    quota.upstream_status = 429
    server = UpstreamError("x")
    server.upstream_status = 500
    request = UpstreamError("x", status=400)
    request.upstream_status = 400
    assert outcome_of(None) == ("success", None)
    assert outcome_of(limited) == ("rate_limited", 3.0)
    assert outcome_of(quota) == ("rate_limited", 300.0)
    assert outcome_of(server) == ("failure", None)
    assert outcome_of(GatewayTimeout("x")) == ("failure", None)
    assert outcome_of(request) == ("abandoned", None)
    assert outcome_of(ServiceUnavailable("x", code="circuit_open")) == ("abandoned", None)
    assert outcome_of(ClientDisconnected("x")) == ("abandoned", None)
    assert outcome_of(asyncio.CancelledError()) == ("abandoned", None)


async def test_local_state_stays_bounded_when_deployments_keep_changing():
    state = LocalBalancingState(max_deployments=100)
    for i in range(5000):  # e.g. routes replaced by live reloads, one state kept across them
        balancer = Balancer(f"route-{i}", [Deployment(route=f"route-{i}", name="a", provider="p", upstream_model="m")], state=state)
        await (await balancer.pick()).release("success", total=0.1)
    assert len(state) <= 100


# -------------------------------------------------------------------------------- config ---


def test_config_builds_deployments_with_defaults():
    config = RouteBalancingConfig.model_validate({
        "strategy": "least_busy",
        "deployments": [
            {"name": "org-a", "provider": "openai", "weight": 2, "requests_per_minute": 5000},
            {"name": "org-b", "provider": "openai", "api_key_env": "OPENAI_ORG_B_KEY"},
            {"provider": "groq", "model": "llama-3.3-70b-versatile", "tier": 2},
        ],
    })
    org_a, org_b, groq = deployments_from_config("gpt-4o", config, default_model="gpt-4o-2024-08-06")
    assert (org_a.name, org_a.upstream_model, org_a.weight, org_a.requests_per_minute) == ("org-a", "gpt-4o-2024-08-06", 2, 5000)
    assert (groq.name, groq.upstream_model, groq.tier) == ("groq", "llama-3.3-70b-versatile", 2)
    assert org_a.breaker_key == "openai/gpt-4o-2024-08-06", "the provider's own endpoint: the plain route's breaker"
    assert org_b.breaker_key.startswith("openai/gpt-4o-2024-08-06@") and org_b.breaker_key != org_a.breaker_key
    assert "OPENAI_ORG_B_KEY" not in org_b.breaker_key
    balancer = Balancer.from_config("gpt-4o", config, default_model="gpt-4o")
    assert balancer.strategy.name == "least_busy"


@pytest.mark.parametrize(
    "entry, complaint",
    [
        ({"strategy": "fastest", "deployments": []}, "strategy"),
        ({"deployments": [{"provider": "openai", "wieght": 2}]}, "wieght"),
        ({"deployments": [{"provider": "openai", "weight": 0}]}, "weight"),
        ({"deployments": [{"provider": "openai"}, {"provider": "openai"}]}, "two deployments are named 'openai'"),
        ({"deployments": [{"provider": "openai", "name": "has space"}]}, "name"),
        ({"deployments": [{"provider": "openai", "api_key_env": "sk-live-123"}]}, "api_key_env"),
        ({"deployments": [{"provider": "openai", "tier": 0}]}, "tier"),
        ({"deployments": [{"provider": "p", "name": f"d{i}"} for i in range(65)]}, "deployments"),
    ],
)
def test_bad_config_is_refused_with_the_key_at_fault(entry, complaint):
    with pytest.raises(ValidationError) as refused:
        RouteBalancingConfig.model_validate(entry)
    assert complaint in str(refused.value)


async def test_status_lists_each_deployment_with_live_figures_and_no_secrets():
    balancer = Balancer("gpt-4o", [deployment("a", max_in_flight=1), deployment("b", base_url="https://user:pw@example.test/v1")])
    held = await balancer.pick(exclude={"b"})
    rows = [status.as_dict() for status in await balancer.status()]
    assert rows[0]["in_flight"] == 1 and rows[0]["refusal"] == "in_flight_limit" and rows[0]["state"] == "local"
    assert rows[1]["own_endpoint"] is True and "pw" not in repr(rows)
    await held.release("success")


# --------------------------------------------------------------------------- shared state ---


@pytest.fixture
async def redis_clients(redis_url: str, redis_prefix: str) -> AsyncIterator[Callable[[], aioredis.Redis]]:
    """Clients of the test's Redis, one per simulated gateway instance; the prefix's keys are
    deleted afterwards."""
    clients: list[aioredis.Redis] = []

    def client() -> aioredis.Redis:
        clients.append(aioredis.Redis.from_url(redis_url))
        return clients[-1]

    yield client
    if clients:
        async for key in clients[0].scan_iter(match=f"{redis_prefix}:*"):
            await clients[0].delete(key)
    for c in clients:
        await c.aclose()


async def test_rpm_30_shared_by_two_instances_never_exceeds_30_per_window_while_the_others_take_the_rest(redis_clients, redis_prefix):
    window_ms = 500  # a short window stands in for the minute
    deployments = [deployment("capped", requests_per_minute=30), deployment("b"), deployment("c")]
    states = [RedisBalancingState(redis_clients(), key_prefix=redis_prefix, window_seconds=window_ms / 1000) for _ in range(2)]
    instances = [Balancer("gpt-4o", deployments, strategy="usage", state=state, rng=random.Random(i)) for i, state in enumerate(states)]
    capped_at: list[int] = []
    counts: Counter[str] = Counter()

    async def client(balancer: Balancer) -> None:
        for _ in range(150):
            lease = await balancer.pick()
            assert lease.backend == "redis"
            counts[lease.deployment.name] += 1
            if lease.deployment.name == "capped":
                capped_at.append(lease.acquired_at_ms)
            await lease.release("success")

    await asyncio.gather(*(client(balancer) for balancer in instances for _ in range(4)))
    for state in states:
        await state.aclose()
    assert sum(counts.values()) == 1200, "every request found a deployment"
    capped_at.sort()
    busiest = max(sum(1 for t in capped_at if start <= t <= start + window_ms) for start in capped_at)
    assert busiest <= 30, f"{busiest} requests within one window on Redis's clock"
    windows = (capped_at[-1] - capped_at[0]) / window_ms + 1
    assert counts["capped"] >= 30 and counts["capped"] <= 30 * (windows + 1), counts
    assert counts["b"] > 300 and counts["c"] > 300, f"the others take the rest: {counts}"


async def test_least_busy_sees_the_other_instances_in_flight_requests(redis_clients, redis_prefix):
    deployments = [deployment("a"), deployment("b")]
    one, other = (RedisBalancingState(redis_clients(), key_prefix=redis_prefix, snapshot_max_age_seconds=0) for _ in range(2))
    busy = Balancer("gpt-4o", deployments, strategy="least_busy", state=one, rng=random.Random(1))
    idle = Balancer("gpt-4o", deployments, strategy="least_busy", state=other, rng=random.Random(2))
    held = [await busy.pick(exclude={"b"}) for _ in range(3)]
    picks = await pick_and_release(idle, 20)
    assert picks == {"b": 20}, "a is busy on the other instance"
    for lease in held:
        await lease.release("success")
    await one.aclose()
    await other.aclose()


async def test_a_dead_instance_gives_its_slots_back_when_its_leases_expire_and_a_live_one_keeps_them(redis_clients, redis_prefix):
    deployments = [deployment("a", max_in_flight=2)]
    dying = RedisBalancingState(redis_clients(), key_prefix=redis_prefix, lease_seconds=0.6)
    living = RedisBalancingState(redis_clients(), key_prefix=redis_prefix, lease_seconds=0.6)
    survivor = RedisBalancingState(redis_clients(), key_prefix=redis_prefix, lease_seconds=0.6, snapshot_max_age_seconds=0)
    kept = await Balancer("gpt-4o", deployments, state=living).pick()
    await Balancer("gpt-4o", deployments, state=dying).pick()
    await dying.aclose()  # the instance dies: it never releases, nor refreshes its lease
    balancer = Balancer("gpt-4o", deployments, state=survivor)
    with pytest.raises(NoDeploymentAvailable):
        await balancer.pick()
    loop = asyncio.get_running_loop()
    started = loop.time()
    while True:  # the expiry is what is under test, so poll for it, bounded
        try:
            lease = await balancer.pick()
            break
        except NoDeploymentAvailable:
            assert loop.time() - started < 5, "the dead instance's lease never expired"
            await asyncio.sleep(0.05)
    assert loop.time() - started >= 0.4, "a live lease is not taken early"
    waited = loop.time()
    while loop.time() - waited < 1.5:  # well past the lease: the living instance refreshes its own
        with pytest.raises(NoDeploymentAvailable):
            await balancer.pick()
        await asyncio.sleep(0.1)
    await kept.release("success")
    await lease.release("success")
    for state in (living, survivor):
        await state.aclose()


async def test_an_upstream_429_on_one_instance_cools_the_deployment_down_on_every_instance(redis_clients, redis_prefix):
    deployments = [deployment("a"), deployment("b")]
    one, other = (RedisBalancingState(redis_clients(), key_prefix=redis_prefix, snapshot_max_age_seconds=0) for _ in range(2))
    limited = await Balancer("gpt-4o", deployments, state=one).pick(exclude={"b"})
    await limited.release("rate_limited", cooldown=30)
    assert await pick_and_release(Balancer("gpt-4o", deployments, state=other, rng=random.Random(3)), 30) == {"b": 30}
    await one.aclose()
    await other.aclose()


async def test_latency_can_be_shared_across_instances(redis_clients, redis_prefix):
    deployments = [deployment("a"), deployment("b")]
    one, other = (
        RedisBalancingState(redis_clients(), key_prefix=redis_prefix, share_latency=True, snapshot_max_age_seconds=0) for _ in range(2)
    )
    learner = Balancer("gpt-4o", deployments, strategy="lowest_latency", state=one, latency=LatencyTuning(exploration=0))
    for name, total in (("a", 2.0), ("b", 0.2)):
        await (await learner.pick(exclude={"b" if name == "a" else "a"})).release("success", total=total)
    newcomer = Balancer(
        "gpt-4o", deployments, strategy="lowest_latency", state=other, latency=LatencyTuning(exploration=0), rng=random.Random(1)
    )
    assert await pick_and_release(newcomer, 10) == {"b": 10}, "it knows b is faster without measuring it itself"
    rows = {row.deployment.name: row.load for row in await newcomer.status()}
    assert rows["a"].total == pytest.approx(2.0) and rows["b"].total is not None and rows["b"].total < 0.3
    await one.aclose()
    await other.aclose()


async def test_redis_that_hangs_degrades_to_per_instance_state_within_the_timeout_and_logs_once(redis_server, redis_prefix):
    client = aioredis.Redis.from_url(redis_server.url)
    state = RedisBalancingState(client, key_prefix=redis_prefix, timeout_seconds=0.2, retry_seconds=0.3, log_interval_seconds=60)
    balancer = Balancer("gpt-4o", [deployment("a", requests_per_minute=1000), deployment("b")], state=state, rng=random.Random(1))
    assert (await balancer.pick()).backend == "redis"
    os.kill(redis_server.process.pid, signal.SIGSTOP)  # Redis stops answering; connections stay open
    loop = asyncio.get_running_loop()
    try:
        with capture_logs() as logs:
            started = loop.time()
            first = await balancer.pick()
            degraded_after = loop.time() - started
            backends = [first.backend]
            await first.release("success")
            for _ in range(50):
                lease = await balancer.pick()
                backends.append(lease.backend)
                await lease.release("success")
            while loop.time() - started < 0.4:  # past retry_seconds: Redis is tried again, and fails again
                await asyncio.sleep(0.05)
            lease = await balancer.pick()
            backends.append(lease.backend)
            await lease.release("success")
    finally:
        os.kill(redis_server.process.pid, signal.SIGCONT)
    assert degraded_after < 0.5, f"the first pick waited {degraded_after:.2f} s"
    assert set(backends) == {"local"}
    warnings = [entry for entry in logs if entry["event"] == "balancing_redis_unavailable"]
    assert len(warnings) == 1 and warnings[0]["error"] == "TimeoutError", logs
    await state.aclose()
    await client.aclose()
