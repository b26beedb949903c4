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
``GUARDRAIL_FINDINGS``     ``guardrails``       ``before_request`` and ``after_response``
``CONVERSATION_ID``        ``memory``           ``before_request`` (or a surface, before it)
``CONVERSATION_POSITION``  a surface           before the pipeline (Responses ``previous_response_id``)
``CONVERSATION_READ_ONLY`` a surface           before the pipeline (Responses ``store: false``)
``CONVERSATION_APPENDED``  ``memory``           ``after_response``
``DEPLOYMENT``             the core             ``call_provider`` (load-balanced routes)
=========================  ===================  ===============================================

The helpers at the end read facts with the fallbacks every accounting plugin agrees on.
"""
from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING, Any

from .accounting import FALLBACK_MAX_COMPLETION_TOKENS, PromptEstimate, TokenUsage, max_completion_tokens
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
    "CONVERSATION_ID",
    "CONVERSATION_POSITION",
    "CONVERSATION_READ_ONLY",
    "CONVERSATION_APPENDED",
    "DEPLOYMENT",
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

GUARDRAIL_FINDINGS: StateKey[tuple[Any, ...]] = StateKey(
    "guardrail_findings",
    tuple,
    "What the guardrails found in the request and the answer: (kind, count, action, side) records, "
    "never the values found.",
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
    CONVERSATION_APPENDED,
    DEPLOYMENT,
)
"""Every fact declared here, for documentation and ``hookgate plugins``."""


def billable_usage(ctx: RequestContext, response: Completion | None = None) -> TokenUsage:
    """What this request consumed upstream: nothing for a cache HIT, else :data:`USAGE` (or,
    without a usage producer, the usage in ``response``)."""
    if ctx.cache_status == "HIT":
        return TokenUsage()
    usage = ctx.get(USAGE)
    return TokenUsage.of(usage if usage is not None else (response.usage if response is not None else None))


def prompt_estimate(ctx: RequestContext) -> PromptEstimate:
    """The request's :data:`PROMPT_ESTIMATE`, or a rough one without a token counter (four
    characters a token, labelled ``approx:chars``) so that limits still hold."""
    estimate = ctx.get(PROMPT_ESTIMATE)
    if estimate is not None:
        return estimate
    chars = sum(len(message_text(m.get("content"))) + 16 for m in ctx.body.get("messages") or () if isinstance(m, dict))
    return PromptEstimate(chars // 4 + 3, max_completion_tokens(ctx.body, FALLBACK_MAX_COMPLETION_TOKENS), False, "approx:chars")


def key_id(ctx: RequestContext) -> str:
    """Whose request this is, for limits and the ledger: the gateway key's id, else the tenant
    (a hash of the client's credential), else ``anonymous``."""
    key = ctx.get(CLIENT_KEY)
    if key is not None:
        return key.id
    return ctx.tenant or "anonymous"
