"""The spend report: totals per day and per model, cache share, top runs, the trend and suggestions.

Pure: built from the tenant's spend rows (what the step transactions added up) and the budget settings.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from functions.agent.models import Usage
from functions.agent.routing import RoutingConfig

MAX_REPORT_DAYS = 92
DOMINANT_MODEL_SHARE = 0.7
TOP_RUN_SHARE = 0.3
RISING_CHANGE = 0.2
LOW_CACHE_SHARE = 0.2
TOP_RUNS = 10


@dataclass(frozen=True)
class SpendRow:
    """One counter of the tenant's spend partition: a day total, a day x model total, or a day x run total."""

    day: str
    cost_usd: Decimal
    steps: int
    usage: Usage = field(default_factory=Usage)
    model: str | None = None
    run_id: str | None = None


def merged(rows: list[SpendRow]) -> list[SpendRow]:
    """Rows of one counter (its shards, and the unsharded item earlier versions wrote) added up into one row; a
    counter with no steps (the unsharded day item holds only ``committed_usd`` now) is left out."""
    by_counter: dict[tuple[str, str | None, str | None], SpendRow] = {}
    for row in rows:
        key = (row.day, row.model, row.run_id)
        if (seen := by_counter.get(key)) is not None:
            row = SpendRow(row.day, seen.cost_usd + row.cost_usd, seen.steps + row.steps, seen.usage + row.usage,
                           row.model, row.run_id)  # fmt: skip
        by_counter[key] = row
    return [row for row in by_counter.values() if row.steps]


def period(start: str | None, end: str | None, today: date) -> tuple[date, date]:
    """Parse ``from``/``to`` (YYYY-MM-DD, UTC days, inclusive). Default: the last 7 days. Raises ValueError."""
    last = date.fromisoformat(end) if end else today
    first = date.fromisoformat(start) if start else last - timedelta(days=6)
    if first > last:
        raise ValueError(f"from ({first}) is after to ({last})")
    if (last - first).days + 1 > MAX_REPORT_DAYS:
        raise ValueError(f"the period may span at most {MAX_REPORT_DAYS} days")
    return first, last


def _usage_view(usage: Usage) -> dict[str, Any]:
    total_input = usage.input_tokens + usage.cache_creation_input_tokens + usage.cache_read_input_tokens
    return {
        **usage.public(),
        "cache_read_share": round(usage.cache_read_input_tokens / total_input, 4) if total_input else 0.0,
    }


def _money(value: Decimal) -> float:
    return float(round(value, 8))


