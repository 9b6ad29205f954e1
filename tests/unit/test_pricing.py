"""Price book: the versioned pricing.json is complete and consistent, and cost() prices every token class."""

from __future__ import annotations

import json
import re
from decimal import Decimal
from typing import Any

import pytest

from functions.agent.errors import UnknownModelError
from functions.agent.models import Usage
from functions.agent.pricing import PRICING_FILE, ModelPrice, PriceBook, default_price_book

PRICE_FIELDS = ("input", "output", "cache_write_5m", "cache_write_1h", "cache_read")
RAW: dict[str, Any] = json.loads(PRICING_FILE.read_text())
MODELS: dict[str, dict[str, Any]] = RAW["models"]


def d(value: float) -> Decimal:
    """A price from the JSON file as the exact decimal it was written as."""
    return Decimal(str(value))


def test_the_file_declares_version_currency_and_unit() -> None:
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", RAW["version"])
    assert RAW["currency"] == "USD"
    assert RAW["unit"] == "per million tokens"
    assert default_price_book().version == RAW["version"]
    assert len(MODELS) >= 3


@pytest.mark.parametrize("model_id", sorted(MODELS))
def test_every_model_has_five_prices_a_source_and_a_date(model_id: str) -> None:
    entry = MODELS[model_id]

    for field in PRICE_FIELDS:
        assert isinstance(entry.get(field), int | float), f"{model_id} lacks {field}"
        assert entry[field] > 0, f"{model_id} {field} must be positive"
    assert isinstance(entry.get("source"), str) and entry["source"].strip()
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", entry.get("as_of", "")), f"{model_id} as_of is not a date"
    assert set(entry) <= {*PRICE_FIELDS, "source", "as_of", "aliases", "provider", "end_of_life"}, (
        f"{model_id} has unexpected fields"
    )
    assert entry.get("provider") in ("anthropic", "bedrock"), f"{model_id} names no provider"


@pytest.mark.parametrize("model_id", sorted(MODELS))
def test_cache_prices_follow_the_documented_multipliers(model_id: str) -> None:
    price = default_price_book().price(model_id)

    # Cache write 5 min = 1.25x input, 1 h = 2x input, cache read = 0.1x input (exact in Decimal)
    assert price.cache_write_5m == price.input * Decimal("1.25")
    assert price.cache_write_1h == price.input * 2
    assert price.cache_read == price.input * Decimal("0.1")
    assert price.output > price.input


@pytest.mark.parametrize("model_id", sorted(MODELS))
def test_prices_are_loaded_as_the_exact_decimals_of_the_file(model_id: str) -> None:
    price = default_price_book().price(model_id)

    for field in PRICE_FIELDS:
        assert getattr(price, field) == d(MODELS[model_id][field]), field


@pytest.mark.parametrize(
    ("alias", "model_id"),
    [(alias, model_id) for model_id, entry in sorted(MODELS.items()) for alias in entry.get("aliases", [])],
)
def test_aliases_resolve_to_their_model(alias: str, model_id: str) -> None:
    book = default_price_book()

    assert book.knows(alias)
    assert book.price(alias) == book.price(model_id)


def test_named_aliases_resolve() -> None:
    book = default_price_book()

    assert book.price("claude-sonnet-4-5-20250929") is book.price("claude-sonnet-4-5")
    assert book.price("claude-haiku-4-5-20251001") is book.price("claude-haiku-4-5")
    assert book.price("claude-opus-4-5-20251101") is book.price("claude-opus-4-5")


def test_aliases_do_not_collide_with_other_models() -> None:
    names = [name for model_id, entry in MODELS.items() for name in [model_id, *entry.get("aliases", [])]]

    assert len(names) == len(set(names))


