"""Threat: a client-chosen string (a model name, a type, what an upstream quotes back) is echoed,
logged, labelled or stored at full size.

Issue 10 item 2: a 4 MiB ``model`` went whole into the 404, the log line and the usage ledger.
Every sink now keeps at most a bounded prefix (hookgate.bounds.clip): these tests send huge and
unprintable names through every place that quotes or keeps one, including a pattern route, under
which an invented name is routed and reaches the ledger, the metrics labels, the circuit
breakers, the concurrency scopes and the cost warnings.
"""
from __future__ import annotations

import pytest
from structlog.testing import capture_logs

from hookgate import InvalidRequest
from hookgate.bounds import MAX_IDENTIFIER_CHARS, clip
from hookgate.server import current_gateway
from hookgate.testing.openai_emulator import Fault
from hookgate.wire import anthropic as anthropic_wire
from hookgate.wire import responses as responses_wire

from conftest import openai_upstream

HUGE = "m" * (1 << 20)  # 1 MiB
BOUND = 4096  # generous: what any one quoted or stored identifier may take, with its context


def chat(model: str) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": "hello"}]}


def test_clip_bounds_length_and_escapes_control_characters():
    assert clip("gpt-4o") == "gpt-4o"
    assert len(clip(HUGE)) == MAX_IDENTIFIER_CHARS + 1  # and an ellipsis
    forged = clip('gpt\n{"event": "admin_login"}\x00' * 1000)
    assert "\n" not in forged and "\x00" not in forged and len(forged) <= MAX_IDENTIFIER_CHARS + 1


async def test_an_unknown_huge_model_is_404_with_a_short_message_and_log_line(gateway):
    client = await gateway('[gateway]\npipeline = ["request_log", "echo"]')
    with capture_logs() as logs:
        response = await client.post("/v1/chat/completions", json=chat(HUGE))
        body = await response.read()
    assert response.status == 404 and len(body) < BOUND
    (line,) = [entry for entry in logs if entry["event"] == "request"]
    assert len(repr(line)) < BOUND


PATTERN_PIPELINE = """
[gateway]
pipeline = ["metrics", "request_log", "token_counter", "cost", "usage", "circuit_breaker", "concurrency", "echo"]
[plugins.metrics]
max_label_values = 50
[plugins.concurrency]
scope = "model"
[models."echo/*"]
provider = "echo"
"""


async def test_invented_names_under_a_pattern_route_are_bounded_in_every_table_and_label(gateway, monkeypatch):
    monkeypatch.delenv("REDIS_URL", raising=False)  # the in-process ledger: its rows are inspectable
    client = await gateway(PATTERN_PIPELINE)
    names = [f"echo/{i}-" + "x\n" * 60_000 for i in range(20)]  # 120 KB each, with newlines
    with capture_logs() as logs:
        for name in names:
            response = await client.post("/v1/chat/completions", json=chat(name))
            assert response.status == 200
            await response.read()
    plugins = current_gateway(client.server.app).runner.plugins

    usage = await client.get("/v1/usage")
    ledger = await usage.json()
    assert len(ledger["data"]) == 20
    assert all(len(row["model"]) <= MAX_IDENTIFIER_CHARS + 1 and "\n" not in row["model"] for row in ledger["data"])

    metrics = await (await client.get("/metrics")).text()
    assert len(metrics) < 2_000_000  # 20 models x 128-character labels x every series (unclipped: 100s of MB)
    assert max(len(line) for line in metrics.splitlines()) < 1000

    breakers = [route for route, _ in plugins["circuit_breaker"].breakers.items()]
    assert len(breakers) == 20 and max(map(len, breakers)) < 300
    assert max(map(len, plugins["cost"]._warned)) <= MAX_IDENTIFIER_CHARS + 1
    assert all(len(repr(entry)) < BOUND for entry in logs)


async def test_a_budgeted_key_asking_for_an_unpriced_huge_model_gets_a_short_403(gateway, monkeypatch):
    monkeypatch.delenv("REDIS_URL", raising=False)
    import hashlib

    digest = hashlib.sha256(b"hg-budget-key").hexdigest()
    client = await gateway(f"""
        [gateway]
        pipeline = ["api_keys", "token_counter", "cost", "budget", "echo"]
        [plugins.api_keys.keys.team]
        hash = "{digest}"
        daily_budget_usd = "1"
    """)
    response = await client.post("/v1/chat/completions", json=chat(HUGE), headers={"Authorization": "Bearer hg-budget-key"})
    body = await response.read()
    assert response.status == 403 and len(body) < BOUND


async def test_an_upstream_error_quoting_a_huge_request_reaches_the_client_bounded(gateway, emulator):
    client = await gateway(openai_upstream(emulator))
    emulator.settings.fault = Fault(status=400, message="The model " + HUGE + " does not exist", code="c" * 10_000)
    response = await client.post("/v1/chat/completions", json=chat("gpt-4o-mini"))
    body = await response.json()
    assert response.status == 400
    # The error body is over the http transport's 1 MiB read limit, so its status alone decides
    # (no code); the sdk transport reads it whole and clips the code.
    assert len(body["error"]["message"]) < BOUND and len(body["error"]["code"] or "") < 100


@pytest.mark.parametrize(
    "translate, body",
    [
        (
            anthropic_wire.to_chat_request,
            {"model": "claude", "max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "t" * 100_000}]}]},
        ),
        (responses_wire.to_chat_request, {"model": "gpt-4o", "input": [{"type": "t" * 100_000}]}),
        (responses_wire.to_chat_request, {"model": "gpt-4o", "input": "hi", "tools": [{"type": "t" * 100_000}]}),
    ],
)
def test_the_wire_translators_quote_client_types_bounded(translate, body):
    with pytest.raises(InvalidRequest) as raised:
        translate(body)
    assert len(raised.value.message) < 400


async def test_client_headers_are_never_echoed_at_full_size(gateway):
    client = await gateway('[gateway]\npipeline = ["request_log", "timeout", "memory_cache", "echo"]')
    long = "r" * 4000  # aiohttp itself refuses header lines over 8 KiB
    with capture_logs() as logs:
        replaced = await client.post("/v1/chat/completions", json=chat("echo"), headers={"x-request-id": long, "x-hookgate-cache-ttl": long})
        assert replaced.status == 200 and len(replaced.headers["x-request-id"]) < 64  # a new id, not the client's
        refused = await client.post("/v1/chat/completions", json=chat("echo"), headers={"x-hookgate-timeout": "9" * 4000})
        body = await refused.read()
    assert refused.status == 400 and len(body) < 1000 and b"999999" not in body
    assert all(long not in repr(entry) for entry in logs)
