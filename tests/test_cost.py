"""cost: exact decimal prices over the provider's usage, in x-hookgate-cost-usd and the log;
a model without a price gets no cost and one warning, never a silent $0."""
from __future__ import annotations

from decimal import Decimal

import orjson

from accounting_support import captured_logs, cost_of, emulated_usage  # noqa: F401  (captured_logs: autouse)
from conftest import CHAT, completion, provider_plugin, upstream_config
from hookgate.accounting import TokenUsage, format_usd
from hookgate.plugins.cost import CostConfig, ModelPrice, PriceTable

PRICED = {"prices": {"gpt-4o-mini": {"input": "0.15", "cached_input": "0.075", "output": "0.60"}}}


def request_lines(logs):
    return [entry for entry in logs if entry["event"] == "request"]


async def test_json_cost_matches_the_emulators_usage_exactly(gateway, emulator):
    client = await gateway(upstream_config(emulator, ["token_counter", "cost"], cost=PRICED))
    response = await client.post("/v1/chat/completions", json=CHAT)
    expected = cost_of(*emulated_usage(CHAT["messages"]), "0.15", "0.60")
    assert Decimal(response.headers["x-hookgate-cost-usd"]) == expected
    assert response.headers["x-hookgate-cost-usd"] == format_usd(expected)


async def test_stream_cost_is_in_the_log_and_exact_with_or_without_client_usage(gateway, emulator, captured_logs):
    client = await gateway(upstream_config(emulator, ["token_counter", "cost", "request_log"], cost=PRICED))
    for options in ({}, {"stream_options": {"include_usage": True}}):
        response = await client.post("/v1/chat/completions", json={**CHAT, "stream": True, **options})
        await response.read()
    expected = format_usd(cost_of(*emulated_usage(CHAT["messages"]), "0.15", "0.60"))
    assert [line["cost_usd"] for line in request_lines(captured_logs)] == [expected, expected]


async def test_cached_prompt_tokens_are_priced_at_the_cached_rate(gateway):
    async def cached(ctx):
        answer = completion("ok", model="gpt-4o-mini-2024-07-18")
        answer.body["usage"] = {
            "prompt_tokens": 1000, "completion_tokens": 500, "total_tokens": 1500,
            "prompt_tokens_details": {"cached_tokens": 200}, "completion_tokens_details": {"reasoning_tokens": 300},
        }
        return answer

    client = await gateway(
        '[gateway]\npipeline = ["token_counter", "cost", "snap"]', local={"snap": provider_plugin("snap", cached)}
    )
    response = await client.post("/v1/chat/completions", json={"model": "snap", "messages": [{"role": "user", "content": "hi"}]})
    # Priced by the dated model the upstream answered with, as gpt-4o-mini (shipped table):
    # 800 × 0.15 + 200 × 0.075 + 500 × 0.60 (reasoning tokens are output tokens) per million.
    assert response.headers["x-hookgate-cost-usd"] == "0.000435"


async def test_a_model_without_a_price_has_no_cost_and_one_warning(gateway, captured_logs):
    client = await gateway(
        '[gateway]\npipeline = ["token_counter", "cost", "request_log", "mystery"]',
        local={"mystery": provider_plugin("mystery", lambda ctx: _answer())},
    )
    for _ in range(3):
        response = await client.post("/v1/chat/completions", json={"model": "mystery", "messages": [{"role": "user", "content": "hi"}]})
        assert response.status == 200 and "x-hookgate-cost-usd" not in response.headers
    warnings = [entry for entry in captured_logs if entry["event"] == "cost_unknown_model"]
    assert len(warnings) == 1 and warnings[0]["model"] == "mystery"
    assert all(line["cost_usd"] is None and line["price_missing"] for line in request_lines(captured_logs))


async def _answer():
    answer = completion("ok", model="mystery")
    answer.body["usage"] = {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
    return answer


async def test_a_cache_hit_costs_nothing(gateway, emulator):
    client = await gateway(upstream_config(emulator, ["token_counter", "cost", "memory_cache"], cost=PRICED))
    first = await client.post("/v1/chat/completions", json=CHAT)
    second = await client.post("/v1/chat/completions", json=CHAT)
    assert Decimal(first.headers["x-hookgate-cost-usd"]) > 0
    assert (second.headers["x-hookgate-cache"], second.headers["x-hookgate-cost-usd"]) == ("HIT", "0")


def test_the_shipped_table_is_dated_and_plugins_toml_overrides_and_extends_it():
    shipped = PriceTable.load(CostConfig())
    assert shipped.date >= "2025-01-01"
    assert shipped.price_for("gpt-4o-mini") == ModelPrice(input=Decimal("0.15"), cached_input=Decimal("0.075"), output=Decimal("0.60"))
    table = PriceTable.load(CostConfig(prices={"gpt-4o-mini": {"input": 1, "output": 2}, "in-house": {"input": "0.01", "output": "0.02"}}))
    assert table.price_for("gpt-4o-mini").input == Decimal(1)
    assert table.price_for("in-house").output == Decimal("0.02")
    assert table.price_for("claude-sonnet-4-20250514") == shipped.price_for("claude-sonnet-4")
    assert table.price_for("nobody-knows") is None


def test_price_arithmetic_is_exact_decimal():
    price = ModelPrice(input=Decimal("0.1"), output=Decimal("0.2"))
    assert price.cost(TokenUsage(prompt=3, completion=3)) == Decimal("0.0000009")  # 0.1+0.2 in floats is 0.30000000000000004
    assert format_usd(price.cost(TokenUsage())) == "0"


def test_a_price_file_replaces_the_shipped_table(tmp_path):
    path = tmp_path / "prices.toml"
    path.write_text('date = "2030-01-01"\n[models.only]\ninput = "1"\noutput = "1"\n')
    table = PriceTable.load(CostConfig(price_file=str(path)))
    assert (table.date, list(table.prices)) == ("2030-01-01", ["only"])


def test_cost_config_is_shown_with_its_schema():
    schema = CostConfig.model_json_schema()
    assert "prices" in schema["properties"] and orjson.dumps(schema)
