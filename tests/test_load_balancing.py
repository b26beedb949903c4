"""Load balancing through the gateway: one public model served by several deployments.

The strategies themselves are tested on the balancer alone (tests/test_balancing.py); here every
request goes through the whole chain over HTTP to local OpenAI-compatible emulators, and what is
counted is what a client and an upstream see: the ``x-hookgate-deployment`` header and the calls
each upstream received.
"""
from __future__ import annotations

import asyncio
import collections
import json
import time
from typing import Any

import pytest

from conftest import pipeline_config, toml_value
from hookgate.testing.openai_emulator import EmulatorSettings, Fault, OpenAIEmulator

POOL = "pool"


def balanced(
    servers: dict[str, OpenAIEmulator],
    deployments: list[dict[str, Any]],
    *,
    strategy: str = "weighted",
    pipeline: tuple[str, ...] = (),
    route: dict[str, Any] | None = None,
    gateway: dict[str, Any] | None = None,
    **sections: dict[str, Any],
) -> str:
    """plugins.toml: one openai_compatible server per emulator, and the route ``pool`` over them."""
    text = pipeline_config(
        [*pipeline, "openai_compatible"],
        openai_compatible={"servers": {name: {"base_url": emu.base_url, "models": [f"{name}-own"]} for name, emu in servers.items()}},
        **sections,
    )
    if gateway:
        text = text.replace("[gateway]\n", "[gateway]\n" + "".join(f"{key} = {toml_value(value)}\n" for key, value in gateway.items()), 1)
    lines = [f'[models."{POOL}"]', f"strategy = {json.dumps(strategy)}"]
    lines += [f"{key} = {toml_value(value)}" for key, value in (route or {}).items()]
    lines.append("deployments = [" + ", ".join(toml_value(d) for d in deployments) + "]")
    return text + "\n".join(lines) + "\n"


def ask(n: int, **extra: Any) -> dict[str, Any]:
    return {"model": POOL, "messages": [{"role": "user", "content": f"question {n}"}], **extra}


async def send(client, body: dict[str, Any], headers: dict[str, str] | None = None) -> tuple[int, str | None]:
    response = await client.post("/v1/chat/completions", json=body, headers=headers or {})
    await response.read()
    return response.status, response.headers.get("x-hookgate-deployment")


async def send_many(client, count: int, concurrency: int = 50, start: int = 0) -> collections.Counter[str | None]:
    """``count`` distinct requests from ``concurrency`` clients, each sending its next request as
    soon as its last one was answered; the deployments that answered."""
    served: collections.Counter[str | None] = collections.Counter()
    numbers = iter(range(start, start + count))

    async def one_client() -> None:
        for n in numbers:
            status, deployment = await send(client, ask(n))
            assert status == 200, status
            served[deployment] += 1

    await asyncio.gather(*(one_client() for _ in range(concurrency)))
    return served


@pytest.fixture
async def emulators():
    """Three emulators, started and stopped with the test."""
    async with OpenAIEmulator().serve() as a, OpenAIEmulator().serve() as b, OpenAIEmulator().serve() as c:
        for emu in (a, b, c):
            emu.settings = EmulatorSettings(record_requests=False)
        yield {"a": a, "b": b, "c": c}


async def test_weights_1_1_2_share_4000_requests_within_3_points(gateway, emulators):
    client = await gateway(balanced(emulators, [
        {"provider": "a", "weight": 1}, {"provider": "b", "weight": 1}, {"provider": "c", "weight": 2},
    ]))
    served = await send_many(client, 4000, concurrency=100)
    shares = {name: served[name] / 4000 for name in "abc"}
    assert abs(shares["a"] - 0.25) <= 0.03 and abs(shares["b"] - 0.25) <= 0.03 and abs(shares["c"] - 0.5) <= 0.03, shares
    assert {name: emu.stats.calls for name, emu in emulators.items()} == {name: served[name] for name in "abc"}, "the header names the upstream that answered"


async def test_least_busy_sends_fewer_requests_to_a_slow_deployment(gateway, emulators):
    emulators["a"].settings = EmulatorSettings(latency=0.25, record_requests=False)
    client = await gateway(balanced(emulators, [{"provider": "a"}, {"provider": "b"}], strategy="least_busy"))
    served = await send_many(client, 200, concurrency=20)
    assert served["a"] + served["b"] == 200
    assert served["a"] * 3 < served["b"], served  # weighted random would give each about 100


