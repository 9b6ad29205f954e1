"""Prices per model, loaded from the versioned ``data/pricing.json``."""

from __future__ import annotations

import json
import math
from collections.abc import Collection
from dataclasses import dataclass
from decimal import Decimal
from functools import cache
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from functions.agent.errors import UnknownModelError, clip
from functions.agent.models import Usage

PRICING_FILE = Path(__file__).parent / "data" / "pricing.json"
_PER_TOKEN = Decimal(1_000_000)


class ModelPrice(BaseModel):
    """USD per million tokens."""

    model_config = ConfigDict(defer_build=True)

    input: Decimal
    output: Decimal
    cache_write_5m: Decimal
    cache_write_1h: Decimal
    cache_read: Decimal
    source: str
    as_of: str
    provider: str = "anthropic"
    aliases: list[str] = []
    end_of_life: str | None = None  # YYYY-MM-DD: runs on the model are refused after it

    @property
    def dearest_input(self) -> Decimal:
        """The highest rate an input token can be billed at (a cache write)."""
        return max(self.input, self.cache_write_5m, self.cache_write_1h)

    def dearest_input_with(self, cache_ttls: Collection[str]) -> Decimal:
        """The highest rate an input token of a prompt can be billed at when its cache breakpoints have these
        TTLs: the API writes the cache only at a marked breakpoint, at that marker's TTL's rate."""
        writes = {"5m": self.cache_write_5m, "1h": self.cache_write_1h}
        return max([self.input, *(writes.get(ttl, self.dearest_input) for ttl in cache_ttls)])


@dataclass(frozen=True)
class CallPrice:
    """The most one call can cost, as a function of its output allowance (``max_tokens``)."""

    prompt_usd: Decimal  # the whole prompt at the dearest rate it can be billed at
    output_usd: Decimal  # one output token

    def worst_case(self, max_tokens: int) -> Decimal:
        return self.prompt_usd + max_tokens * self.output_usd

    def tokens_covered(self, amount: Decimal) -> int:
        """The largest ``max_tokens`` whose worst case ``amount`` covers (negative: not even the prompt)."""
        if self.output_usd <= 0:
            return 1 << 30 if amount >= self.prompt_usd else -1
        return math.floor((amount - self.prompt_usd) / self.output_usd)


class PriceBook:
    def __init__(self, prices: dict[str, ModelPrice], version: str) -> None:
        self.version = version
        self._prices: dict[str, ModelPrice] = {}
        for model_id, price in prices.items():
            self._prices[model_id] = price
            for alias in price.aliases:
                self._prices[alias] = price

    def model_ids(self) -> list[str]:
        """Every id priced, aliases included."""
        return sorted(self._prices)

    def knows(self, model: str) -> bool:
        return model in self._prices

    def price(self, model: str) -> ModelPrice:
        try:
            return self._prices[model]
        except KeyError:
            raise UnknownModelError(
                f"no price is known for model {clip(model)!r}; known: {', '.join(sorted(self._prices))}"
            ) from None

    def cost(self, model: str, usage: Usage) -> Decimal:
        """Cost of one call. Cache writes and reads are priced at their own rates, never as plain input."""
        price = self.price(model)
        cache_1h = min(usage.cache_creation_1h_input_tokens, usage.cache_creation_input_tokens)
        cache_5m = usage.cache_creation_input_tokens - cache_1h
        micro = (
            usage.input_tokens * price.input
            + usage.output_tokens * price.output
            + cache_5m * price.cache_write_5m
            + cache_1h * price.cache_write_1h
            + usage.cache_read_input_tokens * price.cache_read
        )
        return micro / _PER_TOKEN

    def worst_case(self, model: str, prompt_tokens: int, max_output_tokens: int) -> Decimal:
        """The most one call can cost: every prompt token at the dearest input rate, the full output allowance."""
        return self.call_price(model, prompt_tokens).worst_case(max_output_tokens)

    def call_price(self, model: str, prompt_tokens: int, *, cache_ttls: Collection[str] | None = None) -> CallPrice:
        """What one call of ``prompt_tokens`` can cost: every prompt token at the dearest input rate (of a
        prompt whose cache breakpoints have ``cache_ttls``; None: any rate), plus the output rate per token."""
        price = self.price(model)
        rate = price.dearest_input if cache_ttls is None else price.dearest_input_with(cache_ttls)
        return CallPrice(prompt_tokens * rate / _PER_TOKEN, price.output / _PER_TOKEN)

    def with_extra(self, extra: dict[str, ModelPrice]) -> PriceBook:
        """This book plus prices configured at deploy time (they win over the file for the same id)."""
        merged = {model_id: self._prices[model_id] for model_id in self._prices}
        merged.update(extra)
        return PriceBook({k: v.model_copy(update={"aliases": []}) for k, v in merged.items()}, self.version + "+extra")


@cache
def default_price_book() -> PriceBook:
    data = json.loads(PRICING_FILE.read_text())
    prices = {model_id: ModelPrice.model_validate(entry) for model_id, entry in data["models"].items()}
    return PriceBook(prices, version=data["version"])


def parse_extra_prices(raw: str) -> dict[str, ModelPrice]:
    """Deploy-time prices: JSON ``{model_id: {input, output, cache_write_5m, cache_write_1h, cache_read,
    source, as_of}}`` in USD per million tokens."""
    entries = json.loads(raw)
    if not isinstance(entries, dict):
        raise ValueError("extra prices must be a JSON object of model id -> prices")
    return {model_id: ModelPrice.model_validate(entry) for model_id, entry in entries.items()}
