"""How much CPU one call through the official openai SDK costs, by calling style, against
hookgate's own http transport and a bare aiohttp call.

Starts the upstream emulator on another core, then makes the same chat request N times in a row
(after a warm-up) in each style and prints the client-side CPU time per call:

    python bench/sdk_call_cost.py [-n 2000]

This is the measurement behind the sdk transport calling the SDK's ``post()`` with bytes rather
than ``chat.completions.create()``, and behind the openai provider's default transport, "http"
(``hookgate.provider_kit.HTTPTransport``: the body and answer as bytes over a shared session). All traffic stays on 127.0.0.1; it stops by itself.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import time

import aiohttp
import httpx2
import openai
import orjson

from hookgate.http import HTTPService
from hookgate.provider_kit import HTTPTransport, OpenAIWireConfig

BODY = {
    "model": "gpt-4o-mini",
    "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello there how are you"}],
    "temperature": 0.2,
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def measure(url: str, n: int) -> None:
    client = openai.AsyncOpenAI(base_url=url, api_key="sk-bench", max_retries=0, http_client=openai.DefaultAioHttpClient())
    session = aiohttp.ClientSession()
    headers = {"Content-Type": "application/json"}

    async def sdk_create():
        raw = await client.chat.completions.with_raw_response.create(**BODY)
        return orjson.loads(raw.http_response.content)

    async def sdk_post_bytes():
        response = await client.post("/chat/completions", cast_to=httpx2.Response, content=orjson.dumps(BODY), options={"headers": headers})
        return orjson.loads(response.content)

    async def bare_aiohttp():
        async with session.post(url + "/chat/completions", data=orjson.dumps(BODY), headers={**headers, "Authorization": "Bearer sk-bench"}) as response:
            return orjson.loads(await response.read())

    http = HTTPService()
    transport = HTTPTransport("openai", OpenAIWireConfig(base_url=url, api_key="sk-bench"))
    await transport.start(http)

    async def hookgate_http():
        return await transport.post_json("/chat/completions", orjson.dumps(BODY))

    styles = [
        ("SDK chat.completions.with_raw_response.create()", sdk_create),
        ("SDK post() with orjson bytes (hookgate)", sdk_post_bytes),
        ("hookgate HTTPTransport.post_json() (transport = http)", hookgate_http),
        ("bare aiohttp ClientSession.post()", bare_aiohttp),
    ]
    for name, call in styles:
        for _ in range(min(200, n)):
            body = await call()
        assert body["choices"][0]["message"]["content"], body
        started = time.process_time()
        for _ in range(n):
            await call()
        print(f"{name:55s} {1e6 * (time.process_time() - started) / n:7.0f} us CPU per call")
    await session.close()
    await client.close()
    await http.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=2000, help="calls per style")
    args = parser.parse_args()
    port = free_port()
    pin = ["taskset", "-c", "1"] if os.cpu_count() and os.cpu_count() > 1 else []
    emulator = subprocess.Popen([*pin, sys.executable, "-m", "hookgate.testing.openai_emulator", "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        if pin:
            os.sched_setaffinity(0, {0})
        asyncio.run(measure(f"http://127.0.0.1:{port}/v1", args.n))
    finally:
        emulator.terminate()
        emulator.wait(timeout=10)


if __name__ == "__main__":
    main()