async def test_lowest_latency_moves_traffic_away_from_a_slow_deployment_and_back_after_it_recovers(gateway, emulators):
    emulators["a"].settings = EmulatorSettings(latency=0.15, record_requests=False)
    client = await gateway(balanced(
        emulators, [{"provider": "a"}, {"provider": "b"}], strategy="lowest_latency",
        route={"latency": {"exploration": 0.2, "half_life_seconds": 0.5}},
    ))
    slow_phase = await send_many(client, 60, concurrency=1)
    late = await send_many(client, 40, concurrency=1, start=100)
    assert late["b"] >= 30, (slow_phase, late)  # a is explored, seldom chosen

    emulators["a"].settings = EmulatorSettings(record_requests=False)
    emulators["b"].settings = EmulatorSettings(latency=0.15, record_requests=False)
    await send_many(client, 60, concurrency=1, start=200)
    recovered = await send_many(client, 40, concurrency=1, start=300)
    assert recovered["a"] >= 30, recovered


async def test_a_failing_deployment_is_retried_on_another_and_its_open_circuit_loses_no_request(gateway, emulators):
    emulators["a"].settings = EmulatorSettings(fault=Fault(status=500), record_requests=False)
    client = await gateway(balanced(
        emulators, [{"provider": "a"}, {"provider": "b"}],
        pipeline=("retry", "circuit_breaker"),
        retry={"max_attempts": 2, "backoff_base_seconds": 0.001, "budget_ratio": 1.0},
        circuit_breaker={"failure_threshold": 3, "open_seconds": 60},
    ))
    served = await send_many(client, 100, concurrency=10)
    assert served == {"b": 100}, "every request answered, by the healthy deployment"
    assert emulators["a"].stats.calls <= 3 + 10, "once its circuit opened, the failing deployment got no more traffic"
    assert emulators["b"].stats.calls == 100


async def test_without_a_healthy_deployment_the_request_fails_with_a_503_naming_each(gateway, emulators):
    for emu in emulators.values():
        emu.settings = EmulatorSettings(fault=Fault(status=500), record_requests=False)
    client = await gateway(balanced(
        emulators, [{"provider": "a"}, {"provider": "b"}],
        pipeline=("circuit_breaker",), circuit_breaker={"failure_threshold": 1, "open_seconds": 60},
    ))
    assert [(await send(client, ask(n)))[0] for n in range(2)] == [502, 502]
    response = await client.post("/v1/chat/completions", json=ask(9))
    body = await response.json()
    assert response.status == 503 and body["error"]["code"] == "no_deployment_available", body
    assert "a (unhealthy)" in body["error"]["message"] and "b (unhealthy)" in body["error"]["message"]


async def test_priority_tier_2_is_used_only_while_tier_1_refuses(gateway, emulators):
    emulators["a"].settings = EmulatorSettings(latency=0.3, record_requests=False)
    client = await gateway(balanced(emulators, [
        {"provider": "a", "tier": 1, "max_in_flight": 2}, {"provider": "b", "tier": 2},
    ]))
    alone = await send_many(client, 5, concurrency=1)
    assert alone == {"a": 5}, "tier 1 takes everything while it has room"
    burst = await send_many(client, 10, concurrency=10, start=10)
    assert burst == {"a": 2, "b": 8}, "tier 2 takes what tier 1's in-flight limit refuses"
    again = await send_many(client, 3, concurrency=1, start=30)
    assert again == {"a": 3}, "and nothing once tier 1 has room again"


async def test_an_upstream_429_cools_a_deployment_down_and_tier_2_takes_over(gateway, emulators):
    emulators["a"].script(Fault(status=429, retry_after=30))
    client = await gateway(balanced(
        emulators, [{"provider": "a", "tier": 1}, {"provider": "b", "tier": 2}],
        pipeline=("retry",), retry={"max_attempts": 2, "backoff_base_seconds": 0.001, "budget_ratio": 1.0},
    ))
    status, deployment = await send(client, ask(1))
    assert (status, deployment) == (200, "b"), "the 429 was retried on tier 2"
    assert await send_many(client, 5, concurrency=1, start=10) == {"b": 5}, "tier 1 cools down for its Retry-After"
    assert emulators["a"].stats.calls == 1


async def test_a_stream_is_balanced_and_released_when_it_ends(gateway, emulators):
    client = await gateway(balanced(emulators, [{"provider": "a", "max_in_flight": 1}, {"provider": "b", "tier": 2}]))
    for n in range(3):
        response = await client.post("/v1/chat/completions", json=ask(n, stream=True))
        text = await response.text()
        assert response.status == 200 and "data: [DONE]" in text
        assert response.headers["x-hookgate-deployment"] == "a", "the slot of the stream before was released at its end"


