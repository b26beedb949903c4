"""request_store's row: whatever a client or an upstream sends, what is kept is bounded."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal

import orjson
import pytest

from hookgate.plugins.request_store import RequestStoreConfig
from hookgate.plugins.request_store_record import (
    MAX_ATTEMPTS,
    MAX_BODY_BYTES,
    MAX_ID_CHARS,
    MAX_LABEL_CHARS,
    MAX_NAME_CHARS,
    MAX_PHASES,
    AttemptRecord,
    RequestRecord,
    Timings,
    TokenCounts,
    bounded_body,
    bounded_text,
)

NOW = datetime(2025, 1, 1, tzinfo=timezone.utc)


def test_client_strings_are_cut_and_made_storable():
    record = RequestRecord(
        time=NOW, request_id="r" * 1000, status=200, key_id="k" * 1000, model="m" * 100_000, upstream_model="u" * 1000,
        provider="p" * 1000, surface="s" * 1000, error_code="e" * 1000, cache_status="X" * 100, cache_source="c" * 1000,
    )
    assert len(record.request_id) == len(record.key_id) == MAX_ID_CHARS
    assert len(record.model) == len(record.upstream_model) == MAX_NAME_CHARS
    assert len(record.provider) == len(record.surface) == len(record.error_code) == len(record.cache_source) == MAX_LABEL_CHARS
    assert len(record.cache_status) == 16
    assert bounded_text("a\x00b\ud800c", 100) == "a\ufffdb?c"
    assert bounded_text("héllo wörld", 5) == "héllo"
    bounded_text("\udcff" * 10, 100).encode("utf-8")  # encodable


def test_lists_are_capped_but_the_attempt_count_is_kept():
    record = RequestRecord(
        time=NOW, request_id="r", status=200,
        attempts=tuple(AttemptRecord("o" * 500, 200, 1.0) for _ in range(1000)),
        timings=Timings(total_ms=1.0, phases={f"phase-{n}" + "x" * 500: float(n) for n in range(1000)}),
    )
    assert record.attempt_count == 1000 and len(record.attempts) == MAX_ATTEMPTS
    assert all(len(a.outcome) == MAX_LABEL_CHARS for a in record.attempts)
    assert len(record.timings.phases) == MAX_PHASES and all(len(name) <= MAX_LABEL_CHARS for name in record.timings.phases)
    with pytest.raises(TypeError):
        record.timings.phases["injected"] = 1.0  # read-only: the frozen record cannot be edited through it


def test_numbers_from_an_upstream_are_clamped_to_what_the_columns_hold():
    record = RequestRecord(
        time=NOW, request_id="r", status=10_000,
        timings=Timings(total_ms=float("nan"), upstream_ms=float("inf"), ttft_ms=-5, phases={"a": float("nan"), "b": "2.5"}),
        tokens=TokenCounts(prompt=-3, completion=10**30, cached="12", reasoning="lots"),
        attempts=(AttemptRecord("ok", status=12345, duration_ms=float("-inf")),),
        cost_usd=Decimal("0.000000000049"),
    )
    assert record.status == 0
    assert (record.timings.total_ms, record.timings.upstream_ms, record.timings.ttft_ms) == (0.0, None, 0.0)
    assert dict(record.timings.phases) == {"b": 2.5}
    assert (record.tokens.prompt, record.tokens.completion, record.tokens.cached, record.tokens.reasoning) == (0, 2**53, 12, None)
    assert (record.attempts[0].status, record.attempts[0].duration_ms) == (None, None)
    assert record.cost_usd == Decimal("0.0000000000")  # quantized to 1e-10 (half-even)
    assert RequestRecord(time=NOW, request_id="r", status=200, cost_usd=Decimal("1.23456789012345")).cost_usd == Decimal("1.2345678901")
    assert RequestRecord(time=NOW, request_id="r", status=200, cost_usd=Decimal("NaN")).cost_usd is None
    assert RequestRecord(time=NOW, request_id="r", status=200, cost_usd=Decimal(-1)).cost_usd == 0


def test_times_are_utc():
    naive = RequestRecord(time=datetime(2025, 1, 1, 12), request_id="r", status=200)
    offset = RequestRecord(time=datetime(2025, 1, 1, 14, tzinfo=timezone(timedelta(hours=2))), request_id="r", status=200)
    assert naive.time == offset.time == datetime(2025, 1, 1, 12, tzinfo=timezone.utc) and offset.time.tzinfo is timezone.utc
    with pytest.raises(TypeError):
        RequestRecord(time="yesterday", request_id="r", status=200)  # type: ignore[arg-type]


def test_usage_in_openai_shape_becomes_token_counts():
    usage = {"prompt_tokens": 120, "completion_tokens": 30, "prompt_tokens_details": {"cached_tokens": 64},
             "completion_tokens_details": {"reasoning_tokens": 12}}
    assert TokenCounts.from_usage(usage) == TokenCounts(prompt=120, completion=30, cached=64, reasoning=12)
    assert TokenCounts.from_usage({"prompt_tokens": 5, "prompt_tokens_details": None}) == TokenCounts(prompt=5)
    assert TokenCounts.from_usage(None) == TokenCounts.from_usage("junk") == TokenCounts()  # type: ignore[arg-type]


def test_bodies_are_bounded_in_bytes_on_a_character_boundary():
    body = {"messages": [{"role": "user", "content": "é" * 1000}]}
    text, truncated = bounded_body(body, 101)
    assert truncated and len(text.encode()) <= 101 and text.startswith('{"messages"')
    whole, cut = bounded_body(body, 10_000)
    assert not cut and orjson.loads(whole) == body
    assert bounded_body(None, 100) == (None, False)
    assert bounded_body({"s": "\ud800"}, 100)[0] is not None  # orjson refuses lone surrogates: still stored
    assert bounded_body("x" * (MAX_BODY_BYTES * 2), MAX_BODY_BYTES * 4) == ("x" * MAX_BODY_BYTES, True)  # the hard ceiling
    huge = RequestRecord(time=NOW, request_id="r", status=200, request_body="y" * (MAX_BODY_BYTES + 10))
    assert len(huge.request_body) == MAX_BODY_BYTES and huge.bodies_truncated


def test_the_config_refuses_unknown_databases_and_keeps_the_url_secret():
    config = RequestStoreConfig(url="postgresql://gw:hunter2@db/requests")
    assert "hunter2" not in repr(config) and "hunter2" not in str(config.model_dump())
    for bad in ("mysql://x", "sqlite:///", "/tmp/requests.db"):
        with pytest.raises(ValueError):
            RequestStoreConfig(url=bad)
    with pytest.raises(ValueError):
        RequestStoreConfig(postgres_schema="Robert'); DROP TABLE students;--")
    with pytest.raises(ValueError):
        RequestStoreConfig(store_bodies_for_keys=["k" * 1000])


def test_bodies_are_kept_only_where_configured_and_within_the_configured_size():
    from hookgate.plugins.request_store import RequestStore

    store = RequestStore(RequestStoreConfig(url="sqlite:///unused.db", store_bodies_for_keys=["audited"], max_body_bytes=16))
    assert store.stores_bodies_for("audited") and not store.stores_bodies_for("other") and not store.stores_bodies_for(None)
    assert store.body({"content": "a long prompt that goes on"}) == ('{"content":"a lo', True)
    everyone = RequestStore(RequestStoreConfig(url="sqlite:///unused.db", store_bodies=True))
    assert everyone.stores_bodies_for(None) and everyone.stores_bodies_for("other")
