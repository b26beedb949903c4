"""The semantic cache's hard partition and eligibility: what must be identical for a cached answer
to be a candidate, and which requests are never compared by meaning."""
from __future__ import annotations

from typing import Any

import pytest

from hookgate import ClientKey, RequestContext
from hookgate.facts import CLIENT_KEY
from hookgate.plugins.semantic_cache_scope import Ineligible, SemanticScope, answer_text, scope_of

BASE: dict[str, Any] = {
    "model": "gpt-4o-mini",
    "temperature": 0,
    "messages": [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "How do I reset my password?"}],
}


def scope(body: dict[str, Any] | None = None, *, surface: str = "chat.completions", tenant: str | None = "team-a", key: ClientKey | None = None, model_id: str = "m1", **options: Any) -> SemanticScope | Ineligible:
    ctx = RequestContext(request_id="r", body=body or BASE, headers={}, surface=surface, tenant=tenant)
    if key is not None:
        ctx[CLIENT_KEY] = key
    settings = {"model_id": model_id, "shared": False, "max_temperature": 1.0, "temperature_override_label": "any_temp", "max_prompt_chars": 2000}
    return scope_of(ctx, **{**settings, **options})


def with_(**changes: Any) -> dict[str, Any]:
    return {**BASE, **changes}


def partition(*args: Any, **kwargs: Any) -> str:
    result = scope(*args, **kwargs)
    assert isinstance(result, SemanticScope), result
    return result.partition


def test_only_the_last_user_turn_is_compared_and_everything_else_is_the_partition():
    result = scope()
    assert isinstance(result, SemanticScope) and result.text == "How do I reset my password?" and result.namespace == "team-a"
    paraphrase = with_(messages=[BASE["messages"][0], {"role": "user", "content": "How can I reset my password?"}])
    assert partition(paraphrase) == partition()


@pytest.mark.parametrize(
    "changed",
    [
        with_(temperature=0.2),
        with_(max_tokens=50),
        with_(top_p=0.5),
        with_(seed=7),
        with_(stop=["\n"]),
        with_(n=2),
        with_(model="gpt-4o"),
        with_(response_format={"type": "json_object"}),
        with_(tools=[{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]),
        with_(tool_choice="none"),
        with_(messages=[{"role": "system", "content": "You are verbose."}, BASE["messages"][1]]),
        with_(messages=[BASE["messages"][0], {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}, BASE["messages"][1]]),
        with_(messages=[BASE["messages"][0], {**BASE["messages"][1], "name": "bob"}]),
        with_(future_parameter=True),  # a parameter the API adds tomorrow: stricter, never wrong
    ],
    ids=["temperature", "max_tokens", "top_p", "seed", "stop", "n", "model", "response_format", "tools", "tool_choice", "system", "earlier_turns", "name", "unknown"],
)
def test_anything_that_changes_the_answer_changes_the_partition(changed):
    assert partition(changed) != partition()


def test_surface_embedding_model_and_tenant_each_change_the_partition_or_namespace():
    assert partition(surface="anthropic.messages") != partition()
    assert partition(model_id="m2") != partition()
    other = scope(tenant="team-b")
    assert isinstance(other, SemanticScope) and other.namespace_id != scope().namespace_id  # type: ignore[union-attr]
    shared = scope(tenant="team-b", shared=True)
    assert isinstance(shared, SemanticScope) and shared.namespace == "shared"
    assert scope(tenant=None).namespace == "anon"  # type: ignore[union-attr]


def test_fields_that_do_not_change_the_answer_keep_the_partition():
    assert partition(with_(stream=True, stream_options={"include_usage": True}, user="u-1", metadata={"a": "b"})) == partition()


@pytest.mark.parametrize(
    "body, options, reason",
    [
        (with_(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:,"}}]}]), {}, Ineligible.NOT_TEXT),
        (with_(messages=[{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hel"}]), {}, Ineligible.NOT_TEXT),
        (with_(messages=[{"role": "user", "content": "   "}]), {}, Ineligible.NOT_TEXT),
        (with_(messages="not a list"), {}, Ineligible.NOT_TEXT),
        (with_(temperature=1.3), {}, Ineligible.TEMPERATURE),
        ({k: v for k, v in BASE.items() if k != "temperature"}, {"max_temperature": 0.5}, Ineligible.TEMPERATURE),
        (with_(messages=[{"role": "user", "content": "x" * 2001}]), {}, Ineligible.TOO_LONG),
    ],
    ids=["image", "prefilled_assistant", "blank", "malformed", "hot", "default_temperature_is_1", "too_long"],
)
def test_requests_that_are_never_compared_by_meaning(body, options, reason):
    assert scope(body, **options) is reason


def test_only_chat_like_surfaces_are_served():
    assert scope(surface="embeddings") is Ineligible.SURFACE
    for surface in ("chat.completions", "anthropic.messages", "responses"):
        assert isinstance(scope(surface=surface), SemanticScope)


def test_a_key_can_be_allowed_any_temperature():
    hot = with_(temperature=1.5)
    assert scope(hot, key=ClientKey(id="k", metadata={"any_temp": "true"}), tenant="k") != Ineligible.TEMPERATURE
    assert scope(hot, key=ClientKey(id="k", metadata={"any_temp": "no"}), tenant="k") is Ineligible.TEMPERATURE


def answer(message: dict[str, Any]) -> dict[str, Any]:
    return {"choices": [{"index": 0, "message": {"role": "assistant", **message}, "finish_reason": "stop"}]}


def test_only_plain_text_answers_are_cacheable():
    assert answer_text(answer({"content": "Use Settings."})) == "Use Settings."
    assert answer_text(answer({"content": None, "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]})) is None
    assert answer_text(answer({"content": None, "refusal": "I can't help with that."})) is None
    assert answer_text(answer({"content": "  "})) is None
    assert answer_text({"choices": []}) is None and answer_text({}) is None
