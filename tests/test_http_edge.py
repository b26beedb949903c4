"""Bad input at the HTTP edge: every failure is an OpenAI-shaped error with the right status,
and the server keeps serving."""
from __future__ import annotations

import openai
import orjson
import pytest

from conftest import ECHO_ONLY, assert_conforms

GOOD = {"model": "echo", "messages": [{"role": "user", "content": "hi"}]}


async def error_of(response, status: int, param=None, code=None) -> dict:
    assert response.status == status, await response.text()
    assert response.content_type == "application/json"
    body = await response.json()
    assert_conforms("ErrorResponse", body)
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert "Traceback" not in body["error"]["message"]
    assert body["error"]["param"] == param
    if code is not None:
        assert body["error"]["code"] == code
    assert response.headers["x-request-id"]
    return body["error"]


async def test_malformed_json_is_400_and_server_keeps_serving(gateway):
    client = await gateway(ECHO_ONLY)
    response = await client.post("/v1/chat/completions", data=b'{"model": "echo", "messages": [', headers={"Content-Type": "application/json"})
    error = await error_of(response, 400)
    assert "JSON" in error["message"]
    assert (await client.post("/v1/chat/completions", json=GOOD)).status == 200


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "echo"}, "messages"),
        ({"messages": [{"role": "user", "content": "x"}]}, "model"),
        ({"model": "echo", "messages": []}, "messages"),
        ({"model": "echo", "messages": "hello"}, "messages"),
        ({"model": "echo", "messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role"),
        ({"model": "echo", "messages": [{"role": "user", "content": 42}]}, "messages[0].content"),
        ({"model": 7, "messages": [{"role": "user", "content": "x"}]}, "model"),
        ({**GOOD, "temperature": "hot"}, "temperature"),
        ({**GOOD, "temperature": 3}, "temperature"),
        ({**GOOD, "stream": "yes"}, "stream"),
        ({**GOOD, "n": 0}, "n"),
        ({**GOOD, "max_tokens": -5}, "max_tokens"),
    ],
)
async def test_a_body_that_is_not_a_chat_request_is_400_naming_the_param(gateway, body, param):
    client = await gateway(ECHO_ONLY)
    response = await client.post("/v1/chat/completions", json=body)
    error = await error_of(response, 400, param=param)
    assert param in error["message"]


@pytest.mark.parametrize("body", [[1, 2], "text", 3, None])
async def test_json_that_is_not_an_object_is_400(gateway, body):
    client = await gateway(ECHO_ONLY)
    response = await client.post("/v1/chat/completions", data=orjson.dumps(body))
    await error_of(response, 400)


async def test_unknown_fields_pass_through_validation(gateway):
    client = await gateway(ECHO_ONLY)
    response = await client.post("/v1/chat/completions", json={**GOOD, "some_future_param": {"x": 1}})
    assert response.status == 200


async def test_body_over_the_limit_is_413(gateway):
    client = await gateway("""
        [gateway]
        pipeline = ["echo"]
        max_body_bytes = 2048
    """)
    big = {"model": "echo", "messages": [{"role": "user", "content": "x" * 5000}]}
    await error_of(await client.post("/v1/chat/completions", json=big), 413, code="request_too_large")
    assert (await client.post("/v1/chat/completions", json=GOOD)).status == 200


async def test_default_body_limit_is_4_mib(gateway):
    client = await gateway(ECHO_ONLY)
    big = {"model": "echo", "messages": [{"role": "user", "content": "x" * (4 * 1024 * 1024)}]}
    await error_of(await client.post("/v1/chat/completions", json=big), 413)


async def test_chunked_body_over_the_limit_is_413(gateway):
    client = await gateway("""
        [gateway]
        pipeline = ["echo"]
        max_body_bytes = 2048
    """)

    async def chunks():
        for _ in range(10):
            yield b"x" * 1000

    response = await client.post("/v1/chat/completions", data=chunks())
    await error_of(response, 413)


async def test_unknown_model_is_404_model_not_found(gateway, sdk):
    client = await gateway(ECHO_ONLY)
    response = await client.post("/v1/chat/completions", json={**GOOD, "model": "gpt-17"})
    error = await error_of(response, 404, param="model", code="model_not_found")
    assert "gpt-17" in error["message"]
    with pytest.raises(openai.NotFoundError):
        await sdk(client).chat.completions.create(model="gpt-17", messages=[{"role": "user", "content": "x"}])


async def test_wrong_method_is_405(gateway):
    client = await gateway(ECHO_ONLY)
    response = await client.get("/v1/chat/completions")
    await error_of(response, 405, code="method_not_allowed")
    assert "POST" in response.headers["Allow"]


async def test_unknown_path_is_404(gateway):
    client = await gateway(ECHO_ONLY)
    await error_of(await client.get("/v2/anything"), 404)


async def test_request_id_is_echoed_or_generated(gateway):
    client = await gateway(ECHO_ONLY)
    response = await client.post("/v1/chat/completions", json=GOOD, headers={"x-request-id": "trace-123"})
    assert response.headers["x-request-id"] == "trace-123"
    response = await client.post("/v1/chat/completions", json=GOOD)
    assert response.headers["x-request-id"].startswith("req_")
    bad = await client.post("/v1/chat/completions", json={}, headers={"x-request-id": "trace-456"})
    assert bad.headers["x-request-id"] == "trace-456"


async def test_every_chat_response_names_cache_and_provider(gateway):
    client = await gateway(ECHO_ONLY)
    ok = await client.post("/v1/chat/completions", json=GOOD)
    assert ok.headers["x-hookgate-cache"] == "BYPASS"
    assert ok.headers["x-hookgate-provider"] == "echo"
    bad = await client.post("/v1/chat/completions", json={**GOOD, "model": "nope"})
    assert bad.headers["x-hookgate-cache"] == "BYPASS"
    assert bad.headers["x-hookgate-provider"] == "none"


async def test_healthz_and_models(gateway):
    client = await gateway(ECHO_ONLY)
    assert (await client.get("/healthz")).status == 200
    models = await (await client.get("/v1/models")).json()
    assert models["object"] == "list"
    assert [m["id"] for m in models["data"]] == ["echo"]
    assert_conforms("ListModelsResponse", models)


async def test_new_request_ids_are_distinct_128_bit_tokens_past_one_batch_of_random_bytes(gateway):
    import re

    client = await gateway(ECHO_ONLY)
    ids = [(await client.get("/healthz")).headers["x-request-id"] for _ in range(300)]  # more than one read of 256
    assert all(re.fullmatch(r"req_[0-9a-f]{32}", request_id) for request_id in ids), ids[:3]
    assert len(set(ids)) == 300
    given = (await client.get("/healthz", headers={"x-request-id": "client-chosen-7"})).headers["x-request-id"]
    assert given == "client-chosen-7"
