"""The spend report: figures per day / model / run, the trend and suggestions drawn from them."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest

from functions.agent.models import Usage
from functions.agent.routing import default_routing
from functions.agent.spend import SpendRow, build_report, period

TODAY = date(2026, 11, 21)


def report(rows: list[SpendRow], *, budget: Decimal | None = None, first: date = date(2026, 11, 15)) -> dict:  # type: ignore[type-arg]
    return build_report(
        tenant="acme",
        first=first,
        last=TODAY,
        rows=rows,
        tenant_daily_usd=budget,
        today=TODAY,
        routing=default_routing(),
    )


def day(d: str, cost: str, steps: int = 10, **usage: int) -> SpendRow:
    return SpendRow(day=d, cost_usd=Decimal(cost), steps=steps, usage=Usage(**usage))


def test_totals_per_day_model_and_run_with_cache_share() -> None:
    rows = [
        day("2026-11-20", "1.50", 10, input_tokens=1000, cache_read_input_tokens=3000),
        day("2026-11-21", "0.50", 5, input_tokens=500, cache_creation_input_tokens=500),
        SpendRow(
            "2026-11-20",
            Decimal("1.20"),
            8,
            Usage(input_tokens=800, cache_read_input_tokens=3000),
            model="claude-sonnet-5-5",
        ),
        SpendRow(
            "2026-11-21",
            Decimal("0.80"),
            7,
            Usage(input_tokens=700, cache_creation_input_tokens=500),
            model="claude-haiku-4-5",
        ),
        SpendRow("2026-11-20", Decimal("0.90"), 4, run_id="run_a"),
        SpendRow("2026-11-21", Decimal("0.10"), 1, run_id="run_a"),
        SpendRow("2026-11-21", Decimal("0.30"), 2, run_id="run_b"),
    ]
    r = report(rows)
    assert r["total"]["cost_usd"] == 2.0 and r["total"]["steps"] == 15
    assert r["total"]["usage"]["cache_read_share"] == round(3000 / 5000, 4)
    assert [d["day"] for d in r["days"]] == [f"2026-11-{n}" for n in range(15, 22)]
    assert r["days"][-2:] == [
        {"day": "2026-11-20", "cost_usd": 1.5, "steps": 10},
        {"day": "2026-11-21", "cost_usd": 0.5, "steps": 5},
    ]
    assert [(m["model"], m["cost_usd"], m["share"]) for m in r["models"]] == [
        ("claude-sonnet-5-5", 1.2, 0.6), ("claude-haiku-4-5", 0.8, 0.4),
    ]  # fmt: skip
    assert r["top_runs"] == [
        {"run_id": "run_a", "cost_usd": 1.0, "steps": 5},
        {"run_id": "run_b", "cost_usd": 0.3, "steps": 2},
    ]


def test_suggestions_name_the_dominant_model_a_rising_trend_the_budget_low_caching_and_a_costly_run() -> None:
    rows = [
        day("2026-11-16", "0.10", 20, input_tokens=10_000),
        day("2026-11-21", "9.00", 20, input_tokens=90_000, cache_read_input_tokens=1_000),
        SpendRow("2026-11-21", Decimal("8.50"), 30, Usage(input_tokens=95_000), model="claude-sonnet-5-5"),
        SpendRow("2026-11-21", Decimal("0.60"), 10, Usage(input_tokens=5_000), model="claude-haiku-4-5"),
        SpendRow("2026-11-21", Decimal("6.00"), 12, run_id="run_big"),
        SpendRow("2026-11-21", Decimal("1.00"), 3, run_id="run_small"),
    ]
    advice = report(rows, budget=Decimal("10"))["suggestions"]
    text = "\n".join(advice)
    assert "claude-sonnet-5-5 is 93% of spend" in text and "routing policy 'balanced'" in text
    assert "Spend is rising" in text
    assert "Today's spend is 90% of the tenant daily budget ($9.00 of $10.00)" in text
    assert "Only 1% of input tokens were cache reads" in text
    assert "Run run_big alone cost $6.00 (66% of the period" in text


def test_a_quiet_period_gives_no_suggestions() -> None:
    rows = [day(f"2026-11-{d}", "0.10", 2, input_tokens=100, cache_read_input_tokens=900) for d in range(15, 22)]
    rows += [
        SpendRow("2026-11-15", Decimal("0.35"), 7, model="claude-haiku-4-5"),
        SpendRow("2026-11-16", Decimal("0.35"), 7, model="claude-sonnet-5-5"),
    ]
    r = report(rows, budget=Decimal("5"))
    assert r["trend"]["direction"] == "flat" and r["suggestions"] == []
    assert report([])["suggestions"] == [] and report([])["total"]["cost_usd"] == 0


@pytest.mark.parametrize(
    ("first", "last", "problem"),
    [
        ("2026-11-22", "2026-11-21", "after"),
        ("2026-01-01", "2026-11-21", "at most 92 days"),
        ("yesterday", None, "Invalid"),
    ],
)
def test_a_bad_period_is_refused(first: str, last: str | None, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        period(first, last, TODAY)


def test_the_default_period_is_the_last_seven_days() -> None:
    assert period(None, None, TODAY) == (date(2026, 11, 15), TODAY)
