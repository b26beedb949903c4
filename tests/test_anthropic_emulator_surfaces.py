"""The Anthropic emulator's extended thinking (with checkable signatures), documents and
citations, and ``count_tokens``, through the official anthropic SDK; bodies and events are checked
against the SDK's types with unknown fields forbidden."""
from __future__ import annotations

import json
from typing import Any

import anthropic
import pytest
from anthropic.types import Message

from hookgate.testing.anthropic_emulator import THINKING_PREFIX, AnthropicEmulator, EmulatorSettings, Fault, thinking_signature
from wire_support import strict_sdk

WEATHER = {"name": "get_weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
THINKING = {"type": "enabled", "budget_tokens": 2048}
NOTES = "Ship on Friday.\nThen celebrate."


@pytest.fixture
async def emulator():
    async with AnthropicEmulator().serve() as emu:
        yield emu


@pytest.fixture
async def client(emulator):
    sdk = anthropic.AsyncAnthropic(base_url=emulator.base_url, api_key="sk-ant-test", max_retries=0)
    yield sdk
    await sdk.close()


def ask(*messages: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"model": "claude-sonnet-4-6", "max_tokens": 4096, "messages": list(messages), **extra}


def user(content: Any) -> dict[str, Any]:
    return {"role": "user", "content": content}


def sent_back(message: Message) -> dict[str, Any]:
    return {"role": "assistant", "content": [block.model_dump(exclude_none=True) for block in message.content]}


# ---------------------------------------------------------------------------------------------
# Extended thinking
# ---------------------------------------------------------------------------------------------


async def test_thinking_opens_the_answer_with_a_signed_block(client: anthropic.AsyncAnthropic) -> None:
    raw = await client.messages.with_raw_response.create(**ask(user("is it sunny"), thinking=THINKING))
    strict_sdk(Message, await raw.json())
    message = await raw.parse()
    thinking, text = message.content
    expected = THINKING_PREFIX + "is it sunny"
    assert (thinking.type, thinking.thinking, thinking.signature) == ("thinking", expected, thinking_signature(expected))
    assert text.text == "emulated: is it sunny"
    # 5 thinking words plus 4 answer words; the thinking is broken out.
    assert (message.usage.output_tokens, message.usage.output_tokens_details.thinking_tokens) == (9, 5)


async def test_a_streamed_thinking_answer_accumulates_to_the_json_one(client: anthropic.AsyncAnthropic) -> None:
    body = ask(user("think it through"), thinking={"type": "adaptive"})
    whole = await client.messages.create(**body)
    deltas = []
    async with client.messages.stream(**body) as stream:
        async for event in stream:
            if event.type == "content_block_delta":
                deltas.append(event.delta.type)
        streamed = await stream.get_final_message()
    assert deltas[:5] == ["thinking_delta", "thinking_delta", "thinking_delta", "thinking_delta", "thinking_delta"]
    assert "signature_delta" in deltas
    assert streamed.model_dump(exclude={"id"}) == whole.model_dump(exclude={"id"})


async def test_thinking_sent_back_unchanged_is_accepted_and_altered_is_refused(client: anthropic.AsyncAnthropic) -> None:
    first = await client.messages.create(**ask(user("plan a trip"), thinking=THINKING))
    follow_up = [user("plan a trip"), sent_back(first), user("and the budget?")]
    again = await client.messages.create(**ask(*follow_up, thinking=THINKING))
    assert again.content[-1].text == "emulated: and the budget?"
    altered = sent_back(first)
    altered["content"][0]["thinking"] += " (edited)"
    with pytest.raises(anthropic.BadRequestError) as refused:
        await client.messages.create(**ask(user("plan a trip"), altered, user("and?"), thinking=THINKING))
    assert "Invalid `signature` in `thinking` block" in refused.value.api_message


async def test_omitted_thinking_keeps_a_signature_that_is_accepted_back(client: anthropic.AsyncAnthropic) -> None:
    first = await client.messages.create(**ask(user("secret plan"), thinking={**THINKING, "display": "omitted"}))
    assert (first.content[0].thinking, first.content[0].signature) == ("", thinking_signature(THINKING_PREFIX + "secret plan"))
    again = await client.messages.create(**ask(user("secret plan"), sent_back(first), user("go on"), thinking=THINKING))
    assert again.stop_reason == "end_turn"


async def test_a_tool_loop_with_thinking_needs_the_thinking_block_back(client: anthropic.AsyncAnthropic) -> None:
    first_turn = user("call get_weather for Paris")
    called = await client.messages.create(**ask(first_turn, thinking=THINKING, tools=[WEATHER]))
    assert [block.type for block in called.content] == ["thinking", "text", "tool_use"]
    use = called.content[-1]
    result = user([{"type": "tool_result", "tool_use_id": use.id, "content": "sunny"}])
    answered = await client.messages.create(**ask(first_turn, sent_back(called), result, thinking=THINKING, tools=[WEATHER]))
    assert answered.content[-1].text == "emulated: sunny"
    without_thinking = {"role": "assistant", "content": [b for b in sent_back(called)["content"] if b["type"] != "thinking"]}
    with pytest.raises(anthropic.BadRequestError) as refused:
        await client.messages.create(**ask(first_turn, without_thinking, result, thinking=THINKING, tools=[WEATHER]))
    assert "must start with a thinking block" in refused.value.api_message


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"thinking": {"type": "enabled", "budget_tokens": 512}}, "greater than or equal to 1024"),
        ({"thinking": {"type": "enabled", "budget_tokens": 4096}}, "`max_tokens` must be greater than `thinking.budget_tokens`"),
        ({"thinking": THINKING, "tools": [WEATHER], "tool_choice": {"type": "any"}}, "tool_choice forces tool use"),
        ({"thinking": {"type": "sometimes"}}, "thinking.type"),
    ],
)
async def test_thinking_settings_are_checked_as_anthropic_does(client: anthropic.AsyncAnthropic, extra: dict[str, Any], message: str) -> None:
    with pytest.raises(anthropic.BadRequestError) as refused:
        await client.messages.create(**ask(user("hi"), **extra))
    assert message in refused.value.api_message


