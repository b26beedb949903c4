"""Threat: a body that is not what its ``Content-Encoding`` says crashes the edge.

Issue 10 item 5: ``Content-Encoding: gzip`` with a body that is not gzip was a 500. It is a 400
in the OpenAI error shape that names the problem, for every encoding aiohttp decodes, and a
real gzip body still works. (The other item-5 inputs are tested elsewhere: non-UTF-8
credentials in ``test_credentials.py``, ``/v1/usage?end=0001-01-01`` in
``test_admin_surfaces.py``, bodies in ``test_fuzz_requests.py``.)
"""
from __future__ import annotations

import gzip
import zlib

import orjson
import pytest

CHAT = orjson.dumps({"model": "echo", "messages": [{"role": "user", "content": "hi"}]})
ECHO = '[gateway]\npipeline = ["echo"]'


@pytest.mark.parametrize(
    "encoding, body",
    [
        ("gzip", CHAT),  # plain JSON, said to be gzip
        ("gzip", gzip.compress(CHAT)[:-12]),  # gzip cut short
        ("deflate", b"\x00not deflate at all"),
        ("gzip", b"\x1f\x8b" + b"\xff" * 200),  # a gzip magic number and garbage
    ],
)
async def test_a_body_that_is_not_its_content_encoding_is_a_400(gateway, encoding, body):
    client = await gateway(ECHO)
    response = await client.post("/v1/chat/completions", data=body, headers={"Content-Type": "application/json", "Content-Encoding": encoding})
    error = (await response.json())["error"]
    assert response.status == 400, error
    assert "Content-Encoding" in error["message"] and error["code"] == "invalid_body"
    assert set(error) >= {"message", "type", "param", "code"}
    assert (await client.get("/healthz")).status == 200


@pytest.mark.parametrize("encoding, compress", [("gzip", gzip.compress), ("deflate", zlib.compress)])
async def test_a_body_that_is_its_content_encoding_is_served(gateway, encoding, compress):
    client = await gateway(ECHO)
    response = await client.post("/v1/chat/completions", data=compress(CHAT), headers={"Content-Type": "application/json", "Content-Encoding": encoding})
    assert response.status == 200