async def test_deployments_with_their_own_upstream_model_and_a_route_listed_once(gateway, emulators):
    emulators["a"].settings = EmulatorSettings(record_requests=True)
    client = await gateway(balanced(emulators, [{"provider": "a", "model": "upstream-a"}], route={"aliases": ["pool-alias"]}))
    status, deployment = await send(client, {**ask(1), "model": "pool-alias"})
    assert (status, deployment) == (200, "a")
    assert emulators["a"].stats.requests[-1].body["model"] == "upstream-a"
    models = [m["id"] for m in (await (await client.get("/v1/models")).json())["data"]]
    assert "pool" in models and "pool-alias" in models


@pytest.mark.parametrize(
    ("route", "complaint"),
    [
        ({"provider": "a"}, "either `provider` or `deployments`"),
        ({}, "deployments[0].provider: no enabled provider is named 'nowhere'"),
    ],
)
def test_a_bad_balanced_route_is_refused_at_start_up_naming_the_key(make_config, route, complaint):
    from hookgate.config import ConfigError
    from hookgate.gateway import Gateway

    class Unstarted:
        base_url = "http://127.0.0.1:9/v1"

    emulators = {"a": Unstarted()}
    text = balanced(emulators, [{"provider": "nowhere" if not route else "a"}], route=route)
    with pytest.raises(ConfigError) as raised:
        Gateway(make_config(text))
    assert complaint in str(raised.value) and "models.pool" in str(raised.value)


async def test_a_deployment_with_its_own_base_url_and_key_variable(gateway, emulators, monkeypatch):
    monkeypatch.setenv("HG_TEST_ORG_B_KEY", "sk-org-b-secret")
    emulators["b"].settings = EmulatorSettings(record_requests=True)
    text = pipeline_config(
        ["openai"], openai={"base_url": emulators["a"].base_url, "api_key": "sk-org-a-secret", "models": ["gpt-4o-mini"]},
    ) + f'[models."{POOL}"]\ndeployments = [' + ", ".join(toml_value(d) for d in [
        {"name": "org-a", "provider": "openai", "model": "gpt-4o-mini", "weight": 1},
        {"name": "org-b", "provider": "openai", "model": "gpt-4o-mini", "weight": 1,
         "base_url": emulators["b"].base_url, "api_key_env": "HG_TEST_ORG_B_KEY"},
    ]) + "]\n"
    client = await gateway(text)
    served = await send_many(client, 40, concurrency=4)
    assert served["org-a"] > 0 and served["org-b"] > 0 and served["org-a"] + served["org-b"] == 40
    assert emulators["b"].stats.calls == served["org-b"]
    assert {r.headers["authorization"] for r in emulators["b"].stats.requests} == {"Bearer sk-org-b-secret"}
    report = await (await client.get("/-/plugins")).text()
    assert "sk-org-b-secret" not in report and "sk-org-a-secret" not in report and emulators["b"].base_url not in report


async def test_a_deployment_without_its_key_is_skipped(gateway, emulators, monkeypatch):
    monkeypatch.delenv("HG_TEST_MISSING_KEY", raising=False)
    text = pipeline_config(
        ["openai"], openai={"base_url": emulators["a"].base_url, "api_key": "sk-a", "models": ["gpt-4o-mini"]},
    ) + f'[models."{POOL}"]\ndeployments = [' + ", ".join(toml_value(d) for d in [
        {"name": "keyed", "provider": "openai", "model": "gpt-4o-mini"},
        {"name": "keyless", "provider": "openai", "model": "gpt-4o-mini", "weight": 100, "api_key_env": "HG_TEST_MISSING_KEY"},
    ]) + "]\n"
    client = await gateway(text)
    assert await send_many(client, 10, concurrency=2) == {"keyed": 10}


async def test_deployments_have_their_own_metrics_and_live_state_in_the_pipeline_report(gateway, emulators):
    emulators["b"].settings = EmulatorSettings(fault=Fault(status=503), record_requests=False)
    client = await gateway(balanced(
        emulators, [{"provider": "a", "requests_per_minute": 1000}, {"provider": "b"}], strategy="least_busy",
        pipeline=("metrics", "retry"), retry={"max_attempts": 2, "backoff_base_seconds": 0.001, "budget_ratio": 1.0},
    ))
    served = await send_many(client, 20, concurrency=1)
    assert served == {"a": 20}
    failed_on_b = emulators["b"].stats.calls
    assert failed_on_b >= 1, "least_busy tries b (both idle) and the retry moves to a"
    text = await (await client.get("/metrics")).text()
    assert f'hookgate_deployment_attempts_total{{deployment="a",gen_ai_request_model="pool",outcome="ok"}} 20.0' in text
    assert f'hookgate_deployment_attempts_total{{deployment="b",gen_ai_request_model="pool",outcome="http_503"}} {failed_on_b}.0' in text
    assert 'hookgate_deployment_in_flight{deployment="a",gen_ai_request_model="pool"} 0.0' in text
    assert 'hookgate_deployment_attempt_duration_seconds_count{deployment="a",gen_ai_request_model="pool"} 20.0' in text

    report = await (await client.get("/-/plugins")).json()
    (route,) = report["routes"]
    assert route["model"] == "pool" and route["strategy"] == "least_busy" and route["state"] == "local"
    live = {d["name"]: d for d in route["live"]}
    assert live["a"]["requests_in_window"] == 20 and live["a"]["requests_per_minute"] == 1000 and live["a"]["in_flight"] == 0
    assert live["b"]["requests_in_window"] == failed_on_b


