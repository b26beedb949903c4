"""request_store's databases: the same behaviour from SQLite (a temp file) and from a real
PostgreSQL (a fresh schema): migrations, round trips, filters, keyset pages, stats, retention."""
from __future__ import annotations

import asyncio
import math
from datetime import timedelta
from decimal import Decimal

import pytest
from pydantic import ValidationError

from hookgate import InvalidRequest
from hookgate.plugins.request_store_migrations import Migration, MigrationError, load_migrations
from hookgate.plugins.request_store_queries import OTHER_GROUP, NO_GROUP, RequestListQuery, StatsQuery, decode_cursor
from hookgate.plugins.request_store_record import MAX_NAME_CHARS, AttemptRecord, Timings
from request_store_support import T0, backend, database_url, make_backend, pg_schema, record, store_target  # noqa: F401


async def all_pages(backend, **filters) -> list[str]:
    ids, cursor = [], None
    while True:
        page = await backend.list_requests(RequestListQuery(cursor=cursor, **filters))
        ids += [r.request_id for r in page.items]
        if page.next_cursor is None:
            return ids
        cursor = page.next_cursor


# ---------------------------------------------------------------------------- migrations ---


async def test_migrations_apply_once_however_often_the_store_opens(make_backend):
    for _ in range(3):
        opened = make_backend()
        await opened.open()
        assert await opened.schema_version() == len(load_migrations(opened.dialect))
        await opened.close()
    opened = make_backend()
    await opened.open()
    await opened.insert([record(1)])
    assert (await opened.get_request("req-1")) == record(1)


async def test_instances_starting_together_migrate_exactly_once(make_backend, store_target):
    instances = [make_backend() for _ in range(4)]
    await asyncio.gather(*(i.open() for i in instances))  # every one succeeds
    versions = await version_rows(instances[0], store_target)
    assert versions == [(m.version, m.checksum) for m in load_migrations(instances[0].dialect)]
    await asyncio.gather(*(i.insert([record(n)]) for n, i in enumerate(instances)))
    assert sorted(await all_pages(instances[0])) == [f"req-{n}" for n in range(4)]


async def test_a_new_migration_is_applied_alone_and_an_edited_one_is_refused(make_backend, store_target):
    shipped = load_migrations(make_backend().dialect)
    await make_backend().open()
    extra = Migration(len(shipped) + 1, "surface_index", "CREATE INDEX request_store_requests_surface ON request_store_requests (surface);")
    upgraded = make_backend(migrations=(*shipped, extra))
    await upgraded.open()
    assert await upgraded.schema_version() == len(shipped) + 1
    assert [v for v, _ in await version_rows(upgraded, store_target)] == list(range(1, len(shipped) + 2))
    # Code that knows fewer migrations than the database has (a rolling deploy) still opens.
    older = make_backend(migrations=shipped)
    await older.open()
    await older.insert([record(1)])
    edited = Migration(1, shipped[0].name, shipped[0].sql + "\n-- edited\n")
    with pytest.raises(MigrationError, match="changed after it was applied"):
        await make_backend(migrations=(edited, *shipped[1:])).open()


async def version_rows(opened, store_target) -> list[tuple[int, str]]:
    if store_target["kind"] == "sqlite":
        rows = await opened.run_read(lambda c: c.execute("SELECT version, checksum FROM request_store_schema_version ORDER BY version").fetchall())
        return [tuple(r) for r in rows]
    return [tuple(r) for r in await opened.fetch("SELECT version, checksum FROM request_store_schema_version ORDER BY version")]


async def test_sqlite_runs_in_wal_mode(tmp_path):
    from hookgate.plugins.request_store_sqlite import SqliteBackend

    opened = SqliteBackend(tmp_path / "deep" / "requests.db")
    await opened.open()
    try:
        await opened.insert([record(1)])
        assert opened.journal_mode == "wal"
        assert (tmp_path / "deep" / "requests.db-wal").exists()
    finally:
        await opened.close()


# --------------------------------------------------------------------------- round trips ---