def build_report(
    *,
    tenant: str,
    first: date,
    last: date,
    rows: list[SpendRow],
    tenant_daily_usd: Decimal | None,
    today: date,
    routing: RoutingConfig,
) -> dict[str, Any]:
    days = [first + timedelta(days=n) for n in range((last - first).days + 1)]
    by_day = {row.day: row for row in rows if row.model is None and row.run_id is None}
    models: dict[str, list[SpendRow]] = defaultdict(list)
    runs: dict[str, list[SpendRow]] = defaultdict(list)
    for row in rows:
        if row.model is not None:
            models[row.model].append(row)
        elif row.run_id is not None:
            runs[row.run_id].append(row)

    total_cost = sum((r.cost_usd for r in by_day.values()), Decimal(0))
    total_usage = sum((r.usage for r in by_day.values()), Usage())
    day_view = [
        {
            "day": day.isoformat(),
            "cost_usd": _money(by_day[day.isoformat()].cost_usd) if day.isoformat() in by_day else 0.0,
            "steps": by_day[day.isoformat()].steps if day.isoformat() in by_day else 0,
        }
        for day in days
    ]
    model_view = sorted(
        (
            {
                "model": model,
                "cost_usd": _money(cost := sum((r.cost_usd for r in model_rows), Decimal(0))),
                "share": round(float(cost / total_cost), 4) if total_cost else 0.0,
                "steps": sum(r.steps for r in model_rows),
                "usage": _usage_view(sum((r.usage for r in model_rows), Usage())),
            }
            for model, model_rows in models.items()
        ),
        key=lambda m: -float(str(m["cost_usd"])),
    )
    top_runs = sorted(
        (
            {
                "run_id": run_id,
                "cost_usd": _money(sum((r.cost_usd for r in run_rows), Decimal(0))),
                "steps": sum(r.steps for r in run_rows),
            }
            for run_id, run_rows in runs.items()
        ),
        key=lambda r: -float(str(r["cost_usd"])),
    )[:TOP_RUNS]

    half = len(days) // 2
    first_half = sum((Decimal(str(d["cost_usd"])) for d in day_view[:half]), Decimal(0))
    second_half = sum((Decimal(str(d["cost_usd"])) for d in day_view[len(days) - half :]), Decimal(0))
    change = float((second_half - first_half) / first_half) if first_half else None
    direction = "flat"
    if change is not None and change > RISING_CHANGE:
        direction = "rising"
    elif change is not None and change < -RISING_CHANGE:
        direction = "falling"
    elif change is None and second_half > 0:
        direction = "rising"
    trend = {
        "first_half_usd": _money(first_half),
        "second_half_usd": _money(second_half),
        "change": round(change, 4) if change is not None else None,
        "direction": direction,
    }

    today_cost = by_day[today.isoformat()].cost_usd if today.isoformat() in by_day else Decimal(0)
    budget = {
        "tenant_daily_usd": float(tenant_daily_usd) if tenant_daily_usd is not None else None,
        "today_usd": _money(today_cost),
        "today_percent": round(float(today_cost / tenant_daily_usd * 100), 1) if tenant_daily_usd else None,
    }
    report: dict[str, Any] = {
        "tenant": tenant,
        "from": first.isoformat(),
        "to": last.isoformat(),
        "currency": "USD",
        "total": {
            "cost_usd": _money(total_cost),
            "steps": sum(r.steps for r in by_day.values()),
            "usage": _usage_view(total_usage),
        },
        "days": day_view,
        "models": model_view,
        "top_runs": top_runs,
        "trend": trend,
        "budget": budget,
    }
    report["suggestions"] = suggestions(report, routing)
    return report


def suggestions(report: dict[str, Any], routing: RoutingConfig) -> list[str]:
    """Concrete, checkable advice from the report's own figures."""
    advice: list[str] = []
    total = report["total"]["cost_usd"]
    if not total:
        return advice
    lead = report["models"][0] if report["models"] else None
    if lead and lead["share"] >= DOMINANT_MODEL_SHARE:
        cheaper = routing.downgrades.get(lead["model"])
        policy = next((name for name, p in routing.policies.items() if p.strong == lead["model"]), None)
        step = (
            f"run with the routing policy '{policy}' (the cheap model digests tool results)"
            if policy
            else (f"move routine runs to {cheaper}" if cheaper else "review which runs need it")
        )
        advice.append(f"{lead['model']} is {lead['share']:.0%} of spend (${lead['cost_usd']:.2f}): {step}.")
    trend = report["trend"]
    if trend["direction"] == "rising":
        change = f"{trend['change']:.0%}" if trend["change"] is not None else "from nothing"
        advice.append(
            f"Spend is rising: ${trend['first_half_usd']:.2f} in the first half of the period, "
            f"${trend['second_half_usd']:.2f} in the second ({change}). Check the top runs and set per-run max_usd."
        )
    budget = report["budget"]
    if budget["today_percent"] is not None and budget["today_percent"] >= 80:
        advice.append(
            f"Today's spend is {budget['today_percent']:.0f}% of the tenant daily budget "
            f"(${budget['today_usd']:.2f} of ${budget['tenant_daily_usd']:.2f}): runs will be refused at 100%; "
            f"routing downgrades models from {routing.downgrade_at_percent:g}%."
        )
    usage = report["total"]["usage"]
    if usage["cache_read_share"] < LOW_CACHE_SHARE and report["total"]["steps"] >= 10:
        advice.append(
            f"Only {usage['cache_read_share']:.0%} of input tokens were cache reads: check prompt caching is on "
            "(STEPWISE_PROMPT_CACHE_TTL) and that the tools + system prefix reaches the model's minimum cacheable size."
        )
    top = report["top_runs"][0] if report["top_runs"] else None
    if top and top["cost_usd"] >= TOP_RUN_SHARE * total and len(report["top_runs"]) > 1:
        advice.append(
            f"Run {top['run_id']} alone cost ${top['cost_usd']:.2f} ({top['cost_usd'] / total:.0%} of the period, "
            f"{top['steps']} steps): give such runs a budget.max_usd."
        )
    return advice
