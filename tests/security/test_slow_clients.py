"""Threat: clients that are slow on purpose hold the gateway's connections, memory and event loop.

Issue 10 item 1: a body was read with no deadline and before authentication. A client sending its
headers and never its body held a connection forever; 600 of them on a process limited to 512
open files made ``/healthz`` unreachable and wrote ~44,000 asyncio tracebacks (19 MB) in 10 s;
50 unauthenticated 4 MiB bodies held open pinned 207 MB. Against a real ``hookgate serve`` with
RLIMIT_NOFILE 512, api_keys on and a 1 s ``body_read_timeout_seconds``:

- a body that never comes, or comes a byte every 0.3 s, is a 408 in the OpenAI error shape
  within the deadline, and the connection is closed (after aiohttp's lingering read of what
  else comes, which ``serve`` bounds by the same deadline);
- 600 such clients at once: ``/healthz`` stays fast, every one of them gets a 408 (or a 503 past
  the bound on bodies read at once), and the log gets a line per interval, not a traceback per
  connection (``hookgate.logs.ConnectionFloodLog``, checked on its own below);
- unauthenticated clients get their 401 from the headers: their bodies are neither kept in
  memory nor parsed.
"""
from __future__ import annotations

import asyncio
import errno
import hashlib
import logging
import statistics
from time import perf_counter
from typing import Any

import aiohttp
import orjson
import psutil
import pytest

from hookgate.logs import ConnectionFloodLog
from servers import GatewayProcess, start_gateway

KEY = b"hg-slow-client-key"
DEADLINE = 1.0
OPEN_FILES = 512
CONFIG = f"""
[gateway]
pipeline = ["api_keys", "echo"]
body_read_timeout_seconds = {DEADLINE}
shutdown_grace_seconds = 2
log_format = "json"
[plugins.api_keys.keys.alice]
hash = "{hashlib.sha256(KEY).hexdigest()}"
"""
MiB = 1 << 20


@pytest.fixture(scope="module")
def server():
    gateway = start_gateway(CONFIG, open_file_limit=OPEN_FILES, log_to_file=True)
    yield gateway
    gateway.stop()


def head(*, key: bytes | None = KEY, length: int = 1000) -> bytes:
    auth = b"Authorization: Bearer " + key + b"\r\n" if key is not None else b""
    return (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
        + auth + b"Content-Length: " + str(length).encode() + b"\r\n\r\n"
    )  # fmt: skip


def parse(answer: bytes) -> tuple[int, dict[str, str], Any]:
    """Status, headers (lower-cased names) and JSON body of one HTTP/1.1 response."""
    top, _, body = answer.partition(b"\r\n\r\n")
    status_line, *header_lines = top.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in header_lines)
    return int(status_line.split()[1]), headers, orjson.loads(body) if body else None