async def test_a_record_comes_back_exactly_as_it_was_stored(backend):
    original = record(
        7, error_code="rate_limited", status=429, cache_source="redis_cache",
        attempts=(AttemptRecord("http_503", 503, 120.25), AttemptRecord("ok", 200, 80.5)),
        request_body='{"model":"gpt-4o-mini"}', response_body='{"id":"x"}', bodies_truncated=True,
    )
    await backend.insert([original])
    stored = await backend.get_request("req-7")
    assert stored == original
    assert stored.cost_usd == Decimal("0.0000270") and stored.timings.phases["call_provider"] == 22.0
    assert await backend.get_request("req-unknown") is None


async def test_hostile_client_strings_are_stored_bounded(backend):
    hostile = "\x00evil\ud800" + "m" * 10_000
    await backend.insert([record(1, request_id="id\x00\udfff", model=hostile, key_id="k" * 500, surface="s\x00",
                                 timings=Timings(total_ms=1.0, phases={f"p{n}\x00": n for n in range(100)}),
                                 attempts=tuple(AttemptRecord("x" * 300, 200, 1.0) for _ in range(50)),
                                 request_body="body\x00\ud83d")])
    (stored,) = (await backend.list_requests(RequestListQuery())).items
    assert len(stored.model) == MAX_NAME_CHARS and stored.model.startswith("\ufffdevil?m")
    assert stored.request_id == "id\ufffd?" and len(stored.key_id) == 128 and stored.surface == "s\ufffd"
    assert len(stored.timings.phases) == 32 and len(stored.attempts) == 16 and stored.attempt_count == 50
    assert (await backend.get_request("id\ufffd?")).request_body == "body\ufffd?"


async def test_a_batch_is_written_whole(backend):
    await backend.insert([record(i) for i in range(1200)])
    assert len(await all_pages(backend, limit=500)) == 1200


# ------------------------------------------------------------------ filters and pages ---


@pytest.fixture
async def traffic(backend):
    """60 requests, one second apart: keys a/b/anonymous, two models, some errors, hits, costs."""
    rows = [
        record(
            i,
            key_id=(None, "alice", "bob")[i % 3],
            model="gpt-4o" if i % 4 == 0 else "gpt-4o-mini",
            status=500 if i % 10 == 0 else (429 if i % 10 == 5 else 200),
            cache_status=("HIT", "MISS", "BYPASS")[i % 3] if i % 2 else "MISS",
            cost_usd=Decimal(i) / 1000,
        )
        for i in range(60)
    ]
    await backend.insert(rows)
    return rows


def expected(rows, keep) -> list[str]:
    return [r.request_id for r in sorted(rows, key=lambda r: r.time, reverse=True) if keep(r)]


async def test_filters_select_exactly_the_matching_requests_newest_first(backend, traffic):
    cases = [
        ({}, lambda r: True),
        ({"key": "alice"}, lambda r: r.key_id == "alice"),
        ({"model": "gpt-4o"}, lambda r: r.model == "gpt-4o"),
        ({"status": 429}, lambda r: r.status == 429),
        ({"errors": True}, lambda r: r.status >= 400),
        ({"errors": False}, lambda r: r.status < 400),
        ({"cache": "HIT"}, lambda r: r.cache_status == "HIT"),
        ({"min_cost": Decimal("0.0405")}, lambda r: r.cost_usd >= Decimal("0.0405")),
        ({"since": T0 + timedelta(seconds=10), "until": T0 + timedelta(seconds=20)}, lambda r: 10 <= (r.time - T0).seconds < 20),
        ({"key": "bob", "model": "gpt-4o-mini", "errors": False, "since": T0 + timedelta(seconds=30)},
         lambda r: r.key_id == "bob" and r.model == "gpt-4o-mini" and r.status < 400 and (r.time - T0).seconds >= 30),
    ]
    for filters, keep in cases:
        assert await all_pages(backend, limit=7, **filters) == expected(traffic, keep), filters
    page = await backend.list_requests(RequestListQuery(limit=3))
    assert all(r.request_body is None for r in page.items)


