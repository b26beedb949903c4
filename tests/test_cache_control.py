"""The request headers both caches read: Cache-Control and x-hookgate-cache-ttl."""
from __future__ import annotations

import pytest
from multidict import CIMultiDict

from hookgate.cache_control import CacheDirectives


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, CacheDirectives()),
        ({"Cache-Control": "no-cache"}, CacheDirectives(no_cache=True)),
        ({"cache-control": "No-Store, max-age=0"}, CacheDirectives(no_store=True)),
        ({"Cache-Control": 'no-cache="set-cookie", no-store'}, CacheDirectives(no_cache=True, no_store=True)),
        ({"Cache-Control": "no-cacheable"}, CacheDirectives()),
        ({"x-hookgate-cache-ttl": "2.5"}, CacheDirectives(ttl_seconds=2.5)),
        ({"x-hookgate-cache-ttl": "0"}, CacheDirectives()),
        ({"x-hookgate-cache-ttl": "-3"}, CacheDirectives()),
        ({"x-hookgate-cache-ttl": "inf"}, CacheDirectives()),
        ({"x-hookgate-cache-ttl": "soon"}, CacheDirectives()),
    ],
)
def test_directives(headers, expected):
    assert CacheDirectives.of(CIMultiDict(headers)) == expected


def test_every_cache_control_header_counts():
    headers = CIMultiDict([("Cache-Control", "max-age=0"), ("Cache-Control", "no-store")])
    assert CacheDirectives.of(headers).no_store


def test_a_plain_mapping_works_too():
    assert CacheDirectives.of({"Cache-Control": "no-cache"}).no_cache
