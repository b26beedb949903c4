"""Issue 19, item 8: the demo model under a budget, and what a refused request costs a rate limit.

Both are what an operator meets in the first minutes: a budgeted key trying the keyless demo
model, and a client whose mistakes (an unknown model, a model its key may not use) should not
eat the requests-per-minute it has left for real work.
"""
from __future__ import annotations

from accounting_support import bearer, keys_section, new_key
from conftest import pipeline_config

ASK = {"messages": [{"role": "user", "content": "hello"}]}


async def test_a_budgeted_key_can_use_the_demo_models_which_cost_nothing(gateway):
    key = new_key("demo")
    config = pipeline_config(
        ["api_keys", "token_counter", "cost", "budget", "echo"],
        api_keys=keys_section({"demo": (key, {"daily_budget_usd": "0.01"})}),
    )
    client = await gateway(config)
    for _ in range(3):  # more than one: a reservation that was not given back would show
        answer = await client.post("/v1/chat/completions", json={"model": "echo", **ASK}, headers=bearer(key))
        assert answer.status == 200, await answer.text()
        assert answer.headers["x-hookgate-cost-usd"] in ("0", "0.0", "0.000000")


async def test_requests_refused_after_the_rate_limit_give_their_reservation_back(gateway):
    key = new_key("refused")
    config = pipeline_config(
        ["api_keys", "rate_limit", "echo"],
        api_keys=keys_section({"team": (key, {"models": ["echo"]})}),
        rate_limit={"requests_per_minute": 2},
    )
    client = await gateway(config)
    for model in ("no-such-model", "no-such-model", "gpt-4o", "gpt-4o"):  # 404, 404, 403, 403
        refused = await client.post("/v1/chat/completions", json={"model": model, **ASK}, headers=bearer(key))
        assert refused.status in (403, 404), await refused.text()
    statuses = [(await client.post("/v1/chat/completions", json={"model": "echo", **ASK}, headers=bearer(key))).status for _ in range(3)]
    assert statuses == [200, 200, 429], "only requests that reached the provider count against the limit"