def test_cost_prices_every_token_class_at_its_own_rate() -> None:
    # Given claude-sonnet-4-5 usage: 1000 in, 200 out, 3000 cache write (1000 of them 1 h), 5000 cache read
    usage = Usage(
        input_tokens=1000,
        output_tokens=200,
        cache_creation_input_tokens=3000,
        cache_creation_1h_input_tokens=1000,
        cache_read_input_tokens=5000,
    )
    p = MODELS["claude-sonnet-4-5"]
    by_hand = (
        1000 * d(p["input"])  # 1000 * 3.00 = 3000
        + 200 * d(p["output"])  # 200 * 15.00 = 3000
        + 2000 * d(p["cache_write_5m"])  # 2000 * 3.75 = 7500
        + 1000 * d(p["cache_write_1h"])  # 1000 * 6.00 = 6000
        + 5000 * d(p["cache_read"])  # 5000 * 0.30 = 1500
    ) / 1_000_000

    # When it is priced
    cost = default_price_book().cost("claude-sonnet-4-5", usage)

    # Then it is exactly $0.021
    assert by_hand == Decimal("0.021")
    assert cost == by_hand
    assert isinstance(cost, Decimal)


def test_cost_via_an_alias_is_the_same() -> None:
    usage = Usage(input_tokens=1000, output_tokens=200, cache_creation_input_tokens=3000,
                  cache_creation_1h_input_tokens=1000, cache_read_input_tokens=5000)  # fmt: skip

    assert default_price_book().cost("claude-sonnet-4-6", usage) == Decimal("0.021")


@pytest.mark.parametrize(
    ("usage", "expected"),
    [
        (Usage(), Decimal(0)),
        (Usage(input_tokens=1_000_000), Decimal(1)),
        (Usage(output_tokens=1_000_000), Decimal(5)),
        (Usage(cache_creation_input_tokens=1_000_000), Decimal("1.25")),  # no split reported: all 5 min
        (Usage(cache_creation_input_tokens=1_000_000, cache_creation_1h_input_tokens=1_000_000), Decimal(2)),
        (Usage(cache_read_input_tokens=1_000_000), Decimal("0.1")),
        (Usage(input_tokens=1), Decimal("0.000001")),
    ],
)
def test_cost_of_single_token_classes_on_haiku(usage: Usage, expected: Decimal) -> None:
    assert default_price_book().cost("claude-haiku-4-5", usage) == expected


def test_cache_tokens_are_not_priced_as_plain_input() -> None:
    book = default_price_book()
    reads = Usage(cache_read_input_tokens=10_000)
    writes = Usage(cache_creation_input_tokens=10_000)
    plain = Usage(input_tokens=10_000)

    # Reads are 10x cheaper than plain input, 5 min writes 25 % dearer, on every model
    for model_id in MODELS:
        assert book.cost(model_id, reads) * 10 == book.cost(model_id, plain)
        assert book.cost(model_id, writes) == book.cost(model_id, plain) * Decimal("1.25")
        assert book.cost(model_id, reads) != book.cost(model_id, plain)


def test_a_1h_split_larger_than_the_cache_writes_is_clamped() -> None:
    # Given an inconsistent report: more 1 h tokens than cache writes in total
    usage = Usage(cache_creation_input_tokens=100, cache_creation_1h_input_tokens=500)

    # Then only the 100 written tokens are priced, all at the 1 h rate
    assert default_price_book().cost("claude-sonnet-4-5", usage) == 100 * Decimal("6.0") / 1_000_000


@pytest.mark.parametrize("model", ["gpt-4o", "claude-3-unknown", "", "CLAUDE-SONNET-4-5", "claude-sonnet-4-5 "])
def test_unknown_model_is_refused_never_priced_as_zero(model: str) -> None:
    book = default_price_book()

    assert not book.knows(model)
    with pytest.raises(UnknownModelError) as raised:
        book.cost(model, Usage(input_tokens=1))
    assert repr(model) in str(raised.value)
    assert "claude-sonnet-4-5" in str(raised.value)  # the known models are listed

    with pytest.raises(UnknownModelError, match="no price is known"):
        book.price(model)


def test_a_price_book_built_in_code_works_the_same() -> None:
    price = ModelPrice(
        input=Decimal(2), output=Decimal(8), cache_write_5m=Decimal("2.5"), cache_write_1h=Decimal(4),
        cache_read=Decimal("0.2"), source="test", as_of="2026-01-01", aliases=["m-alias"],
    )  # fmt: skip
    book = PriceBook({"m": price}, version="test")

    assert book.version == "test"
    assert book.cost("m-alias", Usage(input_tokens=500_000, output_tokens=250_000)) == Decimal(3)
    with pytest.raises(UnknownModelError):
        book.cost("other", Usage())
