"""How often would the semantic cache serve a wrong answer? The quality gate on fow-cache's labels.

    python bench/semantic_quality.py [--threshold T] [--refresh] [--step 0.02]

The data is the PyPI package ``fow-cache`` (its ``pairs.jsonl``: 600 question pairs, paraphrases
and near-misses by category; its conversations: 240 pairs of multi-turn chats). Each pair is one
cached prompt and one new prompt; the question is whether the cache serves the cached answer.
Pairs fow-cache marks ``ambiguous`` count as traps (its strict default) and are shown as groups
of their own.

Every text is embedded once with the built-in model (``hookgate.embeddings``) and the vectors are
kept in the temp folder, keyed by the embedder's ``model_id`` and the dataset's version, so later
runs (and ``tests/test_semantic_quality.py``) only load them. Printed:

1. for the semantic cache's default configuration (``SemanticCacheConfig().guard``), the confusion table per category, without
   and with the guard, and which check refused the traps;
2. conversations three ways: last message only (what GPTCache and friends do), last message with
   the guard, and the hard partition (earlier turns hashed) with the guard: the default;
3. the precision/recall curve over similarity thresholds, without and with the guard;
4. the targets: near-miss wrong-answer rate <= 3% while serving >= 40% of true paraphrases, and
   0 wrong answers on conversation pairs. The exit code is 1 when one is missed.

Nothing leaves this machine; the first run embeds about 1,400 texts (tens of seconds on one
core), later runs take a few seconds.
"""
from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hookgate.embeddings import OnnxEmbedderConfig, OnnxSentenceEmbedder
from hookgate.plugins.semantic_cache import SemanticCacheConfig
from hookgate.plugins.semantic_cache_guard import GuardConfig, PromptFeatures, SemanticCacheGuard, analyse_prompt
from hookgate.plugins.semantic_cache_partition import conversation_partition

MAX_NEAR_MISS_WRONG = 0.03
MIN_PARAPHRASES_SERVED = 0.40
MAX_CONVERSATION_WRONG = 0
SHOULD_HIT_QUESTIONS = ("near_repeat", "paraphrase")


@dataclass(frozen=True, slots=True)
class Pair:
    """One labelled pair: would the cached prompt's answer be right for the new prompt?"""

    id: str
    group: str
    """fow-cache's category (questions) or subtype (conversations); its ambiguity reason if any."""
    should_hit: bool
    cached: str
    new: str
    similarity: float
    same_prefix: bool = True
    """Conversations: every turn before the last user turn is identical (same partition)."""


Decision = Callable[[Pair], "Outcome"]


@dataclass(frozen=True, slots=True)
class Outcome:
    served: bool
    refused_by: str | None = None


@dataclass(slots=True)
class QualityRun:
    """Everything one evaluation computed (what the test asserts on)."""

    model_id: str
    dataset_version: str
    guard_config: GuardConfig
    questions: list[Pair]
    conversations: list[Pair]
    embed_seconds: float
    vectors_cached: bool
    strategies: dict[str, tuple[list[Pair], list[Outcome]]] = field(default_factory=dict)
    features: dict[str, PromptFeatures] = field(default_factory=dict)

    def rates(self, name: str) -> Rates:
        pairs, outcomes = self.strategies[name]
        return Rates.of(pairs, outcomes)


@dataclass(frozen=True, slots=True)
class Rates:
    traps: int
    wrong: int
    paraphrases: int
    paraphrases_served: int
    should_hit: int
    should_hit_served: int

    @classmethod
    def of(cls, pairs: Sequence[Pair], outcomes: Sequence[Outcome]) -> Rates:
        traps = [o.served for p, o in zip(pairs, outcomes) if not p.should_hit]
        hits = [o.served for p, o in zip(pairs, outcomes) if p.should_hit]
        paraphrases = [o.served for p, o in zip(pairs, outcomes) if p.should_hit and p.group == "paraphrase"]
        return cls(len(traps), sum(traps), len(paraphrases), sum(paraphrases), len(hits), sum(hits))

    @property
    def wrong_rate(self) -> float:
        return self.wrong / self.traps if self.traps else 0.0

    @property
    def paraphrase_rate(self) -> float:
        return self.paraphrases_served / self.paraphrases if self.paraphrases else 0.0

    @property
    def hit_rate(self) -> float:
        return self.should_hit_served / self.should_hit if self.should_hit else 0.0

    @property
    def precision(self) -> float:
        served = self.should_hit_served + self.wrong
        return self.should_hit_served / served if served else 1.0


# --- data and vectors -----------------------------------------------------------------------------