async def test_pages_are_stable_while_new_requests_arrive_and_on_equal_times(backend, traffic):
    first = await backend.list_requests(RequestListQuery(limit=10))
    assert [r.request_id for r in first.items] == [f"req-{i}" for i in range(59, 49, -1)]
    await backend.insert([record(1000 + i, request_id=f"new-{i}") for i in range(5)])  # newer rows land meanwhile
    second = await backend.list_requests(RequestListQuery(limit=10, cursor=first.next_cursor))
    assert [r.request_id for r in second.items] == [f"req-{i}" for i in range(49, 39, -1)]
    # Twenty requests in the same microsecond page without loss or repetition.
    same = T0 + timedelta(days=1)
    await backend.insert([record(0, time=same, request_id=f"tie-{n}", key_id="tied") for n in range(20)])
    walked = await all_pages(backend, key="tied", limit=3)
    assert sorted(walked) == sorted(f"tie-{n}" for n in range(20)) and len(walked) == 20


async def test_a_cursor_that_the_store_did_not_make_is_refused(backend, traffic):
    for bad in ("garbage!", "MS4x", "x" * 100, "MS4tMS4y"):
        with pytest.raises(ValidationError):
            RequestListQuery(cursor=bad)
        with pytest.raises(InvalidRequest) as raised:
            decode_cursor(bad)
        assert raised.value.param == "cursor" and raised.value.status == 400
    with pytest.raises(ValidationError):
        RequestListQuery(limit=10_000)


async def test_sqlite_pages_by_index_range_never_by_offset(tmp_path):
    from hookgate.plugins.request_store_sql import SQLITE
    from hookgate.plugins.request_store_sqlite import SqliteBackend

    opened = SqliteBackend(tmp_path / "r.db")
    await opened.open()
    try:
        await opened.insert([record(i, key_id="alice") for i in range(50)])
        first = await opened.list_requests(RequestListQuery(limit=5))
        for filters in ({}, {"key": "alice"}):
            sql, params = SQLITE.list_sql(RequestListQuery(limit=5, cursor=first.next_cursor, **filters))
            plan = " ".join(str(r[-1]) for r in await opened.run_read(lambda c: c.execute("EXPLAIN QUERY PLAN " + sql, params).fetchall()))
            assert "USING INDEX" in plan and "TEMP B-TREE" not in plan and "OFFSET" not in sql.upper(), plan
    finally:
        await opened.close()


# ---------------------------------------------------------------------------------- stats ---


def nearest_rank(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p * len(ordered)) - 1)]


async def test_stats_count_errors_hits_latency_tokens_and_cost_per_bucket_and_group(backend, traffic):
    query = StatsQuery(since=T0, until=T0 + timedelta(minutes=2), bucket_seconds=30, group_by="key", top=10)
    stats = await backend.stats(query)
    for start in range(0, 60, 30):
        for group, key in (("alice", "alice"), ("bob", "bob"), (NO_GROUP, None)):
            rows = [r for r in traffic if r.key_id == key and start <= (r.time - T0).seconds < start + 30]
            (row,) = [s for s in stats.buckets if s.group == group and s.bucket == T0 + timedelta(seconds=start)]
            assert row.requests == len(rows)
            assert row.errors == sum(r.status >= 400 for r in rows)
            assert (row.cache_hits, row.cache_lookups) == (sum(r.cache_status == "HIT" for r in rows), sum(r.cache_status != "BYPASS" for r in rows))
            assert row.p50_ms == nearest_rank([r.timings.total_ms for r in rows], 0.5)
            assert row.p95_ms == nearest_rank([r.timings.total_ms for r in rows], 0.95)
            tokens = (row.prompt_tokens, row.completion_tokens, row.cached_tokens, row.reasoning_tokens)
            assert tokens == (100 * len(rows), 20 * len(rows), 10 * len(rows), 3 * len(rows))
            assert row.cost_usd == sum((r.cost_usd for r in rows), Decimal(0))
    assert len(stats.buckets) == 6  # buckets without traffic are absent
    totals = {t.group: t for t in stats.totals}
    assert {g: t.requests for g, t in totals.items()} == {"alice": 20, "bob": 20, NO_GROUP: 20}
    assert totals["alice"].p95_ms == nearest_rank([r.timings.total_ms for r in traffic if r.key_id == "alice"], 0.95)
    assert sum(t.cost_usd for t in stats.totals) == sum(r.cost_usd for r in traffic)


