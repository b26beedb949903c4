"""``guardrails``: personal data and credentials kept from providers, per policy, in requests and
in answers (streamed ones included), with a record of what was found and never of the values.

**Request side** (``before_request``). The policy's detectors scan every text of the canonical
request (``ctx.body``: message contents and tool-call arguments, whatever chat-like surface the
client used; a legacy completion's ``prompt``; an embeddings ``input``). Per kind of finding: ``block`` refuses the request with a 400 (``content_blocked``) that
names the kind and where, never the value; ``mask`` replaces the value with a typed placeholder
(``<EMAIL_1>``) in ``ctx.body``; ``log`` only records it. A judge (a model asked through the
gateway itself, for prompt injection) reads the masked text last. Large texts are scanned on a
worker thread (above ``offload_above_chars``), small ones inline, where the thread hop would
cost more than the scan (bench/guardrails_cpu.py).

**Why that is cache-safe.** Every ``before_request`` hook runs before any ``cache_lookup`` and
before the provider is called, so wherever guardrails is listed, caches key on and store the
masked request and its canonical answer, which holds placeholders only, and observers (request
log, request store, traces) see the same. The values exist only in this request's restorations,
applied by an output filter (:mod:`hookgate.output`) to what this client receives: two requests
whose different addresses mask to the same body share one cached answer, and each gets its own
address back. Usage is the provider's, counted on what it was sent.

**Answer side** (the output filter, :mod:`.guardrails_answers`). The answer's detectors scan the
model's text for each client, a cached answer included; streams are scanned with a bounded
hold-back window so that a finding split across chunks is seen whole. ``block`` withholds the
answer (``finish_reason: "content_filter"`` and a ``refusal`` naming the kinds), ``mask`` sends
``<KIND>`` instead of the value, ``log`` records.

**Failures.** A detector that crashes, and a judge that times out or fails, follow the side's
``on_error`` / ``on_judge_error``: ``open`` goes on without it (recorded in metrics and the log),
``closed`` refuses the request with a 503 (``guardrails_unavailable``) or withholds the answer.

**Record.** Findings by kind, count, action and side are the ``GUARDRAIL_FINDINGS`` fact (the
request store reads it), ``guardrails``/``guardrails_errors`` annotations on the request log line,
and ``hookgate_guardrails_*`` metrics at ``/metrics``. docs/guardrails.md has the whole story.
"""
from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass, field
from functools import partial
from time import perf_counter
from typing import Any, Callable, Mapping, Sequence

import structlog
from aiohttp import web
from pydantic import Field, ValidationInfo, field_validator

from hookgate import (
    Completion,
    InvalidRequest,
    PermissionDenied,
    PluginConfig,
    RequestContext,
    ServiceUnavailable,
    StateKey,
    completion_to_chunks,
    hookimpl,
)
from hookgate.detectors import (
    Detector,
    DetectorError,
    DetectorLoadError,
    InstalledDetector,
    installed_detectors,
    non_overlapping,
    scan,
)
from hookgate.facts import CLIENT_KEY, GUARDRAIL_FINDINGS
from hookgate.logs import IntervalLog
from hookgate.output import add_output_filter
from hookgate.rules import Produces, Reads
from hookgate.surfaces import COMPLETIONS, EMBEDDINGS

from hookgate.plugins.guardrails_answers import AnswerGuard, TextCompletionGuard, text_chunk_as_chat, text_completion_as_chat
from hookgate.plugins.guardrails_judge import Judge, JudgeFailed, JudgeSettings
from hookgate.plugins.guardrails_masking import (
    ChatStreamRestorer,
    Masker,
    Path,
    TextField,
    chat_completion_fields,
    request_fields,
    restore_chat_completion,
    with_texts,
)
from hookgate.plugins.guardrails_metrics import GuardrailsMetrics, Tally
from hookgate.plugins.guardrails_policies import (
    DEFAULT_REQUEST_DETECTORS,
    AnswerPolicy,
    DetectorFailure,
    DetectorSettings,
    GuardedDetector,
    Policy,
    PolicyChooser,
    RequestPolicy,
    SidePolicy,
    UnknownPolicy,
)

__all__ = ["Guardrails", "GuardrailsConfig", "JUDGE_HEADER"]

log = structlog.get_logger("hookgate.guardrails")

JUDGE_HEADER = "x-hookgate-guardrails-judge"
"""Marks the judge's own internal requests, with a token made per plugin instance (a client
cannot guess it), so that the judge's request is not judged, or masked, again."""


