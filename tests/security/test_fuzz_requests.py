"""Threat: some request body or header the tests' authors never thought of makes a 500 (or worse,
stops the server).

Issue 10 item 5: a non-string ``text`` part, a number outside 64-bit range (or 1e300) in an
unknown field with a cache on, nesting of 260-1020 levels and non-UTF-8 credentials were each a
500. The named cases are tested one by one; then Hypothesis generates request bodies (valid,
almost valid and arbitrary JSON, including huge numbers and deep nesting, or raw bytes) and
headers (credentials, request ids, timeouts, cache directives) against one in-process gateway
with memory_cache, token_counter, cost and api_keys: no answer may be a 5xx, and the gateway must
still serve a good request afterwards. The example count is bounded (``FUZZ_EXAMPLES``;
more under ``CI=true``) so it runs in well under a minute.
"""
from __future__ import annotations

import hashlib
import json
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

KEY = "hg-fuzz-key-1"
PIPELINE = f"""
[gateway]
pipeline = ["api_keys", "token_counter", "cost", "request_log", "memory_cache", "timeout", "echo"]
[plugins.api_keys.keys.fuzz]
hash = "{hashlib.sha256(KEY.encode()).hexdigest()}"
"""
AUTH = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
GOOD = {"model": "echo", "messages": [{"role": "user", "content": "hello"}]}


def deep(levels: int) -> str:
    return "[" * levels + "]" * levels


@pytest.mark.parametrize(
    "body, param",
    [
        ('{"model": "echo", "messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]}', "messages[0].content[0].text"),
        ('{"model": "echo", "messages": [{"role": "user", "content": "x"}], "extra": 123456789012345678901234567890}', "extra"),
        ('{"model": "echo", "messages": [{"role": "user", "content": "x"}], "extra": {"a": [1e300]}}', "extra.a[0]"),
        ('{"model": "echo", "messages": [{"role": "user", "content": "x"}], "extra": -18446744073709551617}', "extra"),
        ('{"model": "echo", "messages": [{"role": "user", "content": "x"}], "extra": ' + deep(65) + "}", None),
        ('{"model": "echo", "messages": [{"role": "user", "content": "x"}], "extra": ' + deep(300) + "}", None),
        ('{"model": "echo", "messages": [{"role": "user", "content": "x"}], "extra": ' + deep(1000) + "}", None),
    ],
)
async def test_the_named_500s_are_400s_naming_the_param(gateway, body, param):
    client = await gateway(PIPELINE)
    response = await client.post("/v1/chat/completions", data=body.encode(), headers=AUTH)
    error = (await response.json())["error"]
    assert response.status == 400, error
    if param is not None:
        assert error["param"] == param
    else:
        assert error["param"].startswith("extra[0]") and "64 levels" in error["message"]


async def test_nesting_at_the_bound_is_accepted(gateway):
    client = await gateway(PIPELINE)
    body = '{"model": "echo", "messages": [{"role": "user", "content": "x"}], "extra": ' + deep(63) + "}"
    response = await client.post("/v1/chat/completions", data=body.encode(), headers=AUTH)
    assert response.status == 200


# ---------------------------------------------------------------------------- the fuzzer ---

_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)  # with infinities: json.dumps writes Infinity, which is no JSON
    | st.text(max_size=20)
)
JSON = st.recursive(_SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=30)
NESTED = st.integers(min_value=1, max_value=400).map(lambda n: json.loads(deep(n)) if n < 900 else [])
PART = st.fixed_dictionaries({"type": st.sampled_from(["text", "image_url", "", "input_audio"]) | JSON}, optional={"text": JSON, "image_url": JSON})
MESSAGE = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "system", "assistant", "tool", "developer", "bogus"]) | JSON},
    optional={"content": st.text(max_size=50) | st.lists(PART, max_size=3) | JSON, "name": JSON, "tool_calls": JSON},
)
KNOWN = {
    "model": st.sampled_from(["echo", "gpt-4o", "", "echo" * 200]) | JSON,
    "messages": st.lists(MESSAGE, max_size=3) | JSON,
    "stream": st.booleans() | JSON,
    "stream_options": st.fixed_dictionaries({}, optional={"include_usage": st.booleans() | JSON}) | JSON,
    "temperature": JSON, "top_p": JSON, "n": st.integers(-3, 200) | JSON, "max_tokens": st.integers(-(2**65), 2**65) | JSON,
    "max_completion_tokens": JSON, "stop": JSON, "seed": JSON, "tools": JSON, "tool_choice": JSON,
    "response_format": JSON, "user": JSON, "metadata": JSON, "logit_bias": JSON,
}
BODY = st.fixed_dictionaries({"model": KNOWN["model"], "messages": KNOWN["messages"]}, optional={
    **{name: strategy for name, strategy in KNOWN.items() if name not in ("model", "messages")},
    "unknown_field": JSON, "deep": NESTED,
})
VALID_MESSAGE = st.fixed_dictionaries({
    "role": st.sampled_from(["user", "system", "developer"]),
    "content": st.text(max_size=40) | st.lists(st.fixed_dictionaries({"type": st.just("text"), "text": st.text(max_size=20)}), min_size=1, max_size=2),
})
NEARLY_VALID = st.fixed_dictionaries({"model": st.just("echo"), "messages": st.lists(VALID_MESSAGE, min_size=1, max_size=3)}, optional={
    "stream": st.booleans(), "stream_options": st.just({"include_usage": True}), "temperature": st.floats(0, 2),
    "max_tokens": st.integers(1, 10_000), "n": st.integers(1, 3), "seed": st.integers(-(2**63), 2**63 - 1),
    "user": st.text(max_size=30), "metadata": st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=3),
    "unknown_field": JSON, "deep": NESTED,
})
HEADER_TEXT = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=60)
HEADERS = st.fixed_dictionaries({}, optional={
    "Authorization": st.sampled_from([f"Bearer {KEY}", "Bearer wrong", "Basic abc", "Bearer ", f"bearer  {KEY}  "]) | HEADER_TEXT,
    "x-api-key": st.just(KEY) | HEADER_TEXT,
    "x-request-id": HEADER_TEXT,
    "x-hookgate-timeout": st.sampled_from(["0", "-1", "1e309", "nan", "5", "0.0001", "9" * 400]) | HEADER_TEXT,
    "x-hookgate-cache-ttl": st.sampled_from(["0", "-5", "inf", "1e400", "30"]) | HEADER_TEXT,
    "Cache-Control": st.sampled_from(["no-cache", "no-store", "max-age=abc", ",,,"]) | HEADER_TEXT,
    "Content-Type": st.sampled_from(["application/json", "text/plain", "application/json; charset=latin-1"]),
})
PAYLOAD = (NEARLY_VALID | BODY).map(lambda body: json.dumps(body).encode()) | st.binary(max_size=200) | JSON.map(lambda value: json.dumps(value).encode())

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "600" if os.environ.get("CI") == "true" else "200"))