async def test_stats_name_the_top_groups_and_sum_the_rest(backend, traffic):
    await backend.insert([record(100 + i, model=f"rare-{i}") for i in range(5)])
    stats = await backend.stats(StatsQuery(since=T0, until=T0 + timedelta(hours=1), bucket_seconds=3600, group_by="model", top=2))
    assert {t.group: t.requests for t in stats.totals} == {"gpt-4o-mini": 45, "gpt-4o": 15, OTHER_GROUP: 5}
    ungrouped = await backend.stats(StatsQuery(since=T0, until=T0 + timedelta(hours=1), bucket_seconds=60, provider="openai"))
    assert [(b.bucket, b.requests) for b in ungrouped.buckets] == [(T0, 60), (T0 + timedelta(minutes=1), 5)]
    assert ungrouped.totals[0].requests == 65 and ungrouped.totals[0].hit_rate == pytest.approx(10 / 55)
    assert (await backend.stats(StatsQuery(since=T0, until=T0 + timedelta(hours=1), model="none-such"))).totals == ()


def test_stats_queries_are_bounded():
    with pytest.raises(ValidationError):
        StatsQuery(since=T0, until=T0 + timedelta(days=30), bucket_seconds=60)  # 43,200 buckets
    with pytest.raises(ValidationError):
        StatsQuery(top=1000)
    with pytest.raises(ValidationError):
        StatsQuery(since=T0, until=T0)


# ------------------------------------------------------------------------------ retention ---


async def test_prune_deletes_only_rows_older_than_the_cutoff_in_batches(backend, traffic):
    deleted = await backend.prune(T0 + timedelta(seconds=25), batch=4)
    assert deleted == 25
    remaining = await all_pages(backend, limit=100)
    assert remaining == [f"req-{i}" for i in range(59, 24, -1)]
    assert await backend.prune(T0 + timedelta(seconds=25), batch=4) == 0


async def test_the_store_prunes_old_rows_in_the_background_from_start_up(make_backend):
    from datetime import datetime, timezone

    from hookgate.plugins.request_store import RequestStore, RequestStoreConfig

    now = datetime.now(timezone.utc)
    seeding = make_backend()
    await seeding.open()
    await seeding.insert([record(i, time=now - timedelta(days=10, seconds=i), request_id=f"old-{i}") for i in range(30)])
    await seeding.insert([record(i, time=now - timedelta(days=2, seconds=i), request_id=f"recent-{i}") for i in range(5)])
    store = RequestStore(RequestStoreConfig(retention_days=7, prune_interval_s=3600), backend=make_backend())
    await store.start()
    try:
        async with asyncio.timeout(10):
            while store.pruner.runs == 0:
                await asyncio.sleep(0.01)
        assert store.pruner.last_pruned == 30
        assert sorted(await all_pages(store)) == sorted(f"recent-{i}" for i in range(5))
    finally:
        await store.close()


def test_a_busy_answer_to_wal_is_retried_within_the_busy_timeout_and_then_given_up(tmp_path):
    """SQLite may answer busy at once, without its busy handler, where waiting could deadlock."""
    import sqlite3

    from hookgate.plugins.request_store_sqlite import _ConnectionThread

    class Busy:
        def __init__(self, times: int) -> None:
            self.times = times

        def execute(self, sql: str):
            if self.times:
                self.times -= 1
                raise sqlite3.OperationalError("database is locked")
            return sqlite3.connect(":memory:").execute("SELECT 'wal'")

    thread = _ConnectionThread(tmp_path / "x.db", "t", busy_timeout_s=1.0, read_only=False)
    assert thread._wal(Busy(3)) == "wal"  # type: ignore[arg-type]
    never = _ConnectionThread(tmp_path / "x.db", "t", busy_timeout_s=0.05, read_only=False)
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        never._wal(Busy(10_000))  # type: ignore[arg-type]
