"""budget: spend limits per key per day and month, reserved before the call and corrected after
it, held across gateway processes so concurrent requests cannot overspend."""
from __future__ import annotations

import asyncio
import random
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import aiohttp
import pytest
import redis

from accounting_support import (  # noqa: F401  (captured_logs: autouse)
    ACCOUNTING,
    DEBUG_LOGS,
    bearer,
    captured_logs,
    keys_section,
    new_key,
    stop_and_check,
)
from conftest import completion, eventually, pipeline_config, provider_plugin, upstream_config
from hookgate.accounting import PICO_PER_USD, REDIS_CALENDAR_LUA
from hookgate.testing.openai_emulator import Fault
from servers import free_port

# Output at $1000 per million tokens and max_tokens 50: every request's worst case is $0.05, and
# a prompt of 48 words gets the 49-word reply "emulated: w0 … w47", which costs $0.049.
PRICES = {"prices": {"gpt-4o-mini": {"input": "0", "output": "1000"}}}
PROMPT = " ".join(f"w{i}" for i in range(48))
ASK = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 50}
ACTUAL = Decimal("0.049")


def budgeted(emulator, keys: dict, redis_url: str | None = None, prefix: str = "", **budget) -> str:
    def shared(name: str) -> dict:
        return {"redis_url": redis_url, "key_prefix": f"{prefix}:{name}"} if redis_url else {}

    return upstream_config(
        emulator, ACCOUNTING, api_keys=keys_section(keys), cost=PRICES, budget={**shared("budget"), **budget}, usage=shared("usage")
    )


def spent_pico(url: str, prefix: str, key_id: str) -> dict[str, int]:
    state = redis.Redis.from_url(url).hgetall(f"{prefix}:budget:{key_id}")
    return {name.decode(): int(value) for name, value in state.items()}


@pytest.fixture
def local_only(monkeypatch):
    monkeypatch.delenv("REDIS_URL", raising=False)


async def test_a_1_dollar_budget_holds_against_100_concurrent_requests_on_2_processes(gateway_process, emulator, redis_url, redis_prefix):
    spender, admin = new_key("spender"), new_key("budget-admin")
    keys = {"spender": (spender, {"daily_budget_usd": "1"}), "admin": (admin, {"admin": True})}
    config = budgeted(emulator, keys, redis_url, redis_prefix)
    gateways = await asyncio.gather(*(asyncio.to_thread(gateway_process, config, env=DEBUG_LOGS) for _ in range(2)))
    emulator.settings.latency = 0.2
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def ask(url: str):
            async with session.post(f"{url}/v1/chat/completions", json=ASK, headers=bearer(spender)) as response:
                return response.status, dict(response.headers), await response.json()

        results = await asyncio.gather(*(ask(gateways[i % 2].url) for i in range(100)))
        admitted = [headers for status, headers, _ in results if status == 200]
        refused = [(headers, body) for status, headers, body in results if status == 429]
        assert len(admitted) + len(refused) == 100 and 1 <= len(admitted) <= 20
        assert {headers["x-hookgate-cost-usd"] for headers in admitted} == {"0.049"}
        for headers, body in refused:
            assert body["error"]["code"] == "budget_exceeded" and int(headers["Retry-After"]) >= 1

        # As answers settle at their actual cost, the room they held comes back: spend on until refused.
        # Answers settle just after they are sent (in the background), so a refusal right after an
        # answer may still see its reservation: wait for the settlement (bounded) and ask again.
        emulator.settings.latency = 0.0

        async def settled() -> None:
            deadline = asyncio.get_running_loop().time() + 10
            while spent_pico(redis_url, redis_prefix, "spender").get("reserved", 0) != 0:
                assert asyncio.get_running_loop().time() < deadline, "reservations never settled"
                await asyncio.sleep(0.02)

        while (await ask(gateways[0].url))[0] == 200 or (await settled() or (await ask(gateways[0].url))[0] == 200):
            pass
        await settled()
        spent = spent_pico(redis_url, redis_prefix, "spender")
        assert spent["reserved"] == 0, "every reservation was settled"
        assert Decimal(spent["day_spent"]) / PICO_PER_USD == ACTUAL * emulator.stats.calls
        assert Decimal(spent["day_spent"]) / PICO_PER_USD <= Decimal("1.05")
        assert emulator.stats.calls == 20, "$0.98 spent: the next worst case no longer fits"

        status, headers, _ = await ask(gateways[1].url)
        midnight = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
        assert status == 429 and abs(int(headers["Retry-After"]) - (midnight - datetime.now(timezone.utc)).total_seconds()) < 5

        async with session.get(f"{gateways[1].url}/v1/usage", params={"key": "spender"}, headers=bearer(admin)) as response:
            ledger = await response.json()
    assert ledger["total"]["requests"] == emulator.stats.calls
    assert Decimal(ledger["total"]["cost_usd"]) == Decimal(spent["day_spent"]) / PICO_PER_USD
    stop_and_check(*gateways)


