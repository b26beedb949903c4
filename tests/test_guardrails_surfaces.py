"""The guardrails plugin on every API surface, through the official SDKs, as a client and the
upstream see it: chat completions, legacy completions, Anthropic Messages (passed through to an
Anthropic upstream, and translated to an OpenAI-wire one), Responses (with its stored responses)
and embeddings (request side only). Masked values reach the upstream as placeholders only and
come back to the client, JSON and stream, even when the upstream cuts a placeholder across
chunks; a blocked request is a 400 in the surface's own error shape and never reaches the
upstream; answer-side findings are masked or withheld on every stream; policies differ per key;
a judge that times out follows its policy; and what was found is recorded, never the values."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, AsyncIterator, Awaitable, Callable

import anthropic
import openai
import orjson
import pytest

from accounting_support import keys_section, new_key
from conftest import pipeline_config
from test_guardrails_plugin import recorder
from hookgate.testing.anthropic_emulator import AnthropicEmulator
from hookgate.testing.openai_emulator import OpenAIEmulator

ALICE, BOB = "alice.martin@example.org", "bob.stone@example.com"
CARD = "4111 1111 1111 1111"
SECRET = "sk-proj-" + "Ab3dE5gH7jK9mN1pQ3sT5vX7zA9cE1gI3kM5oQ7s"
PIECE_CHARS = 3
"""The emulators stream 3 characters per chunk: every placeholder (``<EMAIL_1>``) and every card
arrives cut across several chunks."""

MASK = {"request": {"detectors": ["email", "payment_card"]}}
BLOCK_KEYS = {"request": {"detectors": ["email", "credentials"], "actions": {"API_KEY": "block"}}}
ANSWER = {"request": {"detectors": ["email"]}, "answer": {"detectors": ["payment_card"], "hold_back_chars": 64}}


@pytest.fixture
async def claude() -> AsyncIterator[AnthropicEmulator]:
    async with AnthropicEmulator().serve() as emu:
        yield emu


@pytest.fixture
def upstreams(emulator: OpenAIEmulator, claude: AnthropicEmulator) -> tuple[OpenAIEmulator, AnthropicEmulator]:
    for upstream in (emulator, claude):
        upstream.settings.stream_piece_chars = PIECE_CHARS
    return emulator, claude


def received(emulator: OpenAIEmulator, claude: AnthropicEmulator) -> list[dict[str, Any]]:
    """Every request body the upstreams received."""
    return [r.body for r in (*emulator.stats.requests, *claude.stats.requests)]


def guarded(emulator: OpenAIEmulator, claude: AnthropicEmulator, policies: dict[str, Any], *, before: tuple[str, ...] = (), **sections: Any) -> str:
    """guardrails in front of both upstreams: gpt-* to the OpenAI emulator, claude-* to the Anthropic one."""
    guardrails = {"policies": policies, **sections.pop("guardrails", {})}
    return pipeline_config(
        ["metrics", "recorder", *before, "guardrails", "openai", "anthropic"],
        **sections,
        guardrails=guardrails,
        openai={"base_url": emulator.base_url, "api_key": "sk-upstream-secret-123", "models": ["gpt-4o-mini", "text-embedding-3-small", "gpt-3.5-turbo-instruct"]},
        anthropic={"base_url": claude.base_url, "api_key": "sk-ant-upstream-secret-456", "models": ["claude-sonnet-4-6"]},
    )


@pytest.fixture
async def start(aiohttp_client, make_config, upstreams):
    """A gateway for ``policies``; returns (client, what it recorded per finished request)."""

    async def start(policies: dict[str, Any], **options: Any):
        finished: list[dict[str, Any]] = []
        client = await aiohttp_client(create_app_for(make_config, guarded(*upstreams, policies, **options), finished))
        return client, finished

    return start


def create_app_for(make_config, toml: str, finished: list[dict[str, Any]]):
    from hookgate.server import create_app

    return create_app(make_config(toml, local={"recorder": recorder(finished)}))


# --- one client per surface, each through its official SDK -------------------------------------


@dataclass(frozen=True)
class Answer:
    text: str
    """What the client read of the answer."""
    withheld: bool
    """The surface's own way of saying its filters stopped the answer (content_filter, refusal,
    incomplete)."""
    said: str = ""
    """Any refusal the surface carries besides the text."""


Ask = Callable[[Any, str, bool, str], Awaitable[Answer]]


def _openai(client, key: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=str(client.make_url("/v1")), api_key=key, max_retries=0)


def _anthropic(client, key: str) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=str(client.make_url("")), api_key=key, max_retries=0)


async def ask_chat(client, text: str, stream: bool, key: str = "sk-client-test") -> Answer:
    async with _openai(client, key) as sdk:
        messages = [{"role": "user", "content": text}]
        if not stream:
            choice = (await sdk.chat.completions.create(model="gpt-4o-mini", messages=messages)).choices[0]
            return Answer(choice.message.content or "", choice.finish_reason == "content_filter", choice.message.refusal or "")
        parts, refusal, finish = [], [], None
        async for chunk in await sdk.chat.completions.create(model="gpt-4o-mini", messages=messages, stream=True):
            for choice in chunk.choices:
                parts.append(choice.delta.content or "")
                refusal.append(choice.delta.refusal or "")
                finish = choice.finish_reason or finish
        return Answer("".join(parts), finish == "content_filter", "".join(refusal))


async def ask_completions(client, text: str, stream: bool, key: str = "sk-client-test") -> Answer:
    async with _openai(client, key) as sdk:
        if not stream:
            choice = (await sdk.completions.create(model="gpt-3.5-turbo-instruct", prompt=text)).choices[0]
            return Answer(choice.text, choice.finish_reason == "content_filter")
        parts, finish = [], None
        async for chunk in await sdk.completions.create(model="gpt-3.5-turbo-instruct", prompt=text, stream=True):
            for choice in chunk.choices:
                parts.append(choice.text)
                finish = choice.finish_reason or finish
        return Answer("".join(parts), finish == "content_filter")


def ask_messages(model: str) -> Ask:
    async def ask(client, text: str, stream: bool, key: str = "sk-client-test") -> Answer:
        async with _anthropic(client, key) as sdk:
            ask = {"model": model, "max_tokens": 500, "messages": [{"role": "user", "content": text}]}
            if stream:
                async with sdk.messages.stream(**ask) as events:
                    message = await events.get_final_message()
            else:
                message = await sdk.messages.create(**ask)
        return Answer("".join(block.text for block in message.content if block.type == "text"), message.stop_reason == "refusal")

    return ask


async def ask_responses(client, text: str, stream: bool, key: str = "sk-client-test") -> Answer:
    async with _openai(client, key) as sdk:
        if not stream:
            response = await sdk.responses.create(model="gpt-4o-mini", input=text)
        else:
            deltas, response = [], None
            async for event in await sdk.responses.create(model="gpt-4o-mini", input=text, stream=True):
                if event.type == "response.output_text.delta":
                    deltas.append(event.delta)
                elif event.type in ("response.completed", "response.incomplete"):
                    response = event.response
            assert response is not None and "".join(deltas) == response.output_text, "the deltas add up to the final response"
    refusal = "".join(part.refusal for item in response.output if item.type == "message" for part in item.content if part.type == "refusal")
    withheld = response.status == "incomplete" and response.incomplete_details is not None and response.incomplete_details.reason == "content_filter"
    return Answer(response.output_text, withheld, refusal)


SURFACES: dict[str, Ask] = {
    "chat": ask_chat,
    "completions": ask_completions,
    "messages-native": ask_messages("claude-sonnet-4-6"),
    "messages-translated": ask_messages("gpt-4o-mini"),
    "responses": ask_responses,
}
surfaces = pytest.mark.parametrize("surface", list(SURFACES))
json_and_stream = pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])


# --- mask: placeholders upstream, the client's own values back -------------------------------


@surfaces
@json_and_stream
async def test_a_masked_request_reaches_the_upstream_with_placeholders_only_and_the_client_gets_its_values(start, upstreams, surface, stream):
    client, _ = await start({"default": MASK})
    text = f"Write to {ALICE} and {BOB}, then {ALICE} again: card {CARD}."
    answer = await SURFACES[surface](client, text, stream)
    sent = orjson.dumps(received(*upstreams)).decode()
    assert "Write to <EMAIL_1> and <EMAIL_2>, then <EMAIL_1> again: card <PAYMENT_CARD_1>." in sent
    assert not any(value in sent for value in (ALICE, BOB, CARD))
    assert answer == Answer(f"emulated: {text}", withheld=False), "every placeholder restored, wherever the chunks cut it"


async def test_embeddings_inputs_are_masked_and_blocked(start, upstreams):
    client, finished = await start({"default": {"request": {**MASK["request"], "detectors": ["email", "payment_card", "credentials"], "actions": {"API_KEY": "block"}}}})
    emulator, _ = upstreams
    async with _openai(client, "sk-client-test") as sdk:
        vectors = await sdk.embeddings.create(model="text-embedding-3-small", input=[f"contact {ALICE}", "plain words", f"{BOB} or {ALICE}"])
        assert len(vectors.data) == 3
        assert emulator.stats.requests[-1].body["input"] == ["contact <EMAIL_1>", "plain words", "<EMAIL_2> or <EMAIL_1>"]
        tokens = await sdk.embeddings.create(model="text-embedding-3-small", input=[[1, 2, 3]])
        assert len(tokens.data) == 1 and emulator.stats.requests[-1].body["input"] == [[1, 2, 3]], "token arrays pass untouched"
        calls = emulator.stats.calls
        with pytest.raises(openai.BadRequestError) as blocked:
            await sdk.embeddings.create(model="text-embedding-3-small", input=["fine", f"my key is {SECRET}"])
    error = blocked.value.body
    assert (error["code"], error["param"]) == ("content_blocked", "input[1]") and "API_KEY" in error["message"]
    assert SECRET not in orjson.dumps(error).decode() and emulator.stats.calls == calls
    assert finished[0]["findings"] == (("EMAIL", 3, "mask", "request"),)
    assert finished[-1]["findings"] == (("API_KEY", 1, "block", "request"),)


# --- block: the surface's own 400, naming the kind, and no upstream call ---------------------


@surfaces
@json_and_stream
async def test_a_blocked_request_is_a_400_in_the_surfaces_shape_and_never_reaches_the_upstream(start, upstreams, surface, stream):
    client, finished = await start({"default": BLOCK_KEYS})
    anthropic_client = surface.startswith("messages")
    with pytest.raises(anthropic.BadRequestError if anthropic_client else openai.BadRequestError) as raised:
        await SURFACES[surface](client, f"{ALICE} asks: is {SECRET} valid?", stream)
    body = raised.value.body
    if anthropic_client:
        assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
        assert body["error"]["details"]["error_code"] == "content_blocked"
        message = body["error"]["message"]
    else:
        assert raised.value.code == "content_blocked" and raised.value.type == "invalid_request_error"
        message = body["message"]
    assert "API_KEY" in message
    assert SECRET not in orjson.dumps(body).decode() and ALICE not in orjson.dumps(body).decode()
    assert received(*upstreams) == []
    assert sorted(finished[-1]["findings"]) == [("API_KEY", 1, "block", "request"), ("EMAIL", 1, "mask", "request")]


# --- answer side: findings in what the model streams -----------------------------------------


@surfaces
@json_and_stream
async def test_a_card_in_the_answer_is_masked_for_the_client_and_recorded(start, upstreams, surface, stream):
    client, finished = await start({"default": ANSWER})
    text = f"{ALICE} paid with {CARD} yesterday"  # the request side does not look for cards
    answer = await SURFACES[surface](client, text, stream)
    assert answer == Answer(f"emulated: {ALICE} paid with <PAYMENT_CARD> yesterday", withheld=False)
    assert f"<EMAIL_1> paid with {CARD} yesterday" in orjson.dumps(received(*upstreams)).decode()
    assert finished[-1]["findings"] == (("EMAIL", 1, "mask", "request"), ("PAYMENT_CARD", 1, "mask", "answer"))
    scrape = await (await client.get("/metrics")).text()
    assert 'hookgate_guardrails_findings_total{action="mask",kind="PAYMENT_CARD",side="answer"} 1.0' in scrape
    assert 'hookgate_guardrails_findings_total{action="mask",kind="EMAIL",side="request"} 1.0' in scrape
    everything = orjson.dumps(finished).decode() + scrape
    assert ALICE not in everything and CARD not in everything


@surfaces
@json_and_stream
async def test_an_answer_with_a_blocked_card_is_withheld_in_the_surfaces_own_terms(start, upstreams, surface, stream):
    policies = {"default": {"answer": {"detectors": ["payment_card"], "action": "block", "hold_back_chars": 64}}}
    client, finished = await start(policies)
    preamble = "the card number that you asked me about is"
    answer = await SURFACES[surface](client, f"{preamble} {CARD} and more words after it", stream)
    assert answer.withheld
    assert "1111" not in answer.text + answer.said
    if stream:  # a live stream keeps what it sent before the finding; the hold-back kept the card back
        assert answer.text.startswith(f"emulated: {preamble[:20]}")
    if surface != "completions":  # the legacy API has no field for a refusal: its finish_reason says it
        assert "it contained PAYMENT_CARD" in answer.text + answer.said
    assert finished[-1]["findings"] == (("PAYMENT_CARD", 1, "block", "answer"),)
    assert 'hookgate_guardrails_blocked_total{side="answer"} 1.0' in await (await client.get("/metrics")).text()

# --- policies per key, on every surface ------------------------------------------------------


@surfaces
async def test_policies_differ_per_key_on_every_surface(start, upstreams, surface):
    strict, plain, trusted = new_key("strict"), new_key("plain"), new_key("trusted")
    keys = keys_section({
        "strict-team": (strict, {}),
        "plain-team": (plain, {}),
        "trusted-team": (trusted, {"metadata": {"guardrails_policy": "off"}}),
    })  # fmt: skip
    policies = {"default": MASK, "strict": {"request": {"detectors": ["email"], "action": "block"}}, "off": {}}
    client, _ = await start(policies, before=("api_keys",), api_keys=keys, guardrails={"keys": {"strict-team": "strict"}})
    text = f"reply to {ALICE}"
    with pytest.raises(anthropic.BadRequestError if surface.startswith("messages") else openai.BadRequestError):
        await SURFACES[surface](client, text, False, strict)
    for key in (plain, trusted):
        assert (await SURFACES[surface](client, text, True, key)).text == f"emulated: {text}"
    sent = [orjson.dumps(body).decode() for body in received(*upstreams)]
    assert len(sent) == 2 and "reply to <EMAIL_1>" in sent[0] and f"reply to {ALICE}" in sent[1]


# --- a judge that times out -----------------------------------------------------------------

JUDGED = {"request": {"detectors": ["email", "injection"], "actions": {"PROMPT_INJECTION": "block"}}}


@pytest.mark.parametrize("surface", ["messages-native", "messages-translated", "responses"])
@pytest.mark.parametrize("mode", ["open", "closed"])
async def test_a_judge_that_times_out_follows_its_policy_on_every_chat_like_surface(aiohttp_client, make_config, upstreams, surface, mode):
    emulator, claude = upstreams
    toml = guarded(
        emulator, claude, {"default": {"request": {**JUDGED["request"], "on_judge_error": mode}}},
        guardrails={"judges": {"injection": {"model": "judge-model", "timeout_seconds": 0.2}}},
    ).replace('"anthropic"]', '"anthropic", "mock"]') + '[plugins.mock]\nmodels = ["judge-model"]\n'  # fmt: skip
    finished: list[dict[str, Any]] = []
    client = await aiohttp_client(create_app_for(make_config, toml, finished))
    text = f"summarise my week for {ALICE}\n#mock: delay_ms=5000"  # the mock judge answers in 5 s, past the 0.2 s timeout
    if mode == "open":
        answer = await SURFACES[surface](client, text, True)
        assert answer.text == f"emulated: {text}"
        assert "summarise my week for <EMAIL_1>" in orjson.dumps(received(emulator, claude)).decode()
    else:
        with pytest.raises(anthropic.InternalServerError if surface.startswith("messages") else openai.InternalServerError) as raised:
            await SURFACES[surface](client, text, False)
        assert raised.value.status_code == 503 and "judge injection timed out" in str(raised.value.body)
        assert received(emulator, claude) == []
    assert finished[-1]["annotations"]["guardrails_errors"] == [f"request:injection:{mode}"]
    assert 'hookgate_guardrails_judge_calls_total{judge="injection",outcome="timeout"} 1.0' in await (await client.get("/metrics")).text()


# --- Responses: a stored response is what its client got --------------------------------------


@json_and_stream
async def test_a_stored_response_holds_the_clients_values_and_its_chain_continues_with_the_same_placeholders(start, upstreams, stream):
    client, _ = await start({"default": MASK}, before=("memory_cache",))
    emulator, _ = upstreams
    async with _openai(client, "sk-client-test") as sdk:
        await sdk.responses.create(model="gpt-4o-mini", input=f"mail {ALICE} now")  # cached: the next one is a replay
        if stream:
            events = [event async for event in await sdk.responses.create(model="gpt-4o-mini", input=f"mail {ALICE} now", stream=True)]
            first_id = events[-1].response.id
        else:
            first_id = (await sdk.responses.create(model="gpt-4o-mini", input=f"mail {ALICE} now")).id
        assert emulator.stats.calls == 1, "the second was the cache's"
        stored = await sdk.responses.retrieve(first_id)
        assert stored.output_text == f"emulated: mail {ALICE} now", "what the client was given, not the upstream's placeholders"
        second = await sdk.responses.create(model="gpt-4o-mini", input=f"and {ALICE} again?", previous_response_id=first_id, stream=stream)
        if stream:
            second = [event async for event in second][-1].response
        assert second.output_text == f"emulated: and {ALICE} again?"
        assert (await sdk.responses.retrieve(second.id)).output_text == second.output_text
    # one value, one placeholder, in every turn of the chain the upstream sees
    assert [m["content"] for m in emulator.stats.requests[-1].body["messages"]] == [
        "mail <EMAIL_1> now", "emulated: mail <EMAIL_1> now", "and <EMAIL_1> again?",
    ]  # fmt: skip
