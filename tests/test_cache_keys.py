"""The cache key covers everything that changes the answer and nothing that does not."""
from __future__ import annotations

import pytest

from hookgate import RequestContext, cache_key

BASE = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "temperature": 0.5}


class FakeProvider:
    def __init__(self, name: str) -> None:
        self.name = name


def key(body: dict, *, api_key: str | None = None, provider: str = "p", shared: bool = False) -> str:
    ctx = RequestContext(request_id="r", body=body, headers={}, api_key=api_key, provider=FakeProvider(provider))  # type: ignore[arg-type]
    return cache_key(ctx, shared=shared)


@pytest.mark.parametrize(
    "same",
    [
        {**BASE, "stream": True, "stream_options": {"include_usage": True}},
        {**BASE, "user": "someone", "metadata": {"trace": "x"}, "store": True},
        {**BASE, "seed": None},
        dict(reversed(list(BASE.items()))),
        {**BASE, "messages": [{"content": "hi", "role": "user"}]},
    ],
)
def test_what_does_not_change_the_answer_does_not_change_the_key(same):
    assert key(same) == key(BASE)


def test_integral_floats_equal_ints():
    assert key({**BASE, "temperature": 1.0}) == key({**BASE, "temperature": 1})


@pytest.mark.parametrize(
    "different",
    [
        {**BASE, "temperature": 0.7},
        {**BASE, "model": "other"},
        {**BASE, "messages": [{"role": "user", "content": "hi!"}]},
        {**BASE, "messages": [{"role": "system", "content": "hi"}]},
        {**BASE, "top_p": 0.9},
        {**BASE, "seed": 1},
        {**BASE, "max_tokens": 10},
        {**BASE, "stop": ["\n"]},
        {**BASE, "n": 2},
        {**BASE, "tools": [{"type": "function", "function": {"name": "f"}}]},
        {**BASE, "tool_choice": "required"},
        {**BASE, "response_format": {"type": "json_object"}},
        {**BASE, "a_parameter_invented_tomorrow": 1},
    ],
)
def test_what_changes_the_answer_changes_the_key(different):
    assert key(different) != key(BASE)


def test_the_serving_provider_is_part_of_the_key():
    assert key(BASE, provider="a") != key(BASE, provider="b")


def test_keys_are_scoped_per_tenant_unless_shared():
    assert key(BASE, api_key="sk-a") != key(BASE, api_key="sk-b")
    assert key(BASE, api_key="sk-a", shared=True) == key(BASE, api_key="sk-b", shared=True)


def test_the_key_is_versioned_and_never_contains_the_client_key():
    k = key(BASE, api_key="sk-secret-abc")
    assert k.startswith("hookgate:cache:v2:")
    assert "sk-secret-abc" not in k