async def test_a_failed_call_gives_its_reservation_back_and_costs_nothing(gateway, emulator, redis_url, redis_prefix):
    key = new_key("fail")
    client = await gateway(budgeted(emulator, {"careful": (key, {"daily_budget_usd": "0.06"})}, redis_url, redis_prefix))
    emulator.script(Fault(status=500))
    assert (await client.post("/v1/chat/completions", json=ASK, headers=bearer(key))).status == 502
    assert spent_pico(redis_url, redis_prefix, "careful")["reserved"] == 0
    assert (await client.post("/v1/chat/completions", json=ASK, headers=bearer(key))).status == 200
    refused = await client.post("/v1/chat/completions", json=ASK, headers=bearer(key))
    assert refused.status == 429 and (await refused.json())["error"]["code"] == "budget_exceeded"
    assert spent_pico(redis_url, redis_prefix, "careful")["day_spent"] == 49 * PICO_PER_USD // 1000


async def test_a_client_leaving_mid_stream_settles_its_reservation(gateway, emulator, redis_url, redis_prefix):
    key = new_key("leaver")
    client = await gateway(budgeted(emulator, {"leaver": (key, {"monthly_budget_usd": "5"})}, redis_url, redis_prefix))
    emulator.settings.chunk_latency = 0.1
    response = await client.post("/v1/chat/completions", json={**ASK, "stream": True}, headers=bearer(key))
    data_lines = 0
    while data_lines < 3:  # the role chunk and two words
        data_lines += (await response.content.readline()).startswith(b"data: ")
    response.close()
    await eventually(lambda: spent_pico(redis_url, redis_prefix, "leaver").get("reserved") == 0, timeout=3)
    spent = spent_pico(redis_url, redis_prefix, "leaver")["month_spent"]
    assert 0 < spent < 50 * PICO_PER_USD // 1000, "charged what was streamed, less than the worst case"


async def test_without_redis_the_budget_is_kept_per_instance(gateway, emulator, local_only):
    key = new_key("local")
    client = await gateway(budgeted(emulator, {"solo": (key, {"daily_budget_usd": "0.06"})}))
    statuses = [(await client.post("/v1/chat/completions", json=ASK, headers=bearer(key))).status for _ in range(2)]
    assert statuses == [200, 429]
    ready = await (await client.get("/readyz")).json()
    assert ready["checks"]["budget"]["detail"] == "no Redis: budgets are per instance"


async def test_a_budget_from_the_plugin_applies_to_keys_without_their_own(gateway, emulator, local_only):
    key = new_key("default")
    client = await gateway(budgeted(emulator, {"plain": (key, {})}, monthly_budget_usd="0.06"))
    statuses = [(await client.post("/v1/chat/completions", json=ASK, headers=bearer(key))).status for _ in range(2)]
    assert statuses == [200, 429]


