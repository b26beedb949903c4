"""The semantic cache's conversation partition: only the last user turn is compared by meaning;
every earlier turn must be identical for two conversations to share a partition."""
from __future__ import annotations

from hookgate.plugins.semantic_cache_partition import ConversationPartition, conversation_partition

SYSTEM = {"role": "system", "content": "You are the support assistant of Kestrel Bank."}


def chat(*turns: str, last: str = "Yes, cancel it please") -> list[dict]:
    messages = [SYSTEM]
    for index, text in enumerate(turns):
        messages.append({"role": "user" if index % 2 == 0 else "assistant", "content": text})
    messages.append({"role": "user", "content": last})
    return messages


STREAMING = ("I pay for Flickbox every month and want to stop it", "I can block future Flickbox payments. Shall I?")
GYM = ("My gym membership at IronWorks keeps renewing", "I can cancel the IronWorks membership. Shall I?")


def test_the_same_final_words_after_different_turns_are_different_partitions():
    streaming, gym = conversation_partition(chat(*STREAMING)), conversation_partition(chat(*GYM))
    assert streaming is not None and gym is not None
    assert streaming.last_user_text == gym.last_user_text == "Yes, cancel it please"
    assert streaming.prefix_hash != gym.prefix_hash


def test_identical_earlier_turns_share_a_partition_and_only_the_last_turn_is_compared():
    first = conversation_partition(chat(*STREAMING, last="Yes, cancel it please"))
    second = conversation_partition(chat(*STREAMING, last="yes please go ahead and cancel"))
    assert first is not None and second is not None
    assert first.prefix_hash == second.prefix_hash
    assert (first.last_user_text, second.last_user_text) == ("Yes, cancel it please", "yes please go ahead and cancel")
    assert len(first.prefix_hash) == 64 and int(first.prefix_hash, 16) >= 0


def test_the_system_prompt_and_every_field_of_earlier_turns_are_in_the_partition():
    base = chat(*STREAMING)
    other_system = [{"role": "system", "content": "You are the support assistant of Heron Bank."}, *base[1:]]
    named = [*base[:-1], {**base[-1], "name": "alice"}]
    with_tool_call = [*base[:2], {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function"}]}, *base[2:]]
    hashes = {conversation_partition(m).prefix_hash for m in (base, other_system, named, with_tool_call)}  # type: ignore[union-attr]
    assert len(hashes) == 4


def test_how_the_json_is_written_does_not_matter():
    base = chat(*STREAMING)
    reordered = [dict(reversed(list(message.items()))) for message in base]
    with_nulls = [{**message, "name": None} for message in base]
    hashes = {conversation_partition(m).prefix_hash for m in (base, reordered, with_nulls)}  # type: ignore[union-attr]
    assert len(hashes) == 1


def test_text_parts_are_joined_and_anything_else_is_left_to_the_exact_cache():
    parts = [*chat(*STREAMING)[:-1], {"role": "user", "content": [{"type": "text", "text": "Yes,"}, {"type": "text", "text": "cancel it"}]}]
    assert conversation_partition(parts) == ConversationPartition(conversation_partition(parts).prefix_hash, "Yes,\ncancel it")  # type: ignore[union-attr]

    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    assert conversation_partition([{"role": "user", "content": [{"type": "text", "text": "what is this?"}, image]}]) is None
    assert conversation_partition([]) is None
    assert conversation_partition([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Hello!"}]) is None
    assert conversation_partition([{"role": "user", "content": "   "}]) is None
    assert conversation_partition([{"role": "tool", "content": "42", "tool_call_id": "c1"}]) is None
    assert conversation_partition(["not a message"]) is None  # type: ignore[list-item]
    assert conversation_partition([{"role": "user", "content": 42}]) is None