def test_hookgate_plugins_lists_the_route_table(tmp_path):
    import subprocess

    from servers import HOOKGATE

    class Unstarted:
        base_url = "http://127.0.0.1:9/v1"

    config = tmp_path / "plugins.toml"
    config.write_text(balanced({"a": Unstarted(), "b": Unstarted()}, [
        {"provider": "a", "weight": 3, "requests_per_minute": 30}, {"provider": "b", "tier": 2, "max_in_flight": 4},
    ], strategy="usage"))
    shown = subprocess.run([HOOKGATE, "plugins", "--config", str(config)], capture_output=True, text=True, check=True).stdout
    assert "pool: strategy usage, state local" in shown
    lines = [line.split() for line in shown.splitlines() if line.startswith("    a ") or line.startswith("    b ")]
    assert lines[0][:6] == ["a", "a/pool", "tier", "1", "weight", "3"] and "rpm" in lines[0] and "30" in lines[0]
    assert lines[1][:4] == ["b", "b/pool", "tier", "2"] and "≤" in lines[1]


async def test_rpm_30_on_one_deployment_holds_across_two_gateway_processes(gateway_process, emulators, redis_url, redis_prefix):
    import aiohttp

    config = balanced(
        emulators, [{"provider": "a", "weight": 20, "requests_per_minute": 30}, {"provider": "b"}, {"provider": "c"}],
        gateway={"balancing": {"redis_url": redis_url, "key_prefix": redis_prefix}},
    )
    gateways = await asyncio.gather(*(asyncio.to_thread(gateway_process, config) for _ in range(2)))
    async with aiohttp.ClientSession() as session:

        async def one(n: int) -> tuple[int, str | None]:
            async with session.post(f"{gateways[n % 2].url}/v1/chat/completions", json=ask(n)) as response:
                await response.read()
                return response.status, response.headers.get("x-hookgate-deployment")

        started = time.monotonic()
        results = []
        for batch in range(0, 200, 20):
            results += await asyncio.gather(*(one(n) for n in range(batch, batch + 20)))
        elapsed = time.monotonic() - started
    assert elapsed < 60, "the whole run fits in one window"
    assert all(status == 200 for status, _ in results), "the others take what the limited one cannot"
    served = collections.Counter(deployment for _, deployment in results)
    assert served["a"] == 30 == emulators["a"].stats.calls, served  # weighted 20:1:1, it would take about 180
    assert served["b"] + served["c"] == 170
    for process in gateways:
        process.stop()


async def test_a_stream_that_fails_before_its_first_chunk_is_retried_on_another_deployment(gateway, emulators):
    emulators["a"].script(Fault(status=503))
    client = await gateway(balanced(
        emulators, [{"provider": "a", "tier": 1}, {"provider": "b", "tier": 2}],
        pipeline=("retry",), retry={"max_attempts": 2, "backoff_base_seconds": 0.001, "budget_ratio": 1.0},
    ))
    response = await client.post("/v1/chat/completions", json=ask(1, stream=True))
    text = await response.text()
    assert response.status == 200 and "data: [DONE]" in text
    assert response.headers["x-hookgate-deployment"] == "b" and response.headers["x-hookgate-attempts"] == "2"
    assert (emulators["a"].stats.calls, emulators["b"].stats.calls) == (1, 1)


async def test_an_answer_of_any_deployment_is_cached_for_the_route(gateway, emulators):
    client = await gateway(balanced(
        emulators, [{"provider": "a", "model": "model-a"}, {"provider": "b", "model": "model-b", "weight": 1000}],
        pipeline=("memory_cache",),
    ))
    first = await client.post("/v1/chat/completions", json=ask(1))
    assert first.status == 200 and first.headers["x-hookgate-cache"] == "MISS"
    answered_by = first.headers["x-hookgate-deployment"]
    second = await client.post("/v1/chat/completions", json=ask(1))
    assert second.status == 200 and second.headers["x-hookgate-cache"] == "HIT", "stored under the route, not the deployment"
    assert (await second.json())["choices"] == (await first.json())["choices"]
    assert emulators["a"].stats.calls + emulators["b"].stats.calls == 1 and answered_by == "b"