def dataset_version() -> str:
    """fow-cache's version and a hash of its data files: the vector cache's key."""
    import fow_cache

    data = Path(fow_cache.__file__).parent / "data"
    digest = hashlib.sha256()
    for path in sorted(data.rglob("*.jsonl")):
        digest.update(path.relative_to(data).as_posix().encode())
        digest.update(path.read_bytes())
    return f"{fow_cache.__version__}-{digest.hexdigest()[:12]}"


def _group(item: dict) -> str:
    return f"ambiguous:{item['ambiguous']}" if item.get("ambiguous") else item.get("category") or item["subtype"]


def _should_hit(item: dict) -> bool:
    return bool(item["same_answer"]) and not item.get("ambiguous")  # fow-cache's strict default


def cache_dir() -> Path:
    return Path(os.environ.get("HOOKGATE_BENCH_CACHE", tempfile.gettempdir())) / "hookgate-semantic-quality"


async def embed_texts(texts: Sequence[str], *, refresh: bool = False) -> tuple[str, dict[str, np.ndarray], float, bool]:
    """(model_id, text -> unit vector, seconds spent embedding, whether the vectors came from the cache)."""
    embedder = await OnnxSentenceEmbedder.load(OnnxEmbedderConfig(batch_size=32))
    try:
        model_id = embedder.model_id
        path = cache_dir() / f"{model_id.replace('/', '_')}--fow-cache-{dataset_version()}.npz"
        if path.exists() and not refresh:
            with np.load(path, allow_pickle=False) as stored:
                cached = dict(zip(stored["texts"].tolist(), stored["vectors"]))
            if all(text in cached for text in texts):
                return model_id, cached, 0.0, True
        unique = sorted(set(texts), key=len)  # similar lengths per run: less padding
        started = time.perf_counter()
        vectors = np.concatenate(
            [(await embedder.embed(unique[i : i + 256])).vectors for i in range(0, len(unique), 256)]
        )
        seconds = time.perf_counter() - started
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.tmp.npz")
        np.savez(partial, texts=np.array(unique), vectors=vectors)
        partial.replace(path)  # atomic: a concurrent run sees the old file or the whole new one
        return model_id, dict(zip(unique, vectors)), seconds, False
    finally:
        await embedder.aclose()


def _similarity(vectors: dict[str, np.ndarray], a: str, b: str) -> float:
    return float(np.dot(vectors[a], vectors[b]))


# --- the strategies -------------------------------------------------------------------------------


def threshold_only(threshold: float) -> Decision:
    """What a threshold-only semantic cache does."""
    return lambda pair: Outcome(pair.similarity >= threshold, None if pair.similarity >= threshold else "threshold")


def guarded(guard: SemanticCacheGuard, *, partition: bool, features: dict[str, PromptFeatures]) -> Decision:
    """The guard on the compared texts; with ``partition``, a candidate from another partition is
    never even compared (conversations whose earlier turns differ). ``features`` memoises
    :func:`analyse_prompt` across runs, as a cache keeps a stored prompt's features beside it."""

    def analysed(text: str) -> PromptFeatures:
        if text not in features:
            features[text] = analyse_prompt(text)
        return features[text]

    def decide(pair: Pair) -> Outcome:
        if partition and not pair.same_prefix:
            return Outcome(False, "partition")
        verdict = guard.check(analysed(pair.cached), analysed(pair.new), pair.similarity)
        return Outcome(verdict.serve, None if verdict.serve else verdict.check.value)  # type: ignore[union-attr]

    return decide


def run(pairs: Iterable[Pair], decide: Decision) -> tuple[list[Pair], list[Outcome]]:
    pairs = list(pairs)
    return pairs, [decide(pair) for pair in pairs]


def default_guard() -> GuardConfig:
    """The guard as the semantic_cache plugin runs it with its default configuration: what the
    gate measures, so a change of the plugin's defaults is measured too."""
    return SemanticCacheConfig().guard