class GuardrailsConfig(PluginConfig):
    """Settings of the guardrails plugin (docs/guardrails.md)."""

    detectors: dict[str, DetectorSettings] = Field(
        {}, description="detectors by a name of your choice: entry_point (default: the name) and options"
    )
    judges: dict[str, JudgeSettings] = Field({}, description="judges by name: a model asked through this gateway")
    policies: dict[str, Policy] = Field(
        {"default": Policy(request=RequestPolicy(detectors=DEFAULT_REQUEST_DETECTORS))},
        description="named policies: [plugins.guardrails.policies.NAME.request] and .answer (detectors, action, "
        "actions per kind, min_confidence, on_error…); the default masks personal data and credentials in requests",
    )
    default_policy: str = Field("default", description="the policy of a request no key or model rule names")
    keys: dict[str, str] = Field({}, description="ClientKey id → policy name (wins over everything else)")
    metadata_field: str | None = Field(
        "guardrails_policy", max_length=64, description="a key whose metadata has this entry gets the policy it names"
    )
    models: dict[str, str] = Field({}, description="public model name or glob (\"local/*\") → policy name")
    offload_above_chars: int = Field(
        4096,
        ge=0,
        le=10_000_000,
        description="texts longer than this (one side of a request, in characters) are scanned on a worker thread",
    )

    @field_validator("detectors")
    @classmethod
    def _detectors_build(cls, detectors: dict[str, DetectorSettings]) -> dict[str, DetectorSettings]:
        installed = installed_detectors()
        for name in detectors:
            _build_detector(name, detectors, installed)  # its options checked by its own model
        return detectors

    @field_validator("judges")
    @classmethod
    def _judges_are_not_detectors(cls, judges: dict[str, JudgeSettings], info: ValidationInfo) -> dict[str, JudgeSettings]:
        clash = sorted(set(judges) & set(info.data.get("detectors") or ()))
        if clash:
            raise ValueError(f"{', '.join(clash)}: a name is either a detector or a judge, not both")
        return judges

    @field_validator("policies")
    @classmethod
    def _policies_resolve(cls, policies: dict[str, Policy], info: ValidationInfo) -> dict[str, Policy]:
        if "detectors" not in info.data or "judges" not in info.data:
            return policies  # reported on their own
        detectors = _policy_detectors(policies, info.data["detectors"], info.data["judges"])
        for policy_name, policy in policies.items():
            for side_name, side in (("request", policy.request), ("answer", policy.answer)):
                if side is not None:
                    _check_side(f"{policy_name}.{side_name}", side, side_name, detectors, info.data["judges"])
        return policies

    @field_validator("default_policy", "keys", "models")
    @classmethod
    def _policies_exist(cls, value: str | dict[str, str], info: ValidationInfo) -> str | dict[str, str]:
        policies = info.data.get("policies")
        if policies is None:
            return value
        for where, name in ([(None, value)] if isinstance(value, str) else value.items()):
            if name not in policies:
                raise ValueError(f"{where + ': ' if where else ''}no policy named {name!r} (policies: {', '.join(sorted(policies)) or 'none'})")
        return value


def build_detectors(config: GuardrailsConfig) -> dict[str, Detector]:
    """Every detector some policy names, built with its options (judges aside)."""
    return _policy_detectors(config.policies, config.detectors, config.judges)


def _policy_detectors(policies: Mapping[str, Policy], settings: Mapping[str, DetectorSettings], judges: Mapping[str, JudgeSettings]) -> dict[str, Detector]:
    wanted = {
        name
        for policy in policies.values()
        for side in (policy.request, policy.answer)
        if side is not None
        for name in side.detectors
        if name not in judges
    }
    installed = installed_detectors()
    return {name: _build_detector(name, settings, installed) for name in sorted(wanted)}


def _build_detector(name: str, settings: Mapping[str, DetectorSettings], installed: Mapping[str, InstalledDetector]) -> Detector:
    configured = settings.get(name, DetectorSettings())
    entry_point = configured.entry_point or name
    if entry_point not in installed:
        raise ValueError(
            f"no detector named {name!r}: configure it under [plugins.guardrails.detectors] or [plugins.guardrails.judges], "
            f"or install one (installed: {', '.join(sorted(installed))})"
        )
    try:
        return installed[entry_point].create(configured.options)
    except DetectorLoadError as exc:
        raise ValueError(f"{name}: {exc}") from None