async def test_redis_down_fails_closed_unless_told_otherwise(gateway, emulator):
    key = new_key("down")
    dead = f"redis://127.0.0.1:{free_port()}/0"
    closed = await gateway(budgeted(emulator, {"k": (key, {"daily_budget_usd": "1"})}, dead))
    refused = await closed.post("/v1/chat/completions", json=ASK, headers=bearer(key))
    assert refused.status == 503 and (await refused.json())["error"]["code"] == "budget_unavailable"
    assert (await (await closed.get("/readyz")).json())["checks"]["budget"]["status"] == "unavailable"
    opened = await gateway(budgeted(emulator, {"k": (key, {"daily_budget_usd": "1"})}, dead, on_redis_error="allow"))
    assert (await opened.post("/v1/chat/completions", json=ASK, headers=bearer(key))).status == 200


async def test_a_budgeted_key_cannot_use_a_model_without_a_price(gateway, local_only):
    key = new_key("unpriced")
    config = pipeline_config(["api_keys", "token_counter", "cost", "budget", "mystery"], api_keys=keys_section({"k": (key, {"daily_budget_usd": "1"})}))
    client = await gateway(config, local={"mystery": provider_plugin("mystery", _answer)})
    refused = await client.post("/v1/chat/completions", json={"model": "mystery", "messages": [{"role": "user", "content": "hi"}]}, headers=bearer(key))
    assert refused.status == 403 and (await refused.json())["error"]["code"] == "model_not_priced"


async def test_budget_listed_before_cost_is_refused_at_start_up(make_config, emulator, local_only):
    from hookgate.config import ConfigError
    from hookgate.gateway import Gateway

    key = new_key("order")
    config = upstream_config(emulator, ["api_keys", "token_counter", "budget", "cost"], api_keys=keys_section({"k": (key, {"daily_budget_usd": "1"})}))
    with pytest.raises(ConfigError) as caught:
        Gateway(make_config(config))
    assert (caught.value.section, caught.value.key) == ("gateway", "pipeline")
    assert "list cost before budget" in caught.value.reason


async def _answer(ctx):
    answer = completion("ok", model="mystery")
    answer.body["usage"] = {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
    return answer


# ------------------------------------------------------------------------------ Redis's calendar


def test_the_lua_calendar_agrees_with_python(redis_url):
    """Days and months are read from Redis's clock inside the scripts; the date arithmetic there
    must match the proleptic Gregorian calendar at every boundary."""
    script = REDIS_CALENDAR_LUA.replace("redis.call('TIME')", "{ARGV[1], '0'}") + (
        "return {date, month, seconds_to_next_day, seconds_to_next_month, day}"
    )
    client = redis.Redis.from_url(redis_url)
    moments = [
        datetime(1970, 1, 1, tzinfo=timezone.utc),
        datetime(2000, 2, 29, 23, 59, 59, tzinfo=timezone.utc),
        datetime(2024, 2, 28, 12, tzinfo=timezone.utc),
        datetime(2024, 12, 31, 23, 59, 59, tzinfo=timezone.utc),
        datetime(2025, 1, 1, tzinfo=timezone.utc),
        datetime(2100, 2, 28, 6, tzinfo=timezone.utc),
    ]
    rng = random.Random(6)
    moments += [datetime(1990, 1, 1, tzinfo=timezone.utc) + timedelta(seconds=rng.randrange(0, 60 * 365 * 86400)) for _ in range(200)]
    for moment in moments:
        seconds = int(moment.timestamp())
        date, month, to_day, to_month, day = client.eval(script, 0, seconds)
        following_month = datetime(moment.year + (moment.month == 12), moment.month % 12 + 1, 1, tzinfo=timezone.utc)
        following_day = datetime(moment.year, moment.month, moment.day, tzinfo=timezone.utc) + timedelta(days=1)
        assert date.decode() == moment.strftime("%Y-%m-%d")
        assert month == moment.year * 100 + moment.month
        assert to_day == int(following_day.timestamp()) - seconds
        assert to_month == int(following_month.timestamp()) - seconds
        assert day == seconds // 86400
