"""The facts plugins share about a request: typed keys, declared once.

Each fact is a :class:`~hookgate.StateKey` read and written as ``ctx[KEY]``. The built-in
plugins produce them as listed below; a third-party plugin may produce any of them instead (an
auth plugin of your own sets :data:`CLIENT_KEY`, and the limit, budget and usage plugins then work
for it). A plugin declares in its :mod:`~hookgate.rules` which facts it produces and reads, and the
gateway refuses at start-up a pipeline where a fact is read but never produced, or read in a hook
before the plugin producing it has run.

=========================  ===================  ===============================================
fact                       produced by          in
=========================  ===================  ===============================================
``CLIENT_KEY``             ``api_keys``         ``authenticate`` (the core stores it)
``PROMPT_ESTIMATE``        ``token_counter``    ``before_request``
``USAGE``                  ``token_counter``    ``call_provider`` and ``after_response``
``USAGE_ESTIMATED``        ``token_counter``    with ``USAGE``
``WORST_CASE_COST_USD``    ``cost``             ``before_request``
``COST_USD``               ``cost``             ``after_response`` and ``on_error``
``CONCURRENCY_WAIT_SECONDS`` ``concurrency``    ``call_provider``
``DEADLINE``               ``timeout``          ``before_request``
``ATTEMPT_DEADLINE``       ``timeout``          ``call_provider`` (read by the core)
``GUARDRAIL_FINDINGS``     ``guardrails``       ``before_request``, ``after_response``, ``on_error``
``CONVERSATION_ID``        ``memory``           ``before_request`` (or a surface, before it)
``CONVERSATION_POSITION``  a surface           before the pipeline (Responses ``previous_response_id``)
``CONVERSATION_READ_ONLY`` a surface           before the pipeline (Responses ``store: false``)
``CONVERSATION_OPTIONAL``  a surface           before the pipeline (Responses, storing by default)
``CONVERSATION_APPENDED``  ``memory``           ``after_response``
``DEPLOYMENT``             the core             ``call_provider`` (load-balanced routes)
``UPSTREAM_GATE``          ``circuit_breaker``  ``call_provider`` (read by the core's pick)
``BODY_REDACTOR``          ``guardrails``       ``before_request`` (read by ``request_store``)
``SEMANTIC_MATCH``         ``semantic_cache``   ``cache_lookup`` (an answer served by meaning)
=========================  ===================  ===============================================

The helpers at the end read facts with the fallbacks every accounting plugin agrees on.
"""
from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING, Any, Callable

from .accounting import FALLBACK_MAX_COMPLETION_TOKENS, PromptEstimate, TokenUsage, max_completion_tokens
from .balancing import UpstreamGate
from .identity import ClientKey
from .messages import message_text
from .state import StateKey

if TYPE_CHECKING:
    from .context import RequestContext
    from .responses import Completion

__all__ = [
    "CLIENT_KEY",
    "PROMPT_ESTIMATE",
    "USAGE",
    "USAGE_ESTIMATED",
    "WORST_CASE_COST_USD",
    "COST_USD",
    "CONCURRENCY_WAIT_SECONDS",
    "DEADLINE",
    "ATTEMPT_DEADLINE",
    "GUARDRAIL_FINDINGS",
    "GuardrailRecord",
    "CONVERSATION_ID",
    "CONVERSATION_POSITION",
    "CONVERSATION_READ_ONLY",
    "CONVERSATION_OPTIONAL",
    "CONVERSATION_APPENDED",
    "DEPLOYMENT",
    "UPSTREAM_GATE",
    "BODY_REDACTOR",
    "SEMANTIC_MATCH",
    "ALL_FACTS",
    "billable_usage",
    "key_id",
    "prompt_estimate",
]