async def evaluate(config: GuardConfig | None = None, *, refresh: bool = False) -> QualityRun:
    """Embed (or load) every text, and judge every pair with each strategy at ``config``."""
    import fow_cache

    config = config or default_guard()
    questions = fow_cache.load_questions()
    conversations = fow_cache.load_conversations()
    split = {item["id"]: (conversation_partition(item["a"]), conversation_partition(item["b"])) for item in conversations}
    texts = [t for item in questions for t in (item["a"], item["b"])]
    texts += [part.last_user_text for a, b in split.values() for part in (a, b) if part is not None]
    model_id, vectors, seconds, cached = await embed_texts(texts, refresh=refresh)

    question_pairs = [
        Pair(i["id"], _group(i), _should_hit(i), i["a"], i["b"], _similarity(vectors, i["a"], i["b"])) for i in questions
    ]
    conversation_pairs = []
    for item in conversations:
        a, b = split[item["id"]]
        assert a is not None and b is not None, "every fow-cache conversation ends with a user text turn"
        conversation_pairs.append(
            Pair(
                item["id"], _group(item), _should_hit(item), a.last_user_text, b.last_user_text,
                _similarity(vectors, a.last_user_text, b.last_user_text), same_prefix=a.prefix_hash == b.prefix_hash,
            )
        )  # fmt: skip
    result = QualityRun(model_id, dataset_version(), config, question_pairs, conversation_pairs, seconds, cached)
    guard = SemanticCacheGuard(config)
    result.strategies = {
        "questions: threshold only": run(question_pairs, threshold_only(config.similarity_threshold)),
        "questions: guard": run(question_pairs, guarded(guard, partition=False, features=result.features)),
        "conversations: last message, threshold only": run(conversation_pairs, threshold_only(config.similarity_threshold)),
        "conversations: last message, guard": run(
            conversation_pairs, guarded(guard, partition=False, features=result.features)
        ),
        "conversations: partition + guard": run(conversation_pairs, guarded(guard, partition=True, features=result.features)),
    }
    return result


# --- printing -------------------------------------------------------------------------------------


def confusion_table(pairs: Sequence[Pair], unguarded: Sequence[Outcome], guarded_: Sequence[Outcome]) -> list[str]:
    groups = list(dict.fromkeys(p.group for p in pairs))
    lines = [
        f"  {'category':<28}{'label':<10}{'n':>5}   {'threshold only':>22}   {'with the guard':>22}",
        f"  {'':<28}{'':<10}{'':>5}   {'served':>8}{'refused':>8}{'':>6}   {'served':>8}{'refused':>8}",
    ]
    for group in groups:
        rows = [i for i, p in enumerate(pairs) if p.group == group]
        should_hit = pairs[rows[0]].should_hit
        plain = sum(unguarded[i].served for i in rows)
        safe = sum(guarded_[i].served for i in rows)
        label = "hit" if should_hit else "trap"
        lines.append(
            f"  {group:<28}{label:<10}{len(rows):>5}   {plain:>8}{len(rows) - plain:>8}{plain / len(rows):>6.0%}"
            f"   {safe:>8}{len(rows) - safe:>8}{safe / len(rows):>6.0%}"
        )
    return lines


def refusal_reasons(pairs: Sequence[Pair], outcomes: Sequence[Outcome], *, traps: bool) -> list[str]:
    lines = []
    for group in dict.fromkeys(p.group for p in pairs if p.should_hit != traps):
        reasons = Counter(o.refused_by for p, o in zip(pairs, outcomes) if p.group == group and not o.served)
        listed = ", ".join(f"{reason} {count}" for reason, count in reasons.most_common())
        lines.append(f"  {group:<28}{listed or '-'}")
    return lines


def curve(
    pairs: Sequence[Pair], config: GuardConfig, thresholds: Sequence[float], features: dict[str, PromptFeatures]
) -> list[str]:
    lines = [
        f"  {'threshold':>9} | {'threshold only':^33} | {'with the guard':^33}",
        f"  {'':>9} | {'paraphr':>8}{'all hit':>8}{'wrong':>8}{'prec':>8} "
        f"| {'paraphr':>8}{'all hit':>8}{'wrong':>8}{'prec':>8}",
    ]
    for threshold in thresholds:
        plain = Rates.of(*run(pairs, threshold_only(threshold)))
        guard = SemanticCacheGuard(config.model_copy(update={"similarity_threshold": threshold}))
        safe = Rates.of(*run(pairs, guarded(guard, partition=False, features=features)))
        marker = " <- default" if abs(threshold - config.similarity_threshold) < 1e-9 else ""
        lines.append(
            f"  {threshold:>9.2f} | {plain.paraphrase_rate:>8.1%}{plain.hit_rate:>8.1%}{plain.wrong_rate:>8.1%}"
            f"{plain.precision:>8.1%} | {safe.paraphrase_rate:>8.1%}{safe.hit_rate:>8.1%}{safe.wrong_rate:>8.1%}"
            f"{safe.precision:>8.1%}{marker}"
        )
    return lines


