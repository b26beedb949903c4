"""What the guardrails plugin costs a request: CPU with it on and off, the added time to first
token of a stream, and where scanning moves off the event loop.

    python bench/guardrails_cpu.py [--rounds 3] [--small 200] [--large 10] [--streams 8]

1. **CPU per request**, JSON, 1 KB and 100 KB prompts (prose with a finding every ~250
   characters: e-mail addresses, phones, cards…), through a real gateway (aiohttp on the
   loopback) to the OpenAI emulator, all in this process: ``time.process_time()`` per request,
   so worker threads count too. Pipelines: ``openai`` alone (off); ``guardrails`` with the default
   policy (request side: mask personal data and credentials); and with an answer side too (the
   emulator echoes the prompt, so the answer is as large as the prompt and scanned again). The
   difference to "off" is what guardrails adds. Median of ``--rounds``, configurations interleaved.
2. **Added time to first token**, in seconds: streams from an emulator sending one word per chunk
   every 20 ms (about 50 tokens/s), time until the first non-empty content delta reaches the
   client, off vs. restoring placeholders only vs. an answer side with a hold-back window of
   64 / 128 characters. Median of ``--streams`` streams per configuration.
3. **Inline or off the loop**: CPU of one request-side scan by text size, and the longest the
   event loop waits while it runs inline or on a worker thread. Detectors are pure Python and
   ``re`` (they hold the GIL), so a worker thread only helps once a scan outlasts the
   interpreter's switch interval (5 ms): below that it stalls the loop as long, plus the hop.

Loopback only; each loop stops after its count (well under a minute on a quiet machine).
"""
from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import orjson
from aiohttp.test_utils import TestClient, TestServer

from hookgate.config import load_config
from hookgate.plugins.guardrails import GuardrailsConfig, build_detectors, mask_by_action
from hookgate.plugins.guardrails_masking import chat_request_fields
from hookgate.plugins.guardrails_policies import DetectorFailure, GuardedDetector, RequestPolicy
from hookgate.server import create_app
from hookgate.testing.openai_emulator import EmulatorSettings, OpenAIEmulator

PROSE = (
    "The quarterly review covered the migration plan, the budget for the new region and the "
    "hiring schedule. Every team reported its progress, risks and the help it needs next month. "
)
FINDINGS = [
    "jane.doe@example.org", "+1 415-555-2671", "4111 1111 1111 1111", "GB82 WEST 1234 5698 7654 32",
    "536-22-8726", "sk-proj-AbCdEf1234567890abcdefGHIJKLmnopqrstuv12", "postgres://app:s3cret@db/x",
]
ANSWER_SIDE = '''
[plugins.guardrails.policies.default.request]
detectors = ["email", "phone", "payment_card", "iban", "national_id", "credentials"]
[plugins.guardrails.policies.default.answer]
detectors = ["email", "phone", "payment_card", "iban", "national_id", "credentials"]
'''
CPU_CONFIGS = {
    "off": ("[]", ""),
    "guardrails, request side": ('["guardrails"]', ""),
    "guardrails, request + answer": ('["guardrails"]', ANSWER_SIDE),
}


def prompt(chars: int) -> str:
    parts, size, i = [], 0, 0
    while size < chars:
        piece = PROSE + f"Contact {FINDINGS[i % len(FINDINGS)]} today. "
        parts.append(piece)
        size += len(piece)
        i += 1
    return "".join(parts)[:chars]


def config_text(emulator: OpenAIEmulator, plugins: str, extra: str) -> str:
    pipeline = orjson.loads(plugins) + ["openai"]
    return textwrap.dedent(f"""
        [gateway]
        log_level = "warning"
        pipeline = {orjson.dumps(pipeline).decode()}
        max_body_bytes = 4194304
        [plugins.openai]
        base_url = "{emulator.base_url}"
        api_key = "sk-bench"
        models = ["gpt-4o-mini"]
    """) + textwrap.dedent(extra)