def _check_side(where: str, side: SidePolicy, side_name: str, detectors: Mapping[str, Detector], judges: Mapping[str, JudgeSettings]) -> None:
    kinds: set[str] = set()
    judged: set[str] = set()
    for name in side.detectors:
        if name in judges:
            if side_name == "answer":
                raise ValueError(f"{where}.detectors: {name} is a judge; judges read requests only")
            judged.add(judges[name].kind)
        else:
            kinds |= detectors[name].kinds
    unknown = sorted(set(side.actions) - kinds - judged)
    if unknown:
        raise ValueError(f"{where}.actions: {', '.join(unknown)} is found by none of its detectors (they find {', '.join(sorted(kinds | judged))})")
    masked_verdicts = sorted(kind for kind in judged if side.action_for(kind) == "mask")
    if masked_verdicts:
        raise ValueError(
            f"{where}: a judge's verdict ({', '.join(masked_verdicts)}) covers the whole request and cannot be masked: "
            "set block or log for it in actions"
        )


@dataclass(slots=True)
class _Guarding:
    """This plugin's view of one request."""

    policy: str
    request: Tally = field(default_factory=lambda: Tally("request"))
    answer: Tally = field(default_factory=lambda: Tally("answer"))
    guard: AnswerGuard | None = None
    answer_failures: list[DetectorFailure] = field(default_factory=list)
    answer_fail_mode: str = "closed"
    answer_published: bool = False


_GUARDING: StateKey[_Guarding] = StateKey("guardrails.guarding", _Guarding, "the guardrails plugin's state of a request")


