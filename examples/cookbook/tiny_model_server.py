"""A tiny model server with an HTTP API of its own: what ``http_model_provider`` talks to.

It stands for any model server that does not speak OpenAI's API (a research server, an in-house
inference service). Its API:

``POST /generate`` with ``{"model", "prompt", "max_new_tokens", "stream"}``:

* ``stream: false``: ``{"text", "prompt_tokens", "completion_tokens", "stop_reason"}``, with
  ``stop_reason`` ``"end"`` or ``"max_tokens"``;
* ``stream: true``: newline-delimited JSON, ``{"token": "..."}`` per token, then
  ``{"done": true, "prompt_tokens", "completion_tokens", "stop_reason"}``;
* errors: ``{"error": {"message": "..."}}`` with the status (429 with ``Retry-After``).

The "model" answers with the last line of the prompt (without a ``speaker:`` in front), one word
per token. ``faults`` scripts the
next answers' statuses (tests), ``calls`` counts requests. Run it alone with
``python examples/cookbook/tiny_model_server.py [PORT]``.
"""
from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass, field

from aiohttp import web

__all__ = ["TinyModelServer"]


@dataclass
class TinyModelServer:
    """The server's state: scripted faults, a call counter, and where it listens once started."""

    faults: list[int] = field(default_factory=list)
    """Statuses to answer the next requests with, in order (then it answers normally)."""
    calls: int = 0
    url: str = ""
    _runner: web.AppRunner | None = None

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/generate", self.generate)
        return app

    async def generate(self, request: web.Request) -> web.StreamResponse:
        self.calls += 1
        if self.faults:
            status = self.faults.pop(0)
            headers = {"Retry-After": "1"} if status == 429 else {}
            return web.json_response({"error": {"message": f"scripted failure {status}"}}, status=status, headers=headers)
        try:
            body = await request.json()
            prompt, limit = str(body["prompt"]), int(body.get("max_new_tokens", 256))
        except (ValueError, KeyError, TypeError):
            return web.json_response({"error": {"message": "expected {prompt, max_new_tokens}"}}, status=400)
        last_line = prompt.strip().splitlines()[-1] if prompt.strip() else ""
        words = re.sub(r"^\w+:\s*", "", last_line).split()
        tokens, stop = (words[:limit], "max_tokens") if len(words) > limit else (words, "end")
        usage = {"prompt_tokens": len(prompt.split()), "completion_tokens": len(tokens), "stop_reason": stop}
        if not body.get("stream"):
            return web.json_response({"text": " ".join(tokens), **usage})
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)
        for index, token in enumerate(tokens):
            await response.write((json.dumps({"token": token if index == 0 else " " + token}) + "\n").encode())
        await response.write((json.dumps({"done": True, **usage}) + "\n").encode())
        await response.write_eof()
        return response

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Listen (port 0: any free one) and return the base URL."""
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        bound_host, bound_port = self._runner.addresses[0][:2]
        self.url = f"http://{bound_host}:{bound_port}"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


if __name__ == "__main__":
    web.run_app(TinyModelServer().app(), host="127.0.0.1", port=int(sys.argv[1]) if len(sys.argv) > 1 else 8100)
