"""The ``#mock:`` directive grammar (hookgate.testing.mock_directives), on its own."""
from __future__ import annotations

import pytest

from hookgate.testing.mock_directives import (
    MAX_DIRECTIVE_CHARS,
    DirectiveError,
    MockDirectives,
    directives_for,
    parse_directive_line,
    strip_directives,
)


def test_values_are_bare_words_or_json():
    pairs = parse_directive_line(' status=429 content="two \\"quoted\\" words" arguments={"city": "Paris", "n": [1, 2]} code=x-y')
    assert pairs == {"status": "429", "content": 'two "quoted" words', "arguments": {"city": "Paris", "n": [1, 2]}, "code": "x-y"}


def test_system_messages_then_the_last_user_message_later_wins():
    messages = [
        {"role": "system", "content": "Be kind.\n#mock: delay_ms=100 status=503"},
        {"role": "user", "content": "#mock: content=old\nearlier turn"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": [{"type": "text", "text": "#mock: status=429 retry_after=1.5"}, {"type": "text", "text": "now"}]},
    ]
    directives = directives_for(messages)
    assert (directives.delay_ms, directives.status, directives.retry_after, directives.content) == (100, 429, 1.5, None)


def test_tool_calls_take_names_or_none():
    assert directives_for([{"role": "user", "content": "#mock: tool_calls=a,b"}]).tool_calls == ("a", "b")
    assert directives_for([{"role": "user", "content": "#mock: tool_calls=none"}]).tool_calls == ()
    assert directives_for([{"role": "user", "content": "no directive"}]) == MockDirectives()


def test_a_json_content_value_is_sent_as_its_json_text():
    assert directives_for([{"role": "user", "content": '#mock: content={"a": 1}'}]).content == '{"a": 1}'


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("#mock: sttaus=500", "sttaus: unknown key"),
        ("#mock: status=abc", "status: Input should be a valid integer"),
        ("#mock: status=600", "status: Input should be less than or equal to 599"),
        ("#mock: content=\"unterminated", "content: not valid JSON"),
        ("#mock: status", "expected key=value"),
        ('#mock: content="a"status=500', "separate pairs with spaces"),
        ("#mock: content=" + "x" * MAX_DIRECTIVE_CHARS, "limited to"),
    ],
)
def test_a_bad_line_names_the_key_and_the_reason(line, reason):
    with pytest.raises(DirectiveError, match=reason):
        directives_for([{"role": "user", "content": line}])


def test_directive_lines_are_stripped_from_the_prompt():
    assert strip_directives("  #mock: status=500\nWhat is 2+2?\n#mock: delay_ms=1") == "What is 2+2?"
    assert strip_directives("a # mock: not a directive") == "a # mock: not a directive"