class Guardrails:
    """Masks, blocks or logs personal data and credentials per policy, in requests and answers."""

    Config = GuardrailsConfig
    roles = ("guardrails",)
    rules = (
        Reads(CLIENT_KEY, "before_request", why="policies per key"),
        Produces(GUARDRAIL_FINDINGS, "before_request"),
        Produces(GUARDRAIL_FINDINGS, "after_response"),
        Produces(GUARDRAIL_FINDINGS, "on_error"),
    )

    def __init__(self, config: GuardrailsConfig) -> None:
        self.config = config
        self.detectors = build_detectors(config)
        self.judges = {name: Judge(name, settings) for name, settings in config.judges.items()}
        self.chooser = PolicyChooser(
            config.default_policy,
            keys=config.keys,
            models=config.models,
            metadata_field=config.metadata_field,
            known=frozenset(config.policies),
        )
        self.metrics = GuardrailsMetrics()
        self._app: web.Application | None = None
        self._judge_token = secrets.token_urlsafe(18)
        self._failure_log = IntervalLog(log, "guardrails_check_failed")

    @hookimpl
    def register_metrics(self, register: Callable[[object], None]) -> None:
        register(self.metrics)

    @hookimpl
    async def startup(self, app: web.Application) -> None:
        self._app = app

    # -- request side -----------------------------------------------------------------------------

    @hookimpl
    async def before_request(self, ctx: RequestContext) -> None:
        if ctx.headers.get(JUDGE_HEADER) == self._judge_token:
            return  # our judge's own request: its text is already masked
        try:
            name = self.chooser.choose(ctx.get(CLIENT_KEY), ctx.model)
        except UnknownPolicy:
            raise PermissionDenied(
                "This key's guardrails policy is not configured on the gateway.", code="guardrails_policy_unknown"
            ) from None
        policy = self.config.policies[name]
        guarding = ctx[_GUARDING] = _Guarding(name)
        ctx.annotations["guardrails_policy"] = name
        restorations: Mapping[str, str] = {}
        if policy.request is not None:
            restorations = await self._check_request(ctx, policy.request, guarding.request)
        if (restorations or policy.answer is not None) and ctx.kind != EMBEDDINGS:  # vectors carry no text
            guarding.guard = self._answer_guard(ctx, restorations, policy.answer, guarding)
            add_output_filter(ctx, TextCompletionGuard(guarding.guard) if ctx.kind == COMPLETIONS else guarding.guard)

    async def _check_request(self, ctx: RequestContext, side: RequestPolicy, tally: Tally) -> Mapping[str, str]:
        """Scan, then block, mask or log; then ask the judges. Returns the restorations."""
        failures: list[DetectorFailure] = []
        detectors = self._guarded(side, failures)
        fields = request_fields(ctx.kind, ctx.body)
        started = perf_counter()
        work = partial(mask_by_action, ctx.body, fields, detectors, side.action_for)
        try:
            if sum(len(f.text) for f in fields) > self.config.offload_above_chars:
                outcome = await asyncio.to_thread(work)
            else:
                outcome = work()
        except DetectorError:
            self._failed(tally, failures, side.on_error, "request")
            self._publish(ctx, tally, blocked=True)
            failure = failures[-1]
            raise ServiceUnavailable(
                f"The gateway's guardrails could not check this request: detector {failure.detector} failed ({failure.reason}).",
                code="guardrails_unavailable",
            ) from None
        finally:
            self.metrics.scanned("request", perf_counter() - started)
        self._failed(tally, failures, side.on_error, "request")
        tally.counts.update(outcome.counts)
        if outcome.blocked:
            self._publish(ctx, tally, blocked=True)
            path, kinds = outcome.blocked
            raise InvalidRequest(
                f"The request was blocked by the gateway's guardrails: {param_of(path)} contains {', '.join(kinds)}.",
                param=param_of(path),
                code="content_blocked",
            )
        judges = [self.judges[name] for name in side.detectors if name in self.judges]
        if judges:
            await self._judge(ctx, outcome.body, judges, side, tally)
        self._publish(ctx, tally, blocked=False)
        ctx.body = outcome.body
        return outcome.restorations

    async def _judge(self, ctx: RequestContext, body: dict[str, Any], judges: Sequence[Judge], side: RequestPolicy, tally: Tally) -> None:
        assert self._app is not None, "startup ran"
        asked = [(judge, judge.text_of(body)) for judge in judges]
        asked = [(judge, text) for judge, text in asked if text]
        headers = {JUDGE_HEADER: self._judge_token}
        verdicts = await asyncio.gather(
            *(judge.judge(self._app, ctx, text, headers=headers) for judge, text in asked), return_exceptions=True
        )
        flagged: list[str] = []
        for (judge, _), verdict in zip(asked, verdicts):
            if isinstance(verdict, JudgeFailed):
                self.metrics.judged(judge.name, verdict.reason)
                tally.failures.append((judge.name, side.on_judge_error))
                self._failure_log.warning(side="request", judge=judge.name, reason=verdict.reason, code=verdict.code, mode=side.on_judge_error)
                if side.on_judge_error == "closed":
                    self._publish(ctx, tally, blocked=True)
                    reason = "timed out" if verdict.reason == "timeout" else f"failed ({verdict.code or verdict.reason})"
                    raise ServiceUnavailable(
                        f"The gateway's guardrails could not check this request: judge {judge.name} {reason}.",
                        code="guardrails_unavailable",
                    )
                continue
            if isinstance(verdict, BaseException):
                raise verdict
            self.metrics.judged(judge.name, ("cached_" if verdict.cached else "") + ("flagged" if verdict.flagged else "clean"))
            if verdict.flagged:
                kind = judge.settings.kind
                action = side.action_for(kind)
                tally.add(kind, action)
                if action == "block":
                    flagged.append(kind)
        if flagged:
            self._publish(ctx, tally, blocked=True)
            raise InvalidRequest(
                f"The request was blocked by the gateway's guardrails: it was judged {', '.join(sorted(set(flagged)))}.",
                param="messages",
                code="content_blocked",
            )

    # -- answer side ------------------------------------------------------------------------------

    def _answer_guard(self, ctx: RequestContext, restorations: Mapping[str, str], side: AnswerPolicy | None, guarding: _Guarding) -> AnswerGuard:
        detectors = self._guarded(side, guarding.answer_failures) if side is not None else []
        if side is not None:
            guarding.answer_fail_mode = side.on_error
        hold_back = side.hold_back_chars if side is not None else 0
        step = side.scan_step_chars if side is not None else 32

        def make_stream(redact: Callable[..., Any]) -> ChatStreamRestorer:
            return ChatStreamRestorer(restorations, detectors=detectors, redact=redact, hold_back_chars=hold_back, scan_step_chars=step)

        def restore_complete(body: dict[str, Any], redact: Callable[..., Any]) -> tuple[dict[str, Any], tuple[Any, ...]]:
            return restore_chat_completion(body, restorations, detectors=detectors, redact=redact)

        return AnswerGuard(
            make_stream=make_stream,
            restore_complete=restore_complete,
            action_for=side.action_for if side is not None else _log_only,
            tally=guarding.answer,
            include_usage=ctx.include_usage,
        )

    @hookimpl
    async def after_response(self, ctx: RequestContext, response: Completion) -> None:
        guarding = ctx.get(_GUARDING)
        if guarding is None or guarding.guard is None:
            return
        guard = guarding.guard
        if not guard.live:  # a JSON answer, or a complete one about to be replayed as a stream
            text = ctx.kind == COMPLETIONS  # the guard reads a legacy completion as a chat one
            body = text_completion_as_chat(response.body) if text else response.body
            work = (
                partial(guard.prepare_replay, [
                    text_chunk_as_chat(chunk) if text else chunk
                    for chunk in completion_to_chunks(response.body, include_usage=ctx.include_usage)
                ])
                if ctx.stream
                else partial(guard.prepare_body, body)
            )
            started = perf_counter()
            if sum(len(f.text) for f in chat_completion_fields(body)) > self.config.offload_above_chars:
                await asyncio.to_thread(work)
            else:
                work()
            self.metrics.scanned("answer", perf_counter() - started)
        self._publish_answer(ctx, guarding)

    @hookimpl
    async def on_error(self, ctx: RequestContext) -> None:
        guarding = ctx.get(_GUARDING)
        if guarding is not None and guarding.guard is not None and guarding.guard.live:
            self._publish_answer(ctx, guarding)  # a stream cut off: what was found in what was sent

    def _publish_answer(self, ctx: RequestContext, guarding: _Guarding) -> None:
        if guarding.answer_published:
            return
        guarding.answer_published = True
        self._failed(guarding.answer, guarding.answer_failures, guarding.answer_fail_mode, "answer")
        guard = guarding.guard
        assert guard is not None
        self._publish(ctx, guarding.answer, blocked=guard.blocked or guard.unchecked)

    # -- helpers ----------------------------------------------------------------------------------

    def _guarded(self, side: SidePolicy, failures: list[DetectorFailure]) -> list[GuardedDetector]:
        return [
            GuardedDetector(self.detectors[name], name, min_confidence=side.min_confidence, fail_open=side.on_error == "open", failures=failures)
            for name in side.detectors
            if name in self.detectors
        ]

    def _failed(self, tally: Tally, failures: Sequence[DetectorFailure], mode: str, side: str) -> None:
        for failure in failures:
            tally.failures.append((failure.detector, mode))
            self._failure_log.warning(side=side, detector=failure.detector, reason=failure.reason, mode=mode)

    def _publish(self, ctx: RequestContext, tally: Tally, *, blocked: bool) -> None:
        """Record one side's findings: the fact, the log line's annotations, the metrics."""
        ctx[GUARDRAIL_FINDINGS] = (*ctx.get(GUARDRAIL_FINDINGS, ()), *tally.records())
        if tally.counts:
            ctx.annotations["guardrails"] = [*ctx.annotations.get("guardrails", ()), *tally.annotation()]
        if tally.failures:
            ctx.annotations["guardrails_errors"] = [*ctx.annotations.get("guardrails_errors", ()), *tally.failure_annotation()]
        self.metrics.tally(tally, blocked=blocked)