def targets(result: QualityRun) -> list[tuple[str, bool]]:
    questions = result.rates("questions: guard")
    conversations = result.rates("conversations: partition + guard")
    return [
        (
            f"near-miss questions given a wrong answer: {questions.wrong}/{questions.traps} = "
            f"{questions.wrong_rate:.1%} (target <= {MAX_NEAR_MISS_WRONG:.0%})",
            questions.wrong_rate <= MAX_NEAR_MISS_WRONG,
        ),
        (
            f"true paraphrases served: {questions.paraphrases_served}/{questions.paraphrases} = "
            f"{questions.paraphrase_rate:.1%} (target >= {MIN_PARAPHRASES_SERVED:.0%})",
            questions.paraphrase_rate >= MIN_PARAPHRASES_SERVED,
        ),
        (
            f"conversation pairs given a wrong answer: {conversations.wrong}/{conversations.traps} "
            f"(target {MAX_CONVERSATION_WRONG})",
            conversations.wrong <= MAX_CONVERSATION_WRONG,
        ),
    ]


def guard_timing(pairs: Sequence[Pair], config: GuardConfig) -> str:
    guard = SemanticCacheGuard(config)
    features = [(analyse_prompt(p.cached), analyse_prompt(p.new), p.similarity) for p in pairs]
    runs = []
    for _ in range(5):
        started = time.perf_counter()
        for a, b, _ in features:
            guard.check(a, b, 1.0)  # above any threshold: every check runs
        runs.append((time.perf_counter() - started) / len(features))
    analyse = []
    for _ in range(3):
        started = time.perf_counter()
        for p in pairs:
            analyse_prompt(p.new)
        analyse.append((time.perf_counter() - started) / len(pairs))
    return (
        f"guard cost on this machine (median of runs): analyse_prompt {statistics.median(analyse) * 1e6:.0f} us per prompt, "
        f"check on analysed prompts {statistics.median(runs) * 1e6:.0f} us per pair"
    )


def print_report(result: QualityRun, thresholds: Sequence[float]) -> bool:
    config = result.guard_config
    print(f"embedding model  {result.model_id}")
    print(f"dataset          fow-cache {result.dataset_version}: {len(result.questions)} question pairs, "
          f"{len(result.conversations)} conversation pairs")  # fmt: skip
    source = "loaded from the cache folder" if result.vectors_cached else f"embedded in {result.embed_seconds:.1f} s"
    print(f"vectors          {source} ({cache_dir()})")
    print(f"guard config     {config.model_dump()}")
    print()
    print(f"QUESTIONS at threshold {config.similarity_threshold:.2f} (hit: should be served; trap: serving it is a wrong answer)")
    _, plain = result.strategies["questions: threshold only"]
    _, safe = result.strategies["questions: guard"]
    print("\n".join(confusion_table(result.questions, plain, safe)))
    print("\n  what refused the traps (first refusing check per pair; 'threshold' = below the similarity threshold):")
    print("\n".join(refusal_reasons(result.questions, safe, traps=True)))
    print("  what refused the should-hit pairs:")
    print("\n".join(refusal_reasons(result.questions, safe, traps=False)))
    print()
    print("CONVERSATIONS (final user messages are identical in most traps)")
    for name in ("conversations: last message, threshold only", "conversations: last message, guard", "conversations: partition + guard"):
        rates = result.rates(name)
        print(f"  {name.split(': ', 1)[1]:<28} should-hit served {rates.should_hit_served:>3}/{rates.should_hit:<3} "
              f"traps given a wrong answer {rates.wrong:>3}/{rates.traps}")  # fmt: skip
    _, last = result.strategies["conversations: last message, threshold only"]
    _, partitioned = result.strategies["conversations: partition + guard"]
    print("\n".join(confusion_table(result.conversations, last, partitioned)).replace("threshold only", "last msg, threshold").replace(
        "with the guard", "partition + guard"))  # fmt: skip
    print()
    print("PRECISION / RECALL over thresholds, questions (paraphr: paraphrases served; all hit: near repeats too;")
    print("wrong: traps served; prec: share of served answers that were right)")
    print("\n".join(curve(result.questions, config, thresholds, result.features)))
    print()
    print(guard_timing(result.questions, config))
    print()
    ok = True
    for text, passed in targets(result):
        print(f"{'PASS' if passed else 'FAIL'}  {text}")
        ok = ok and passed
    return ok


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threshold", type=float, help="similarity threshold (default: GuardConfig's)")
    parser.add_argument("--refresh", action="store_true", help="embed again even if cached vectors exist")
    parser.add_argument("--step", type=float, default=0.02, help="threshold step of the curve")
    args = parser.parse_args(argv)
    config = default_guard() if args.threshold is None else default_guard().model_copy(update={"similarity_threshold": args.threshold})
    started = time.perf_counter()
    result = asyncio.run(evaluate(config, refresh=args.refresh))
    steps = int(round((0.98 - 0.50) / args.step))
    thresholds = sorted({round(0.50 + i * args.step, 4) for i in range(steps + 1)} | {config.similarity_threshold})
    ok = print_report(result, thresholds)
    print(f"\nwhole run {time.perf_counter() - started:.1f} s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