CLIENT_KEY: StateKey[ClientKey] = StateKey(
    "client_key",
    ClientKey,
    "The gateway key the request was authenticated with (never the secret). Set by the core from "
    "the first authenticate hook that recognised the credential; absent for anonymous requests.",
)
PROMPT_ESTIMATE: StateKey[PromptEstimate] = StateKey(
    "prompt_estimate",
    PromptEstimate,
    "Tokens the request may use, counted before the call: what rate limits and budgets reserve.",
)
USAGE: StateKey[dict[str, Any]] = StateKey(
    "usage",
    dict,
    "The answer's token usage in OpenAI's shape (prompt_tokens, completion_tokens, details): the "
    "provider's own figures, also for a stream whose usage chunk the client did not ask for.",
)
USAGE_ESTIMATED: StateKey[bool] = StateKey(
    "usage_estimated", bool, "True when USAGE was counted by the gateway because the provider reported none."
)
WORST_CASE_COST_USD: StateKey["Decimal | None"] = StateKey(
    "worst_case_cost_usd",
    Decimal,
    "The most this request can cost (prompt estimate at the input price plus the completion limit "
    "at the output price); None when its model has no price.",
)
COST_USD: StateKey["Decimal | None"] = StateKey(
    "cost_usd",
    Decimal,
    "What the answer cost upstream in US dollars (exact decimal); 0 for a cache HIT; None when the "
    "model has no price.",
)
CONCURRENCY_WAIT_SECONDS: StateKey[float] = StateKey(
    "concurrency_wait_seconds", float, "How long the request's last attempt waited for a concurrency slot."
)
DEADLINE: StateKey[float] = StateKey(
    "deadline",
    float,
    "When the whole request must be answered, on the perf_counter() clock. Read it through "
    "ctx.remaining().",
)

GuardrailRecord = tuple[str, int, str, str]
"""What the guardrails found of one kind on one side of a request, never the value found:
``(kind, count, action, side)``, e.g. ``("EMAIL", 2, "mask", "request")``. ``kind`` is short and
upper case, from the set the configured detectors declare; ``action`` is ``block``, ``mask`` or
``log``; ``side`` is ``request`` (what the client sent) or ``answer`` (what the model said). A
plain tuple, so it serialises as JSON (orjson included) and unpacks as
``for kind, count, action, side in ctx[GUARDRAIL_FINDINGS]``."""


GUARDRAIL_FINDINGS: StateKey[tuple[GuardrailRecord, ...]] = StateKey(
    "guardrail_findings",
    tuple,
    "What the guardrails found in the request and the answer: (kind, count, action, side) "
    "tuples (GuardrailRecord), never the values found; the answer's records are added in "
    "after_response (or on_error, for a stream cut off).",
)
CONVERSATION_ID: StateKey[str] = StateKey(
    "conversation_id",
    str,
    "The server-side conversation the request continues (the memory plugin sets it from "
    "x-hookgate-conversation; a surface such as Responses may set it before the pipeline runs, "
    "to an id or to hookgate.conversations.NEW_CONVERSATION).",
)
CONVERSATION_POSITION: StateKey[int] = StateKey(
    "conversation_position",
    int,
    "Set by a surface with CONVERSATION_ID: continue the conversation as it was at this position "
    "(a stored response's). When it has moved on, or another turn is in progress, the memory plugin "
    "puts the turn in a new conversation holding the messages before it (a branch).",
)
CONVERSATION_READ_ONLY: StateKey[bool] = StateKey(
    "conversation_read_only",
    bool,
    "Set by a surface with CONVERSATION_ID: send the conversation's history but store nothing "
    "(Responses with store: false); no lease is taken.",
)
CONVERSATION_OPTIONAL: StateKey[bool] = StateKey(
    "conversation_optional",
    bool,
    "Set by a surface with CONVERSATION_ID = NEW_CONVERSATION when the client did not ask for a "
    "conversation (Responses: store is on by default): if the store cannot make one (unavailable, "
    "or the owner has as many as allowed), the memory plugin serves the request without one, "
    "storing nothing and leaving CONVERSATION_ID unset, instead of refusing it.",
)
CONVERSATION_APPENDED: StateKey[Any] = StateKey(
    "conversation_appended",
    object,
    "What the memory plugin stored for the request after its answer: a "
    "hookgate.conversations.Appended (the conversation's id and the positions of the messages "
    "added; a stored response's position is its end).",
)
DEPLOYMENT: StateKey[str] = StateKey(
    "deployment", str, "The name of the deployment of the route that served the last attempt (load balancing)."
)
UPSTREAM_GATE: StateKey[UpstreamGate] = StateKey(
    "upstream_gate",
    UpstreamGate,
    "Which deployments of a load-balanced route may take the attempt (hookgate.balancing.UpstreamGate): "
    "set by a circuit breaker around each attempt, asked by the core when it picks the deployment.",
)
BODY_REDACTOR: StateKey[Callable[[str, Any], Any]] = StateKey(
    "body_redactor",
    Callable,
    "How an observer that keeps bodies (the request store) must redact them: redact(side, body) "
    "returns a copy of the request ('request') or answer ('response') body with what must not be "
    "kept masked. Called once the request is over, on a worker thread (never on the event loop).",
)
SEMANTIC_MATCH: StateKey[float] = StateKey(
    "semantic_match",
    float,
    "The request was answered with the cached answer of another prompt that means the same (a "
    "semantic cache hit): the cosine similarity of the two prompts. Exact caches must not store such "
    "an answer under this request's key: it was chosen by meaning, and audits, deletions and TTLs of "
    "the semantic cache could no longer reach the copy.",
)
ATTEMPT_DEADLINE: StateKey[float] = StateKey(
    "attempt_deadline",
    float,
    "When the current upstream attempt must end, on the perf_counter() clock: an attempt cancelled "
    "after it is recorded as a timeout, not a cancellation.",
)

