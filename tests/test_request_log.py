"""request_log: one structured line per request, with what an operator needs and no secrets."""
from __future__ import annotations

import io
import json

import structlog
from structlog.testing import capture_logs

from conftest import openai_upstream
from hookgate.logs import configure_logging, redact_secrets

LOGGED = '[gateway]\npipeline = ["request_log", "memory_cache", "echo"]'
GOOD = {"model": "echo", "messages": [{"role": "user", "content": "my private question"}]}


def request_lines(logs):
    return [entry for entry in logs if entry["event"] == "request"]


async def test_one_line_per_request_with_the_useful_fields(gateway):
    client = await gateway(LOGGED)
    with capture_logs() as logs:
        await client.post("/v1/chat/completions", json=GOOD, headers={"x-request-id": "r-1"})
        await client.post("/v1/chat/completions", json=GOOD, headers={"x-request-id": "r-2"})
    first, second = request_lines(logs)
    assert first["request_id"] == "r-1" and second["request_id"] == "r-2"
    assert (first["model"], first["provider"], first["status"], first["cache"]) == ("echo", "echo", 200, "MISS")
    assert second["cache"] == "HIT"
    assert (first["prompt_tokens"], first["completion_tokens"]) == (3, 4)
    assert first["latency_ms"] >= 0 and first["stream"] is False


async def test_streams_are_logged_once_after_the_last_chunk(gateway):
    client = await gateway(LOGGED)
    with capture_logs() as logs:
        response = await client.post("/v1/chat/completions", json={**GOOD, "stream": True, "stream_options": {"include_usage": True}})
        await response.read()
    (line,) = request_lines(logs)
    assert line["stream"] is True and line["completion_tokens"] == 4


async def test_failures_are_logged_with_status_and_code(gateway):
    client = await gateway(LOGGED)
    with capture_logs() as logs:
        await client.post("/v1/chat/completions", json={**GOOD, "model": "nope"})
        await client.post("/v1/chat/completions", data=b"{not json")
    missing, malformed = request_lines(logs)
    assert (missing["status"], missing["error_code"], missing["log_level"]) == (404, "model_not_found", "warning")
    assert malformed["status"] == 400


async def test_prompts_answers_and_keys_are_not_logged_by_default(gateway, emulator):
    client = await gateway(openai_upstream(emulator, pipeline='"request_log", "openai"'))
    with capture_logs() as logs:
        await client.post(
            "/v1/chat/completions",
            json={**GOOD, "model": "gpt-4o-mini"},
            headers={"Authorization": "Bearer sk-client-secret-1"},
        )
    text = repr(logs)
    assert request_lines(logs)
    assert "my private question" not in text
    assert "sk-client-secret-1" not in text and "sk-upstream-secret-123" not in text


async def test_log_bodies_turns_prompt_logging_on(gateway):
    client = await gateway(LOGGED + "\n[plugins.request_log]\nlog_bodies = true")
    with capture_logs() as logs:
        await client.post("/v1/chat/completions", json=GOOD)
    (line,) = request_lines(logs)
    assert line["messages"] == GOOD["messages"] and line["answer"] == ["echo: my private question"]


def test_log_output_masks_credential_fields():
    assert redact_secrets(None, "", {"api_key": "sk-1", "authorization": "Bearer x", "prompt_tokens": 3}) == {
        "api_key": "***",
        "authorization": "***",
        "prompt_tokens": 3,
    }
    configure_logging("info", "json")
    buffer = io.BytesIO()
    try:
        structlog.configure(logger_factory=structlog.BytesLoggerFactory(buffer))
        structlog.get_logger("t").info("event", api_key="sk-secret", model="m")
    finally:
        structlog.reset_defaults()
    line = json.loads(buffer.getvalue().decode().strip())
    assert line["api_key"] == "***" and line["model"] == "m" and line["level"] == "info"


async def test_at_log_level_warning_only_failures_are_logged(gateway_process):
    import aiohttp

    server = gateway_process('[gateway]\npipeline = ["request_log", "echo"]\nlog_level = "warning"\nlog_format = "json"\n')
    async with aiohttp.ClientSession() as session:
        for model in ("echo", "echo", "nope"):
            async with session.post(f"{server.url}/v1/chat/completions", json={**GOOD, "model": model}) as response:
                await response.read()
    lines = [json.loads(line) for line in server.stop().splitlines() if line.startswith("{")]
    logged = [line for line in lines if line.get("event") == "request"]
    assert [(line["status"], line["level"]) for line in logged] == [(404, "warning")]
