"""What the wire translations cost in CPU, per request, on the calling thread.

    python bench/wire_translation.py [-n 300]

For an agent-sized conversation (a system prompt, 40 turns of text, tool calls and tool results,
20 tools) and a 200-chunk streamed answer, the median CPU time of:

* Anthropic Messages → chat request (``hookgate.wire.anthropic.to_chat_request``);
* chat completion → Messages message, and 200 chunks → Anthropic events, encoded as SSE;
* Responses → chat request, chat completion → response, 200 chunks → Responses events as SSE.

Pure CPU work, no I/O; the run stops by itself after ``-n`` rounds of each.
"""
from __future__ import annotations

import argparse
import statistics
import time
from typing import Any, Callable

from hookgate.responses import completion_to_chunks
from hookgate.wire import anthropic as wire_anthropic
from hookgate.wire import responses as wire_responses

TURNS = 40
TOOLS = 20
CHUNKS = 200


def messages_request() -> dict[str, Any]:
    tools = [{"name": f"tool_{i}", "description": "Does a thing " * 10, "input_schema": {"type": "object", "properties": {"path": {"type": "string"}}}} for i in range(TOOLS)]
    messages: list[dict[str, Any]] = []
    for turn in range(TURNS // 2):
        content: list[dict[str, Any]] = [{"type": "text", "text": "Please look at the file and fix it. " * 20}]
        if turn:  # the previous turn's tool call is answered first
            content.insert(0, {"type": "tool_result", "tool_use_id": f"toolu_{turn - 1}", "content": "line of code\n" * 50})
        messages.append({"role": "user", "content": content})
        messages.append({"role": "assistant", "content": [
            {"type": "text", "text": "Reading it."},
            {"type": "tool_use", "id": f"toolu_{turn}", "name": "tool_1", "input": {"path": f"/src/file_{turn}.py"}},
        ]})
    return {"model": "claude-sonnet-4-6", "max_tokens": 8192, "system": [{"type": "text", "text": "You are a coding agent. " * 200}], "messages": messages, "tools": tools, "stream": True}


def responses_request() -> dict[str, Any]:
    tools = [{"type": "function", "name": f"tool_{i}", "description": "Does a thing " * 10, "parameters": {"type": "object", "properties": {"path": {"type": "string"}}}, "strict": False} for i in range(TOOLS)]
    items: list[dict[str, Any]] = []
    for turn in range(TURNS // 2):
        items.append({"role": "user", "content": [{"type": "input_text", "text": "Please look at the file and fix it. " * 20}]})
        items.append({"type": "function_call", "call_id": f"call_{turn}", "name": "tool_1", "arguments": f'{{"path": "/src/file_{turn}.py"}}'})
        items.append({"type": "function_call_output", "call_id": f"call_{turn}", "output": "line of code\n" * 50})
    return {"model": "gpt-4o", "instructions": "You are a coding agent. " * 200, "input": items, "tools": tools, "stream": True}


def completion() -> dict[str, Any]:
    text = "word " * CHUNKS
    return {
        "id": "chatcmpl-bench", "object": "chat.completion", "created": 1, "model": "llama",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop", "logprobs": None}],
        "usage": {"prompt_tokens": 9000, "completion_tokens": CHUNKS, "total_tokens": 9000 + CHUNKS},
    }


def chunks() -> list[dict[str, Any]]:
    head = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1, "model": "llama"}
    out = [{**head, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}]
    out += [{**head, "choices": [{"index": 0, "delta": {"content": "word "}, "finish_reason": None}]} for _ in range(CHUNKS)]
    out.append({**head, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    out.append({**head, "choices": [], "usage": completion()["usage"]})
    return out


def median_cpu_us(work: Callable[[], Any], rounds: int) -> float:
    samples = []
    for _ in range(rounds):
        start = time.process_time_ns()
        work()
        samples.append(time.process_time_ns() - start)
    return statistics.median(samples) / 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=300, help="rounds per measurement")
    rounds = parser.parse_args().n

    messages, responses, answer, stream = messages_request(), responses_request(), completion(), chunks()

    def anthropic_stream() -> None:
        translator = wire_anthropic.ChatStreamToAnthropic(model="claude-sonnet-4-6")
        for chunk in stream:
            for event in translator.feed(chunk):
                wire_anthropic.encode_event(event)
        for event in translator.finish():
            wire_anthropic.encode_event(event)

    def responses_stream() -> None:
        translator = wire_responses.ChatStreamToResponses(responses, response_id="resp_bench")
        for chunk in stream:
            for event in translator.feed(chunk):
                wire_responses.encode_event(event)
        for event in translator.finish():
            wire_responses.encode_event(event)

    cases = [
        (f"Messages → chat request ({TURNS} turns, {TOOLS} tools)", lambda: wire_anthropic.to_chat_request(messages)),
        ("chat completion → Messages message", lambda: wire_anthropic.to_anthropic_message(answer)),
        (f"{CHUNKS + 3} chat chunks → Anthropic SSE events", anthropic_stream),
        (f"Responses → chat request ({TURNS * 3 // 2} items, {TOOLS} tools)", lambda: wire_responses.to_chat_request(responses)),
        ("chat completion → Responses response", lambda: wire_responses.to_response(answer, request=responses, response_id="resp_bench")),
        (f"{CHUNKS + 3} chat chunks → Responses SSE events", responses_stream),
        ("replay: completion → chunks (core, for comparison)", lambda: completion_to_chunks(answer, include_usage=True)),
    ]
    print(f"median CPU per call over {rounds} rounds (time.process_time_ns):")
    for name, work in cases:
        print(f"  {median_cpu_us(work, rounds):9.1f} µs  {name}")


if __name__ == "__main__":
    main()