async def test_without_thinking_nothing_changes(client: anthropic.AsyncAnthropic) -> None:
    plain = await client.messages.create(**ask(user("hi"), thinking={"type": "disabled"}))
    assert [block.type for block in plain.content] == ["text"] and plain.usage.output_tokens_details is None


# ---------------------------------------------------------------------------------------------
# Documents and citations
# ---------------------------------------------------------------------------------------------


def documents() -> list[dict[str, Any]]:
    return [
        {"type": "document", "title": "Notes", "citations": {"enabled": True}, "source": {"type": "text", "media_type": "text/plain", "data": NOTES}},
        {"type": "document", "title": "Uncited", "source": {"type": "text", "media_type": "text/plain", "data": "Not cited."}},
        {"type": "document", "citations": {"enabled": True}, "source": {"type": "content", "content": [{"type": "text", "text": "Chapter one."}]}},
        {"type": "document", "title": "spec", "citations": {"enabled": True}, "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="}},
        {"type": "text", "text": "when do we ship"},
    ]


async def test_citable_documents_are_quoted_with_citations(client: anthropic.AsyncAnthropic) -> None:
    raw = await client.messages.with_raw_response.create(**ask(user(documents())))
    strict_sdk(Message, await raw.json())
    message = await raw.parse()
    reply, *quotes = message.content
    assert reply.text == "emulated: when do we ship"
    assert [(q.text, [c.model_dump(exclude_none=True) for c in q.citations]) for q in quotes] == [
        ("Ship on Friday.", [{"type": "char_location", "cited_text": "Ship on Friday.", "document_index": 0, "document_title": "Notes", "start_char_index": 0, "end_char_index": 15}]),
        ("Chapter one.", [{"type": "content_block_location", "cited_text": "Chapter one.", "document_index": 2, "start_block_index": 0, "end_block_index": 1}]),
        ("", [{"type": "page_location", "cited_text": "", "document_index": 3, "document_title": "spec", "start_page_number": 1, "end_page_number": 2}]),
    ]


async def test_streamed_citations_accumulate_to_the_json_answer(client: anthropic.AsyncAnthropic) -> None:
    whole = await client.messages.create(**ask(user(documents())))
    async with client.messages.stream(**ask(user(documents()))) as stream:
        kinds = [event.delta.type async for event in stream if event.type == "content_block_delta"]
        streamed = await stream.get_final_message()
    assert kinds.count("citations_delta") == 3
    assert streamed.model_dump(exclude={"id"}) == whole.model_dump(exclude={"id"})


# ---------------------------------------------------------------------------------------------
# count_tokens
# ---------------------------------------------------------------------------------------------


async def test_count_tokens_matches_what_a_message_call_reports(client: anthropic.AsyncAnthropic, emulator: AnthropicEmulator) -> None:
    body = ask(user(documents()), system="Answer from the notes.")
    counted = await client.messages.count_tokens(model=body["model"], messages=body["messages"], system=body["system"])
    answered = await client.messages.create(**body)
    # system 4 + question 4 + documents 9 (5 + 2 + 2 words in the text and content ones; PDFs count nothing)
    assert counted.input_tokens == answered.usage.input_tokens == 17
    assert emulator.stats.calls_by_path == {"/v1/messages/count_tokens": 1, "/v1/messages": 1}


async def test_count_tokens_takes_faults_and_checks_requests(client: anthropic.AsyncAnthropic, emulator: AnthropicEmulator) -> None:
    emulator.script(Fault(status=529))
    with pytest.raises(anthropic.OverloadedError):
        await client.messages.count_tokens(model="m", messages=[user("hi")])
    with pytest.raises(anthropic.BadRequestError):
        await client.messages.count_tokens(model="m", messages=[])
    emulator.settings = EmulatorSettings(cache_read_input_tokens=50)
    assert (await client.messages.count_tokens(model="m", messages=[user("three words here")])).input_tokens == 3


async def test_thinking_and_citation_events_are_the_sdks_types(aiohttp_client) -> None:
    from anthropic.types import RawMessageStreamEvent

    http = await aiohttp_client(AnthropicEmulator().make_app())
    response = await http.post(
        "/v1/messages",
        headers={"x-api-key": "k", "anthropic-version": "2026-10-21"},
        json={**ask(user(documents()), thinking=THINKING), "stream": True},
    )
    names = []
    for block in (await response.text()).strip().split("\n\n"):
        name, data = block.split("\n")
        event = json.loads(data.removeprefix("data: "))
        if event["type"] != "ping":  # pings are in Anthropic's stream but not in the SDK's event union
            strict_sdk(RawMessageStreamEvent, event)
        names.append(event.get("delta", {}).get("type") or event["type"])
    assert names.count("thinking_delta") == 6 and names.count("signature_delta") == 1 and names.count("citations_delta") == 3
