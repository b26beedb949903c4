"""The baseline for bench/overhead.py: a bare aiohttp forwarder, no plugins, body untouched.

POST /v1/chat/completions goes byte for byte to UPSTREAM/v1/chat/completions over one shared
ClientSession; JSON comes back whole, SSE chunk by chunk. GET /healthz answers 200. Server
settings match `hookgate serve` (uvloop if installed, handler cancellation, no access log).

    python bench/forwarder.py --port 8081 --upstream http://127.0.0.1:8001
"""

import argparse
import asyncio

from aiohttp import ClientSession, ClientTimeout, TCPConnector, web


async def forward(request: web.Request) -> web.StreamResponse:
    headers = {k: v for k, v in request.headers.items() if k.lower() in ("content-type", "authorization")}
    async with request.app["session"].post(request.app["url"], data=await request.read(), headers=headers) as up:
        if up.content_type != "text/event-stream":
            return web.Response(body=await up.read(), status=up.status, content_type=up.content_type)
        resp = web.StreamResponse(status=up.status, headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        async for chunk in up.content.iter_any():
            await resp.write(chunk)
        await resp.write_eof()
        return resp


async def session(app: web.Application):  # limit=0: the load's concurrency is the only bound
    async with ClientSession(connector=TCPConnector(limit=0), timeout=ClientTimeout(total=120)) as app["session"]:
        yield


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok")


def main() -> None:
    p = argparse.ArgumentParser(description="bare aiohttp forwarder (benchmark baseline)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--upstream", required=True, help="e.g. http://127.0.0.1:8001 (without /v1)")
    args = p.parse_args()
    app = web.Application()
    app["url"] = args.upstream.rstrip("/") + "/v1/chat/completions"
    app.cleanup_ctx.append(session)
    app.router.add_post("/v1/chat/completions", forward)
    app.router.add_get("/healthz", healthz)
    try:
        import uvloop

        loop = uvloop.new_event_loop()
    except ImportError:
        loop = asyncio.new_event_loop()
    web.run_app(app, host=args.host, port=args.port, handler_cancellation=True, access_log=None, print=None, loop=loop)


if __name__ == "__main__":
    main()