@pytest.fixture
def served(make_config):
    """The gateway on a loopback port, served by its own event loop in a thread, so that the
    (synchronous) Hypothesis test can talk HTTP to it."""
    import asyncio
    import threading

    from aiohttp import web

    from hookgate.server import create_app

    loop = asyncio.new_event_loop()
    ready = threading.Event()
    state: dict = {}

    async def start() -> None:
        runner = web.AppRunner(create_app(make_config(PIPELINE)), handler_cancellation=True)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        state["runner"], state["port"] = runner, site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    def serve() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(start())
        except BaseException as exc:  # shown by the test, not lost in the thread
            state["error"] = exc
            return
        finally:
            ready.set()
        loop.run_forever()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert ready.wait(30) and "error" not in state, state.get("error")
    yield state["port"]
    asyncio.run_coroutine_threadsafe(state["runner"].cleanup(), loop).result(30)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


def test_no_generated_request_gets_a_5xx_and_the_gateway_keeps_serving(served):
    import http.client

    connection = http.client.HTTPConnection("127.0.0.1", served, timeout=30)
    seen: dict[int, int] = {}

    def post(payload: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        nonlocal connection
        try:
            connection.request("POST", "/v1/chat/completions", body=payload, headers=headers)
            response = connection.getresponse()
            return response.status, response.read()
        except (http.client.HTTPException, ConnectionError):
            connection.close()  # the server may close a connection after an error: a new one
            connection = http.client.HTTPConnection("127.0.0.1", served, timeout=30)
            connection.request("POST", "/v1/chat/completions", body=payload, headers=headers)
            response = connection.getresponse()
            return response.status, response.read()

    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(payload=PAYLOAD, headers=HEADERS, authenticated=st.booleans())
    def one_request(payload: bytes, headers: dict[str, str], authenticated: bool) -> None:
        sent = {**(AUTH if authenticated else {}), **headers}
        status, body = post(payload, {name: value.encode("latin-1").decode("latin-1") for name, value in sent.items()})
        seen[status] = seen.get(status, 0) + 1
        asked_for_little_time = status == 504 and "x-hookgate-timeout" in headers  # the client's own deadline
        assert status < 500 or asked_for_little_time, (status, body[:500], payload[:300], sent)
        if status >= 400:
            assert set(json.loads(body)["error"]) == {"message", "type", "param", "code"}

    with capture_logs() as logs:
        one_request()
    failures = [entry for entry in logs if entry.get("log_level") in ("error", "critical")]
    assert failures == [], failures[:3]  # no plugin failed quietly behind a 4xx either
    print("statuses:", dict(sorted(seen.items())))
    connection.request("GET", "/healthz")
    assert connection.getresponse().status == 200
    status, _ = post(json.dumps(GOOD).encode(), AUTH)
    assert status == 200
    assert seen.get(200, 0) > 0 and sum(seen.values()) >= EXAMPLES * 0.9  # it did reach the pipeline
    connection.close()


async def test_an_observer_that_raises_breaks_no_request(gateway):
    """Found by the fuzzer: the runner logged an observer's exception with ``event=``, structlog's
    own argument, so the logging itself raised and the request became a 500."""
    from hookgate import hookimpl

    class Broken:
        def __init__(self, config) -> None:
            pass

        @hookimpl
        def request_finished(self, ctx, outcome):
            raise RuntimeError("observer bug")

    client = await gateway('[gateway]\npipeline = ["broken", "echo"]', local={"broken": Broken})
    with capture_logs() as logs:
        response = await client.post("/v1/chat/completions", json=GOOD)
    assert response.status == 200
    assert [entry["hook"] for entry in logs if entry["event"] == "plugin_event_failed"] == ["request_finished"]