async def slow_client(
    port: int, *, trickle: float | None = None, connected: list[int] | None = None, until_closed: bool = True
) -> tuple[bytes, float]:
    """Send a request's headers, then nothing (or one byte of the body every ``trickle`` s), and
    read what the server answers until it closes (or its first line only): (the answer, seconds
    from the headers to the answer's first line)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head())
    await writer.drain()
    started = perf_counter()
    if connected is not None:
        connected.append(1)

    async def drip() -> None:
        try:
            while True:
                await asyncio.sleep(trickle)
                writer.write(b" ")
                await writer.drain()
        except OSError:
            return  # the server closed the connection

    dripping = asyncio.create_task(drip()) if trickle else None
    try:
        status_line = await reader.readline()
        answered = perf_counter() - started
        return status_line + (await _rest_until_closed(reader) if until_closed else b""), answered
    finally:
        if dripping is not None:
            dripping.cancel()
        writer.close()


async def _rest_until_closed(reader: asyncio.StreamReader) -> bytes:
    """What comes until the server closes. A client still dripping its body when the server
    closes after its answer (and after lingering over what else came, as ``serve`` does for as
    long as the body's deadline) may have a byte in flight that the server never reads: the
    kernel then resets the connection instead of closing it. The answer had been sent; what of it
    arrived is kept (the flood below counts statuses, read before the rest)."""
    parts: list[bytes] = []
    try:
        while data := await reader.read(65536):
            parts.append(data)
    except ConnectionResetError:
        pass
    return b"".join(parts)


async def healthz_ms(port: int) -> float:
    started = perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n")
    await writer.drain()
    answer = await reader.read(-1)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 200")
    return (perf_counter() - started) * 1000


async def healthz_during(port: int, connected: list[int]) -> list[float]:
    """Milliseconds of 7 ``/healthz`` probes, 0.1 s apart, once most of a flood is connected (the
    kernel queues what the process has no descriptor for yet). The first may wait for asyncio to
    retry an accept() that failed with EMFILE (after 1 s)."""
    async with asyncio.timeout(5):
        while len(connected) < 400:
            await asyncio.sleep(0.01)
    probes = []
    for _ in range(7):
        probes.append(await asyncio.wait_for(healthz_ms(port), timeout=5))
        await asyncio.sleep(0.1)
    return probes


def assert_openai_error(body: Any) -> None:
    assert set(body) == {"error"} and set(body["error"]) >= {"message", "type", "param", "code"}


# ------------------------------------------------------------------------------ the deadline ---


@pytest.mark.parametrize("trickle", [None, 0.3], ids=["no body", "a byte every 0.3 s"])
async def test_a_body_that_does_not_arrive_in_time_is_a_408(server: GatewayProcess, trickle):
    started = perf_counter()
    answer, seconds = await asyncio.wait_for(slow_client(server.port, trickle=trickle), timeout=10)
    closed_after = perf_counter() - started
    status, headers, body = parse(answer)
    assert status == 408 and headers["connection"] == "close"
    assert_openai_error(body)
    assert "did not arrive within 1 s" in body["error"]["message"]
    assert DEADLINE <= seconds < DEADLINE + 0.5, f"cut off after {seconds:.2f} s"
    assert closed_after < 2 * DEADLINE + 0.5, f"connection held {closed_after:.2f} s"


async def test_600_slow_clients_leave_healthz_fast_and_the_log_short(server: GatewayProcess):
    assert server.log_path is not None
    logged_before = server.log_path.read_bytes()
    connected: list[int] = []
    flood = [asyncio.create_task(slow_client(server.port, trickle=0.3 if i % 2 else None, connected=connected)) for i in range(600)]
    probes = await healthz_during(server.port, connected)
    answers = await asyncio.wait_for(asyncio.gather(*flood), timeout=20)
    assert statistics.median(probes) < 100, f"/healthz took {probes} ms"
    statuses = [parse(answer)[0] for answer, _ in answers]
    assert set(statuses) <= {408, 503} and statuses.count(408) >= 256, sorted(set(statuses))  # 503: past the bodies read at once
    logged = server.log_path.read_bytes()[len(logged_before) :]
    assert b"Traceback" not in logged and logged.count(b"\n") <= 10 and len(logged) < 5000, logged[:2000]


async def test_slow_bodies_cannot_take_every_file_descriptor():
    """With a deadline longer than asyncio waits before retrying a failed accept() (1 s), the
    bodies past half the open-file limit are refused at once (503, connection closed), so the
    process keeps descriptors for other clients while the first 256 wait out their deadline."""
    patient = start_gateway(CONFIG.replace(f"= {DEADLINE}", "= 6"), open_file_limit=OPEN_FILES, log_to_file=True)
    try:
        connected: list[int] = []
        started = perf_counter()
        flood = [asyncio.create_task(slow_client(patient.port, connected=connected, until_closed=False)) for _ in range(600)]
        probes = await healthz_during(patient.port, connected)
        probed_within = perf_counter() - started
        answers = await asyncio.wait_for(asyncio.gather(*flood), timeout=20)
    finally:
        patient.stop()
    assert probed_within < 6, "the probes ran while the held bodies were still waited for"
    assert statistics.median(probes) < 100, f"/healthz took {probes} ms"
    refused = [seconds for answer, seconds in answers if answer.startswith(b"HTTP/1.1 503")]
    held = [seconds for answer, seconds in answers if answer.startswith(b"HTTP/1.1 408")]
    assert len(held) == OPEN_FILES // 2 and len(refused) == 600 - len(held)
    assert max(refused) < 3, "refused at once, not after the deadline"


async def test_bodies_past_the_bound_are_refused_and_the_rest_wait_their_deadline():
    """The same bound at a scale any machine can open: an open-file limit of 64 reads 32 bodies at
    once; of 40 clients that never send theirs, 32 wait out the deadline (408) and 8 are refused
    (503). A body read never waits for a slot."""
    small = start_gateway(CONFIG, open_file_limit=64, log_to_file=True)
    try:
        answers = await asyncio.wait_for(asyncio.gather(*(slow_client(small.port, until_closed=False) for _ in range(40))), timeout=20)
    finally:
        small.stop()
    refused = [seconds for answer, seconds in answers if answer.startswith(b"HTTP/1.1 503")]
    held = [seconds for answer, seconds in answers if answer.startswith(b"HTTP/1.1 408")]
    assert len(held) == 32 and len(refused) == 8
    assert max(refused) < DEADLINE, "refused at once, not after the deadline"


async def test_every_worker_logs_a_flood_in_a_line():
    workers = start_gateway(CONFIG, open_file_limit=256, log_to_file=True, workers=2)  # 600 > 2 × 256
    try:
        connected: list[int] = []
        flood = [asyncio.create_task(slow_client(workers.port, connected=connected)) for _ in range(600)]
        answers = await asyncio.wait_for(asyncio.gather(*flood), timeout=20)
    finally:
        logged = workers.stop().encode()
    assert {parse(answer)[0] for answer, _ in answers} <= {408, 503}
    assert b"Traceback" not in logged and 1 <= logged.count(b'"accept_failed"') <= 2, logged[:2000]


# ---------------------------------------------------------------------- unauthenticated bodies ---


async def test_50_unauthenticated_4_mib_bodies_held_open_do_not_pin_memory(server: GatewayProcess):
    process = psutil.Process(server.process.pid)
    before = process.memory_info().rss
    body = b"x" * (4 * MiB - 1)  # one byte short: the request is never complete

    async def held() -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(head(key=None, length=4 * MiB) + body)
        try:
            status_line = await reader.readline()
            await reader.read(-1)  # until the server has given up on the rest
        finally:
            writer.close()
        return status_line

    clients = [asyncio.create_task(held()) for _ in range(50)]
    peak = before
    while not all(client.done() for client in clients):
        peak = max(peak, process.memory_info().rss)
        await asyncio.sleep(0.02)
    assert {await client for client in clients} == {b"HTTP/1.1 401 Unauthorized\r\n"}
    grown = (peak - before) / MiB
    assert grown < 48, f"+{grown:.0f} MiB for 50 unauthenticated bodies (200 MiB if they were kept)"


async def test_an_unauthenticated_body_is_never_parsed(server: GatewayProcess):
    tiny = {"role": "user", "content": "x"}
    valid = orjson.dumps({"model": "echo", "messages": [tiny] * 130_000})  # ~4 MB, seconds to validate
    unparseable = b"{" * (4 * MiB - 1)
    async with aiohttp.ClientSession(headers={"Content-Type": "application/json"}) as session:
        started = perf_counter()

        async def post(data: bytes) -> int:
            async with session.post(f"{server.url}/v1/chat/completions", data=data) as response:
                return response.status

        statuses = await asyncio.gather(*(post(valid) for _ in range(3)), post(unparseable))
        seconds = perf_counter() - started
    assert statuses == [401, 401, 401, 401], "a parsed body would be a 400 for the last one"
    assert seconds < 1.0, f"{seconds:.2f} s for four unauthenticated 4 MB bodies"


# ---------------------------------------------------------------------------- the flood's log ---


class _Lines:
    """A structlog-shaped logger that keeps what it was given."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, dict[str, Any]]] = []

    def error(self, event: str, **fields: Any) -> None:
        self.lines.append((event, fields))

    warning = error


class _Secretive:
    def __repr__(self) -> str:
        return "<protocol carrying Authorization: Bearer hg-flood-secret>"


def _start_serving() -> None:
    """Named as asyncio's accept retry is."""


def test_a_flood_of_loop_errors_is_a_line_per_interval_without_secrets(monkeypatch, caplog):
    clock = [1000.0]
    monkeypatch.setattr("hookgate.logs.monotonic", lambda: clock[0])
    log = _Lines()
    loop = asyncio.new_event_loop()
    loop.set_exception_handler(ConnectionFloodLog(log, interval_seconds=10))
    emfile = {"message": "socket.accept() out of system resource", "exception": OSError(errno.EMFILE, "Too many open files"), "socket": _Secretive()}
    reset = {"message": "Fatal read error on socket transport", "exception": ConnectionResetError(errno.ECONNRESET, "Connection reset by peer"), "protocol": _Secretive()}
    try:
        for _ in range(5000):
            loop.call_exception_handler(emfile)
            loop.call_exception_handler(reset)
        # At shutdown, the accept() retries CPython scheduled find the listening socket closed.
        retry = asyncio.Handle(_start_serving, (), loop)
        loop.call_exception_handler({"message": "Exception in callback", "exception": ValueError("Invalid file descriptor: -1"), "handle": retry})
        clock[0] += 11
        loop.call_exception_handler(emfile)
        with caplog.at_level(logging.ERROR, logger="asyncio"):
            loop.call_exception_handler({"message": "Task exception was never retrieved", "exception": RuntimeError("a bug")})
    finally:
        loop.close()
    assert [(event, fields["suppressed"]) for event, fields in log.lines] == [("accept_failed", 0), ("connection_failed", 0), ("accept_failed", 5000)]
    assert log.lines[0][1]["error"] == "OSError EMFILE: Too many open files" and log.lines[0][1]["open_file_limit"] > 0
    assert log.lines[1][1]["error"] == "ConnectionResetError ECONNRESET: Connection reset by peer"
    assert "hg-flood-secret" not in repr(log.lines)
    assert [record.exc_info[0] for record in caplog.records] == [RuntimeError], "anything else is logged as asyncio logs it"