async def client_for(text: str, workdir: Path, name: str) -> TestClient:
    path = workdir / f"{name}.toml"
    path.write_text(text)
    client = TestClient(TestServer(create_app(load_config(path))))
    await client.start_server()
    return client


async def cpu_per_request(client: TestClient, body: dict[str, Any], requests: int) -> float:
    started = time.process_time()
    for _ in range(requests):
        response = await client.post("/v1/chat/completions", json=body)
        assert response.status == 200, await response.text()
        await response.read()
    return (time.process_time() - started) / requests * 1000


async def first_token_seconds(client: TestClient, body: dict[str, Any]) -> float:
    started = time.perf_counter()
    response = await client.post("/v1/chat/completions", json=body)
    assert response.status == 200
    first = None
    async for line in response.content:
        if first is None and line.startswith(b"data: {"):
            chunk = orjson.loads(line[6:])
            if any(c.get("delta", {}).get("content") for c in chunk.get("choices") or ()):
                first = time.perf_counter() - started
    assert first is not None
    return first


async def measure_cpu(args: argparse.Namespace, workdir: Path) -> None:
    print(f"1. CPU ms per request (process CPU: client, gateway, emulator; median of {args.rounds} rounds)")
    sizes = {"1 KB": (1_000, args.small), "100 KB": (100_000, args.large)}
    async with OpenAIEmulator(EmulatorSettings(record_requests=False)).serve() as emulator:
        clients = {name: await client_for(config_text(emulator, *spec), workdir, f"cpu{i}") for i, (name, spec) in enumerate(CPU_CONFIGS.items())}
        try:
            results: dict[tuple[str, str], list[float]] = {}
            for label, (chars, requests) in sizes.items():
                body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": prompt(chars)}]}
                for client in clients.values():
                    await cpu_per_request(client, body, 2)  # warm-up
                for _ in range(args.rounds):
                    for name, client in clients.items():
                        results.setdefault((name, label), []).append(await cpu_per_request(client, body, requests))
            print(f"   {'':<32}" + "".join(f"{label:>16}" for label in sizes))
            for name in clients:
                row = "".join(f"{statistics.median(results[(name, label)]):>13.2f} ms" for label in sizes)
                print(f"   {name:<32}{row}")
            for name in list(clients)[1:]:
                row = "".join(
                    f"{statistics.median(results[(name, label)]) - statistics.median(results[('off', label)]):>+13.2f} ms" for label in sizes
                )
                print(f"   {'  added by ' + name.split(', ', 1)[1]:<32}{row}")
        finally:
            for client in clients.values():
                await client.close()


async def measure_ttft(args: argparse.Namespace, workdir: Path) -> None:
    chunk_seconds = 0.02
    print(f"\n2. time to first token of a stream, seconds (one word per chunk every {chunk_seconds * 1000:.0f} ms; median of {args.streams})")
    policies = {
        "off": ("[]", ""),
        "restore only (request masked)": ('["guardrails"]', '[plugins.guardrails.policies.default.request]\ndetectors = ["email"]\n'),
        "answer side, hold_back 64": ('["guardrails"]', _answer_policy(64)),
        "answer side, hold_back 128": ('["guardrails"]', _answer_policy(128)),
    }
    words = " ".join(f"word{i}" for i in range(80))
    body = {"model": "gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": f"mail jane.doe@example.org {words}"}]}
    async with OpenAIEmulator(EmulatorSettings(record_requests=False, chunk_latency=chunk_seconds)).serve() as emulator:
        clients = {name: await client_for(config_text(emulator, *spec), workdir, f"ttft{i}") for i, (name, spec) in enumerate(policies.items())}
        try:
            seconds: dict[str, list[float]] = {name: [] for name in clients}
            for _ in range(args.streams):
                for name, client in clients.items():
                    seconds[name].append(await first_token_seconds(client, body))
            base = statistics.median(seconds["off"])
            for name, values in seconds.items():
                median = statistics.median(values)
                print(f"   {name:<32}{median:>8.3f} s   added {median - base:>+7.3f} s")
        finally:
            for client in clients.values():
                await client.close()


