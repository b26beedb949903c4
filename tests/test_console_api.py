"""The console's admin API end to end, on SQLite and on a real PostgreSQL: requests the gateway
served appear with their model, key, cache, attempts, phases, tokens and cost; filters, cursor
pages and stats add up; bad parameters are 400s naming them; the pipeline report masks secrets;
every admin route and page refuses a missing or non-admin key."""
from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from accounting_support import UPSTREAM_KEY, bearer, captured_logs  # noqa: F401  (captured_logs: autouse)
from console_support import ADMIN, ALICE, console_config, send, stored
from request_store_support import database_url, pg_schema  # noqa: F401

ADMIN_ROUTES = [
    ("GET", "/-/api/requests"), ("GET", "/-/api/requests/req-1"), ("GET", "/-/api/stats"), ("GET", "/-/api/pipeline"),
    ("GET", "/-/api/openapi.json"), ("GET", "/-/api/keys"), ("POST", "/-/api/keys"), ("GET", "/-/api/keys/alice"),
    ("PATCH", "/-/api/keys/alice"), ("DELETE", "/-/api/keys/alice"),
]
PAGES = ["/-/dashboard", "/-/dashboard/requests", "/-/dashboard/keys", "/-/dashboard/pipeline"]


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    """The request store's section: a SQLite file, or a fresh schema of the real PostgreSQL."""
    if request.param == "sqlite":
        return {"url": f"sqlite:///{tmp_path / 'requests.db'}"}
    return {"url": request.getfixturevalue("database_url"), "postgres_schema": request.getfixturevalue("pg_schema")}


async def admin_get(client, path: str, **params: str) -> Any:
    response = await client.get(path, params=params, headers=bearer(ADMIN))
    assert response.status == 200, await response.text()
    assert response.headers["Cache-Control"] == "no-store"
    return await response.json()


async def test_served_requests_are_listed_filtered_paged_and_detailed(gateway, store):
    client = await gateway(console_config(store))
    assert await send(client, 6, model="echo") == [200] * 6
    assert await send(client, 4, model="echo-large", key=ADMIN) == [200] * 4
    assert await send(client, 3, model="echo", distinct=False) == [200] * 3  # one MISS, two HITs
    unknown = await client.post("/v1/chat/completions", json={"model": "nope", "messages": [{"role": "user", "content": "x"}]},
                                headers=bearer(ALICE))
    assert unknown.status == 404

    rows = await stored(client, 14)
    assert [r["time"] for r in rows] == sorted((r["time"] for r in rows), reverse=True), "newest first"
    newest = rows[0]
    assert (newest["status"], newest["model"], newest["error_code"], newest["key_id"]) == (404, "nope", "model_not_found", "alice")
    assert newest["attempts"] == [] and newest["provider"] is None

    large = await stored(client, 4, model="echo-large")
    assert {(r["key_id"], r["provider"], r["cache"]["status"]) for r in large} == {("admin", "echo", "MISS")}
    assert len(await stored(client, 2, cache="HIT")) == 2
    assert len(await stored(client, 1, errors="true")) == 1
    assert len(await stored(client, 13, status="200")) == 13
    assert len(await stored(client, 4, min_cost="0.00001")) == 4, "echo-large's prices are ten times echo's"

    pages, cursor = [], None
    while True:
        page = await admin_get(client, "/-/api/requests", limit="5", **({"cursor": cursor} if cursor else {}))
        pages.append([r["id"] for r in page["data"]])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert [len(p) for p in pages] == [5, 5, 4]
    assert [i for p in pages for i in p] == [r["id"] for r in rows], "pages cover every row once, in order"

    served = large[0]
    detail = await admin_get(client, f"/-/api/requests/{served['id']}")
    assert detail["attempt_count"] == 1 and detail["attempts"][0]["outcome"] == "ok"
    assert {"authenticate", "before_request", "cache_lookup", "call_provider", "after_response"} <= set(detail["timings"]["phases"])
    assert detail["timings"]["total_ms"] >= detail["timings"]["phases"]["call_provider"] > 0
    assert detail["timings"]["ttft_ms"] is not None and detail["tokens"]["prompt"] > 0 and detail["tokens"]["completion"] > 0
    expected = (Decimal(detail["tokens"]["prompt"]) * 10 + Decimal(detail["tokens"]["completion"]) * 30) / 1_000_000
    assert Decimal(detail["cost_usd"]) == expected
    assert detail["bodies"] is None, "bodies are kept only when configured"
    hit = (await stored(client, 2, cache="HIT"))[0]
    assert (hit["cache"]["source"], hit["attempt_count"], Decimal(hit["cost_usd"])) == ("memory_cache", 0, 0)

    missing = await client.get("/-/api/requests/no-such-request", headers=bearer(ADMIN))
    assert missing.status == 404 and (await missing.json())["error"]["code"] == "request_not_found"