def _log_only(kind: str) -> str:
    return "log"


# --- request scanning (runs on a worker thread for large requests) ------------------------------


@dataclass(frozen=True, slots=True)
class RequestScan:
    """What the request side found and what the provider is to be sent."""

    body: dict[str, Any]
    """The request with its ``mask`` findings replaced (the client's body when nothing was)."""
    restorations: Mapping[str, str]
    counts: Mapping[tuple[str, str], int]
    """(kind, action) → findings."""
    blocked: tuple[Path, tuple[str, ...]] | None
    """The first text with a ``block`` finding, and the kinds blocked there."""


def mask_by_action(
    body: dict[str, Any], fields: Sequence[TextField], detectors: Sequence[Detector], action_for: Callable[[str], str]
) -> RequestScan:
    """Scan every text of a request (``fields``, from :func:`request_fields`) and apply each finding's action.

    Every text is scanned, also after a ``block`` finding, so that the record is complete. Raises
    :class:`~hookgate.detectors.DetectorError` when a fail-closed detector failed.
    """
    masker = Masker(f.text for f in fields)
    replaced: dict[Path, str] = {}
    counts: dict[tuple[str, str], int] = {}
    blocked: tuple[Path, tuple[str, ...]] | None = None
    for text_field in fields:
        to_mask = []
        blocked_here: set[str] = set()
        for finding in non_overlapping(scan(text_field.scan_text, detectors)):
            action = action_for(finding.kind)
            counts[(finding.kind, action)] = counts.get((finding.kind, action), 0) + 1
            if action == "block":
                blocked_here.add(finding.kind)
            elif action == "mask":
                to_mask.append(finding)
        if blocked_here and blocked is None:
            blocked = (text_field.path, tuple(sorted(blocked_here)))
        if to_mask:
            replaced[text_field.path] = masker.mask(text_field.text, to_mask, json_text=text_field.json_text)
    if blocked is not None:
        return RequestScan(body, {}, counts, blocked)
    return RequestScan(with_texts(body, replaced) if replaced else body, masker.restorations, counts, None)


def param_of(path: Path) -> str:
    """A text's place as an error's ``param``: ``messages[2].content[0].text``."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out