def _answer_policy(hold_back: int) -> str:
    return (
        '[plugins.guardrails.policies.default.request]\ndetectors = ["email"]\n'
        '[plugins.guardrails.policies.default.answer]\ndetectors = ["email", "phone", "payment_card", "credentials"]\n'
        f"hold_back_chars = {hold_back}\n"
    )


async def measure_threshold(args: argparse.Namespace) -> None:
    print("\n3. one request-side scan (default policy) by text size: its CPU, and the longest the event loop")
    print("   waits while it runs inline or on a worker thread (a ticker task measures the gaps); median of 5")
    config = GuardrailsConfig()
    detectors = build_detectors(config)
    side: RequestPolicy = config.policies["default"].request  # type: ignore[assignment]

    def work(body: dict[str, Any], fields: list[Any]) -> None:
        failures: list[DetectorFailure] = []
        guarded = [GuardedDetector(d, n, min_confidence=0, fail_open=False, failures=failures) for n, d in detectors.items()]
        mask_by_action(body, fields, guarded, side.action_for)

    print(f"   {'chars':>8}{'CPU':>12}{'stall inline':>16}{'stall offloaded':>18}")
    for chars in (1024, 4096, 16384, 100_000):
        body = {"model": "m", "messages": [{"role": "user", "content": prompt(chars)}]}
        fields = chat_request_fields(body)
        cpu, inline, offloaded = [], [], []
        for _ in range(5):
            started = time.thread_time()
            work(body, fields)
            cpu.append(time.thread_time() - started)
            inline.append(await _loop_stall(lambda: work(body, fields)))
            offloaded.append(await _loop_stall(lambda: asyncio.to_thread(work, body, fields)))
        print(
            f"   {chars:>8}{statistics.median(cpu) * 1000:>9.2f} ms{statistics.median(inline) * 1000:>13.2f} ms"
            f"{statistics.median(offloaded) * 1000:>15.2f} ms"
        )
    hops = []
    for _ in range(200):
        started_cpu = time.process_time()
        await asyncio.to_thread(int)
        hops.append(time.process_time() - started_cpu)
    print(
        f"   one to_thread hop: {statistics.median(hops) * 1000:.3f} ms CPU; "
        f"default offload_above_chars = {GuardrailsConfig().offload_above_chars}"
    )


async def _loop_stall(run: Any) -> float:
    """The longest gap between two turns of a ticker task while ``run()`` (awaited if it returns
    an awaitable) does its work."""
    stop, gaps = asyncio.Event(), []

    async def ticker() -> None:
        last = time.perf_counter()
        while not stop.is_set():
            await asyncio.sleep(0)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0.001)
    result = run()
    if asyncio.iscoroutine(result) or isinstance(result, asyncio.Future):
        await result
    await asyncio.sleep(0.001)
    stop.set()
    await task
    return max(gaps)


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the CPU measurement (median reported)")
    parser.add_argument("--small", type=int, default=200, help="requests per round with a 1 KB prompt")
    parser.add_argument("--large", type=int, default=10, help="requests per round with a 100 KB prompt")
    parser.add_argument("--streams", type=int, default=8, help="streams per configuration for the time to first token")
    args = parser.parse_args()
    if not (1 <= args.rounds <= 20 and 1 <= args.small <= 5000 and 1 <= args.large <= 500 and 1 <= args.streams <= 100):
        parser.error("counts out of range (rounds 1..20, small 1..5000, large 1..500, streams 1..100)")
    with tempfile.TemporaryDirectory() as workdir:
        await measure_cpu(args, Path(workdir))
        await measure_ttft(args, Path(workdir))
    await measure_threshold(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