async def test_stats_add_up_by_bucket_model_and_key(gateway, store):
    client = await gateway(console_config(store))
    await send(client, 5, model="echo")
    await send(client, 3, model="echo-large", key=ADMIN)
    await send(client, 2, model="echo", distinct=False)
    await client.post("/v1/chat/completions", json={"model": "nope", "messages": [{"role": "user", "content": "x"}]}, headers=bearer(ALICE))
    rows = await stored(client, 11)

    stats = await admin_get(client, "/-/api/stats", bucket_seconds="60")
    total = stats["totals"][0]
    assert (total["group"], total["requests"], total["errors"]) == ("(all)", 11, 1)
    assert (total["cache_hits"], total["cache_lookups"]) == (1, 10), "the 404 never looked"
    assert total["hit_rate"] == pytest.approx(0.1)
    assert total["tokens"]["prompt"] == sum(r["tokens"]["prompt"] or 0 for r in rows)
    assert Decimal(total["cost_usd"]) == sum(Decimal(r["cost_usd"]) for r in rows if r["cost_usd"] is not None)
    assert sum(b["requests"] for b in stats["buckets"]) == 11
    latencies = sorted(r["timings"]["total_ms"] for r in rows)
    assert total["p50_ms"] == pytest.approx(latencies[5]) and total["p95_ms"] == pytest.approx(latencies[10])

    by_model = {row["group"]: row["requests"] for row in (await admin_get(client, "/-/api/stats", group_by="model"))["totals"]}
    assert by_model == {"echo": 7, "echo-large": 3, "nope": 1}
    by_key = {row["group"]: row["requests"] for row in (await admin_get(client, "/-/api/stats", group_by="key", top="1"))["totals"]}
    assert by_key == {"alice": 8, "(other)": 3}


@pytest.mark.parametrize("query, param", [
    ("limit=0", "limit"), ("limit=501", "limit"), ("cache=MAYBE", "cache"), ("since=yesterday", "since"),
    ("cursor=not-a-cursor!", "cursor"), ("colour=red", "colour"), ("limit=5&limit=6", "limit"), ("min_cost=-1", "min_cost"),
])
async def test_a_bad_list_parameter_is_a_400_naming_it(gateway, tmp_path, query, param):
    client = await gateway(console_config({"url": f"sqlite:///{tmp_path / 'r.db'}"}))
    response = await client.get(f"/-/api/requests?{query}", headers=bearer(ADMIN))
    body = await response.json()
    assert response.status == 400 and body["error"]["param"] == param, body


async def test_a_stats_range_of_too_many_buckets_is_a_400(gateway, tmp_path):
    client = await gateway(console_config({"url": f"sqlite:///{tmp_path / 'r.db'}"}))
    response = await client.get("/-/api/stats?bucket_seconds=1", headers=bearer(ADMIN))
    assert response.status == 400 and "buckets" in (await response.json())["error"]["message"]


async def test_every_admin_route_and_page_refuses_a_missing_or_non_admin_key(gateway, tmp_path):
    client = await gateway(console_config({"url": f"sqlite:///{tmp_path / 'r.db'}"}))
    for method, path in ADMIN_ROUTES:
        nobody = await client.request(method, path, json={})
        alice = await client.request(method, path, json={}, headers=bearer(ALICE))
        assert (nobody.status, alice.status) == (401, 403), (method, path)
        assert (await alice.json())["error"]["code"] == "admin_required"
    for page in PAGES:
        nobody, alice = await client.get(page), await client.get(page, headers=bearer(ALICE))
        assert (nobody.status, alice.status) == (401, 403), page
        assert 'data-view="login"' in await nobody.text() and 'data-view="denied"' in await alice.text()
        admin = await client.get(page, headers=bearer(ADMIN))
        assert admin.status == 200 and 'data-view="app"' in await admin.text()
        assert "script-src 'self'" in admin.headers["Content-Security-Policy"] and admin.headers["X-Frame-Options"] == "DENY"
    asset = await client.get("/-/dashboard/assets/app.js")
    assert asset.status == 200 and asset.headers["Content-Type"].startswith("text/javascript"), "assets are code, no data: public"


