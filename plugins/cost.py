"""``cost``: what every request costs, in exact decimal dollars.

Prices are US dollars per million input, cached-input and output tokens per model, from a table
shipped with hookgate (``plugins/data/prices.toml``, dated) that plugins.toml overrides and
extends under ``[plugins.cost.prices]``, or replaces with ``price_file``. A request's cost is

    (prompt - cached) × input + cached × cached_input + completion × output, / 1,000,000

over the provider's own usage (the :data:`~hookgate.facts.USAGE` fact; reasoning tokens are part
of completion tokens and billed as output), computed with :class:`decimal.Decimal`, so $0.15 per
million is never 0.1499999. It is the :data:`~hookgate.facts.COST_USD` fact, the response header
``x-hookgate-cost-usd`` (JSON answers; a stream's headers leave before its usage is known, so its
cost is in the log and the ledger), and the request log. A cache HIT costs 0. A model with no price
has **no** cost, never a silent $0: no header, ``cost_usd: null`` and ``price_missing: true`` in
the log, and one warning per model. The shipped table prices the built-in ``echo`` and ``mock``
models at exactly $0.

Before the call it also prices the worst case (the prompt estimate at the full input price plus
the completion limit at the output price): the :data:`~hookgate.facts.WORST_CASE_COST_USD` fact
budget reserves. Its rules place it after token_counter (whose estimate and usage it reads).
"""
from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from decimal import Decimal
from importlib.resources import files
from pathlib import Path
from typing import Any, Mapping

import structlog
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from hookgate import Completion, GatewayError, PluginConfig, RequestContext, hookimpl
from hookgate.accounting import TokenUsage, format_usd
from hookgate.bounds import clip
from hookgate.facts import COST_USD, PROMPT_ESTIMATE, USAGE, WORST_CASE_COST_USD, prompt_estimate
from hookgate.rules import Produces, Reads

log = structlog.get_logger("hookgate.cost")

COST_HEADER = "x-hookgate-cost-usd"
PER_MILLION = Decimal(1_000_000)
SHIPPED_PRICES = "data/prices.toml"

# Provider snapshots carry a date (gpt-4o-mini-2024-07-18, claude-sonnet-4-20250514) or an alias
# suffix; they are priced as their base model unless the table names the snapshot itself.
_SNAPSHOT_SUFFIX = re.compile(r"-(\d{4}-\d{2}-\d{2}|\d{8}|latest)$")
_MAX_WARNED_MODELS = 1000


class ModelPrice(BaseModel):
    """USD per million tokens of one model."""

    model_config = ConfigDict(extra="forbid")

    input: Decimal = Field(ge=0, description="USD per million prompt tokens")
    cached_input: Decimal | None = Field(None, ge=0, description="USD per million cached prompt tokens (default: input)")
    output: Decimal = Field(ge=0, description="USD per million completion tokens, reasoning included")

    def cost(self, usage: TokenUsage) -> Decimal:
        """The exact cost of ``usage``."""
        cached = min(usage.cached, usage.prompt)
        cached_price = self.input if self.cached_input is None else self.cached_input
        total = (usage.prompt - cached) * self.input + cached * cached_price + usage.completion * self.output
        return total / PER_MILLION


class CostConfig(PluginConfig):
    """Settings of the cost plugin."""

    price_file: str | None = Field(None, description="a TOML price table used instead of the shipped one (same format)")
    prices: dict[str, ModelPrice] = Field(
        {}, description="per model name: prices that override or extend the table (USD per million tokens)"
    )


@dataclass(frozen=True, slots=True)
class PriceTable:
    """Model name → price, with the date the prices were taken."""

    prices: Mapping[str, ModelPrice]
    date: str

    def price_for(self, *names: str | None) -> ModelPrice | None:
        """The price of the first name known exactly, else of the first one known without its
        snapshot suffix."""
        candidates = [name for name in names if name]
        for name in candidates:
            if name in self.prices:
                return self.prices[name]
        for name in candidates:
            base = _SNAPSHOT_SUFFIX.sub("", name)
            if base in self.prices:
                return self.prices[base]
        return None

    @classmethod
    def load(cls, config: CostConfig) -> PriceTable:
        if config.price_file:
            source = config.price_file
            text = Path(config.price_file).read_text()
        else:
            source = "hookgate/plugins/" + SHIPPED_PRICES
            text = files("hookgate.plugins").joinpath(SHIPPED_PRICES).read_text()
        document = tomllib.loads(text)
        try:
            prices = {name: ModelPrice.model_validate(price) for name, price in (document.get("models") or {}).items()}
        except ValidationError as exc:
            raise ValueError(f"{source}: invalid price: {exc.errors()[0]['loc']} {exc.errors()[0]['msg']}") from None
        return cls({**prices, **config.prices}, str(document.get("date", "unknown")))


class Cost:
    """Prices every request from the provider's usage (exact decimals); x-hookgate-cost-usd."""

    Config = CostConfig
    roles = ("cost",)
    rules = (
        Reads(PROMPT_ESTIMATE, "before_request", why="the worst case is priced from the prompt estimate"),
        Produces(WORST_CASE_COST_USD, "before_request"),
        Reads(USAGE, "after_response", why="the answer is priced from its usage"),
        Reads(USAGE, "on_error", why="a stream cut off mid-way is priced from what it produced"),
        Produces(COST_USD, "after_response"),
        Produces(COST_USD, "on_error"),
    )

    def __init__(self, config: CostConfig) -> None:
        self.config = config
        self.table = PriceTable.load(config)
        self._warned: set[str] = set()

    @hookimpl
    async def startup(self) -> None:
        log.info("cost_prices_loaded", models=len(self.table.prices), prices_date=self.table.date)

    @hookimpl
    async def before_request(self, ctx: RequestContext) -> None:
        price = self.table.price_for(ctx.model)
        if price is None:
            ctx[WORST_CASE_COST_USD] = None
            return
        estimate = prompt_estimate(ctx)
        ctx[WORST_CASE_COST_USD] = price.cost(TokenUsage(prompt=estimate.prompt_tokens, completion=estimate.max_completion_tokens))

    @hookimpl
    async def after_response(self, ctx: RequestContext, response: Completion) -> None:
        if ctx.cache_hit:
            self._settle(ctx, Decimal(0))
            return
        self._settle(ctx, self._cost(ctx, response.body.get("model"), response.usage))

    @hookimpl
    async def on_error(self, ctx: RequestContext, error: GatewayError) -> None:
        if USAGE in ctx:  # e.g. a stream cut off mid-way: what it used so far
            self._settle(ctx, self._cost(ctx, None, None))

    def _cost(self, ctx: RequestContext, answered_by: str | None, answer_usage: Mapping[str, Any] | None) -> Decimal | None:
        upstream = ctx.route.upstream_model if ctx.route is not None else None
        price = self.table.price_for(ctx.model, upstream, answered_by)
        if price is None:
            self._warn_unpriced(clip(ctx.model or "?"))
            return None
        usage = ctx.get(USAGE)
        return price.cost(TokenUsage.of(usage if usage is not None else answer_usage))

    def _settle(self, ctx: RequestContext, cost: Decimal | None) -> None:
        ctx[COST_USD] = cost
        if cost is not None:
            ctx.response_headers[COST_HEADER] = format_usd(cost)

    def _warn_unpriced(self, model: str) -> None:
        if model in self._warned or len(self._warned) >= _MAX_WARNED_MODELS:
            return
        self._warned.add(model)
        log.warning(
            "cost_unknown_model",
            model=model,
            detail="no price for this model: its requests get no cost (add it under [plugins.cost.prices])",
        )