ALL_FACTS: tuple[StateKey[Any], ...] = (
    CLIENT_KEY,
    PROMPT_ESTIMATE,
    USAGE,
    USAGE_ESTIMATED,
    WORST_CASE_COST_USD,
    COST_USD,
    CONCURRENCY_WAIT_SECONDS,
    DEADLINE,
    ATTEMPT_DEADLINE,
    GUARDRAIL_FINDINGS,
    CONVERSATION_ID,
    CONVERSATION_POSITION,
    CONVERSATION_READ_ONLY,
    CONVERSATION_OPTIONAL,
    CONVERSATION_APPENDED,
    DEPLOYMENT,
    UPSTREAM_GATE,
    BODY_REDACTOR,
    SEMANTIC_MATCH,
)
"""Every fact declared here, for documentation and ``hookgate plugins``."""


def billable_usage(ctx: RequestContext, response: Completion | None = None) -> TokenUsage:
    """What this request consumed upstream: nothing for a cache HIT, else :data:`USAGE` (or,
    without a usage producer, the usage in ``response``)."""
    if ctx.cache_hit:
        return TokenUsage()
    usage = ctx.get(USAGE)
    return TokenUsage.of(usage if usage is not None else (response.usage if response is not None else None))


def prompt_estimate(ctx: RequestContext) -> PromptEstimate:
    """The request's :data:`PROMPT_ESTIMATE`, or a rough one without a token counter (four
    characters a token, labelled ``approx:chars``) so that limits still hold."""
    estimate = ctx.get(PROMPT_ESTIMATE)
    if estimate is not None:
        return estimate
    body = ctx.body
    if "messages" in body:
        chars = sum(len(message_text(m.get("content"))) + 16 for m in body.get("messages") or () if isinstance(m, dict))
    else:  # an embeddings input or a legacy completions prompt
        given = body.get("input", body.get("prompt"))
        items = [given] if isinstance(given, str) else given if isinstance(given, list) else []
        chars = sum(len(item) if isinstance(item, str) else 4 * len(item) if isinstance(item, list) else 4 for item in items)
    completion = 0 if ctx.kind == "embeddings" else max_completion_tokens(body, FALLBACK_MAX_COMPLETION_TOKENS)
    return PromptEstimate(chars // 4 + 3, completion, False, "approx:chars")


def key_id(ctx: RequestContext) -> str:
    """Whose request this is, for limits and the ledger: the gateway key's id, else the tenant
    (a hash of the client's credential), else ``anonymous``."""
    key = ctx.get(CLIENT_KEY)
    if key is not None:
        return key.id
    return ctx.tenant or "anonymous"