async def test_openapi_describes_every_admin_route(gateway, tmp_path):
    client = await gateway(console_config({"url": f"sqlite:///{tmp_path / 'r.db'}"}))
    document = await admin_get(client, "/-/api/openapi.json")
    assert document["openapi"].startswith("3.1")
    described = {(method.upper(), path) for path, operations in document["paths"].items() for method in operations}
    expected = {(m, p.replace("req-1", "{request_id}").replace("/alice", "/{key_id}")) for m, p in ADMIN_ROUTES}
    assert expected | {("POST", "/-/api/session"), ("GET", "/-/api/session"), ("DELETE", "/-/api/session")} == described
    listing = document["paths"]["/-/api/requests"]["get"]
    assert {p["name"] for p in listing["parameters"]} >= {"since", "until", "key", "model", "status", "errors", "cache", "min_cost", "limit", "cursor"}
    limit = next(p for p in listing["parameters"] if p["name"] == "limit")
    assert (limit["schema"]["minimum"], limit["schema"]["maximum"]) == (1, 500)
    create = document["paths"]["/-/api/keys"]["post"]
    assert create["requestBody"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/KeyCreate"}
    assert "KeyCreate" in document["components"]["schemas"] and "401" in create["responses"]
    assert document["paths"]["/-/api/keys/{key_id}"]["patch"]["parameters"][0]["name"] == "key_id"


async def test_the_pipeline_report_shows_order_and_rules_and_masks_every_secret(gateway, emulator, database_url, pg_schema):
    password_url = database_url.replace("postgresql://postgres@", "postgresql://postgres:hunter2-secret@")
    config = console_config(
        {"url": password_url, "postgres_schema": pg_schema},
        pipeline=["request_store", "api_keys", "token_counter", "cost", "memory_cache", "echo", "openai"],
        openai={"base_url": emulator.base_url, "api_key": UPSTREAM_KEY, "models": ["gpt-4o-mini"]},
    )
    client = await gateway(config)
    report = await admin_get(client, "/-/api/pipeline")
    assert report["pipeline"] == ["request_store", "api_keys", "token_counter", "cost", "memory_cache", "echo", "openai"]
    store_plugin = next(p for p in report["plugins"] if p["name"] == "request_store")
    assert "reads client_key in request_finished (the key id)" in store_plugin["rules"]
    assert report["hooks"]["request_finished"] == ["request_store"]
    text = str(report)
    for secret in (UPSTREAM_KEY, "hunter2-secret", ADMIN, ALICE):
        assert secret not in text
    assert "**********" in text


def masked_digits(side: str, body: Any) -> Any:
    """A redactor: every digit in the body's strings becomes '#'."""
    if isinstance(body, dict):
        return {key: masked_digits(side, value) for key, value in body.items()}
    if isinstance(body, list):
        return [masked_digits(side, value) for value in body]
    return re.sub(r"[0-9]", "#", body) if isinstance(body, str) else body


async def test_bodies_are_kept_only_for_configured_keys_and_through_the_redactor(gateway, tmp_path):
    from hookgate import hookimpl
    from hookgate.facts import BODY_REDACTOR
    from hookgate.rules import Produces

    class Redactor:
        """Stands in for the guardrails plugin: masks every digit of what is kept."""

        rules = (Produces(BODY_REDACTOR, "before_request"),)

        def __init__(self, config: Any) -> None:
            pass

        @hookimpl
        async def before_request(self, ctx):
            ctx[BODY_REDACTOR] = masked_digits

    config = console_config(
        {"url": f"sqlite:///{tmp_path / 'r.db'}"}, request_store={"store_bodies_for_keys": ["alice"], "max_body_bytes": 400},
        pipeline=["redactor", "request_store", "api_keys", "token_counter", "cost", "memory_cache", "echo"],
    )
    client = await gateway(config, local={"redactor": Redactor})
    await send(client, 1, key=ALICE, model="echo")  # "hello 0"
    await send(client, 1, key=ADMIN, model="echo-large")
    alice = (await stored(client, 1, key="alice"))[0]
    admin = (await stored(client, 1, key="admin"))[0]
    kept = (await admin_get(client, f"/-/api/requests/{alice['id']}"))["bodies"]
    assert '"hello #"' in kept["request"] and "hello 0" not in kept["request"]
    assert "echo: hello #" in kept["response"] and not kept["truncated"]
    assert (await admin_get(client, f"/-/api/requests/{admin['id']}"))["bodies"] is None


async def test_a_long_body_is_cut_to_max_body_bytes_and_marked(gateway, tmp_path):
    config = console_config({"url": f"sqlite:///{tmp_path / 'r.db'}"}, request_store={"store_bodies": True, "max_body_bytes": 200})
    client = await gateway(config)
    response = await client.post("/v1/chat/completions", json={"model": "echo", "messages": [{"role": "user", "content": "é" * 5000}]},
                                 headers=bearer(ALICE))
    assert response.status == 200
    row = (await stored(client, 1))[0]
    bodies = (await admin_get(client, f"/-/api/requests/{row['id']}"))["bodies"]
    assert bodies["truncated"] and len(bodies["request"].encode()) <= 200 and len(bodies["response"].encode()) <= 200


async def test_a_request_id_with_reserved_characters_is_found_by_its_quoted_id(gateway, tmp_path):
    from urllib.parse import quote

    client = await gateway(console_config({"url": f"sqlite:///{tmp_path / 'r.db'}"}))
    request_id = "team/run:1 #2?x=%"
    response = await client.post("/v1/chat/completions", json={"model": "echo", "messages": [{"role": "user", "content": "hi"}]},
                                 headers={**bearer(ALICE), "x-request-id": request_id})
    assert response.status == 200 and response.headers["x-request-id"] == request_id
    await stored(client, 1)
    detail = await client.get(f"/-/api/requests/{quote(request_id, safe='')}", headers=bearer(ADMIN))
    assert detail.status == 200, await detail.text()
    assert (await detail.json())["id"] == request_id
