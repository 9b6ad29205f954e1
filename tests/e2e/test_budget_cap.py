"""A run spends its budget down to the cap: the local stack, the real anthropic SDK, a scripted Messages API."""

from __future__ import annotations

import json
import math
from decimal import Decimal
from typing import Any

import pytest

from functions.agent.pricing import default_price_book
from stepwise.local.stack import LocalStack
from tests.e2e.conftest import http, wait
from tests.fakes.anthropic_server import FakeAnthropic, message

pytestmark = pytest.mark.e2e
WANTED_OUTPUT = 300  # tokens the scripted model writes per call, if the request allows them


def verbose_calculator_user(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """A reply as the API bills it: the whole prompt as input (~4 characters a token), at most ``max_tokens``
    out; cut off (stop_reason max_tokens) where the request allows fewer than it wants to write."""
    prompt = json.dumps({key: body.get(key) for key in ("system", "tools", "messages")})
    usage = {"input_tokens": math.ceil(len(prompt) / 4), "output_tokens": min(WANTED_OUTPUT, body["max_tokens"])}
    if body["max_tokens"] < WANTED_OUTPUT:
        return 200, message([{"type": "text", "text": "So far the sum is"}], "max_tokens", **usage)
    call = {"type": "tool_use", "id": f"toolu_{len(body['messages'])}", "name": "calculator",
            "input": {"expression": f"{len(body['messages'])} + 1"}}  # fmt: skip
    return 200, message([{"type": "text", "text": "I will add one more."}, call], "tool_use", **usage)


def test_a_run_capped_at_one_cent_spends_at_least_80_percent_of_it_and_never_more(
    stack: LocalStack, fake_api: FakeAnthropic
) -> None:
    # Given a model that keeps calling the calculator, each call ~$0.002 on claude-haiku-4-5
    fake_api.script = [verbose_calculator_user] * 20
    # When a run capped at $0.01 is submitted over HTTP
    body = {"input": "Keep adding one.", "model": "claude-haiku-4-5", "tools": ["calculator"],
            "budget": {"max_usd": 0.01, "max_steps": 20}}  # fmt: skip
    _, accepted = http(stack, "POST", "/runs", body)
    run = wait(stack, accepted["run_id"], timeout=120)
    # Then a budget stopped it after it spent at least $0.008 of its $0.01, and no more than that
    assert run["status"] == "BUDGET_EXCEEDED" and run["error"]["code"] == "MAX_USD", run
    spent = Decimal(str(run["cost_usd"]))
    assert Decimal("0.008") <= spent <= Decimal("0.01"), spent
    # And the SDK sent the shrunk allowance near the cap: what the budget left, never below the smallest call
    allowances = [request["max_tokens"] for request in fake_api.requests]
    assert allowances[0] == 1024 and allowances[-1] < 1024 and min(allowances) >= 64, allowances
    # And the cost is exactly what the API reported, at list prices
    prices = default_price_book()
    assert run["usage"]["output_tokens"] == sum(min(WANTED_OUTPUT, n) for n in allowances)
    billed = prices.price("claude-haiku-4-5")
    expected = (run["usage"]["input_tokens"] * billed.input + run["usage"]["output_tokens"] * billed.output) / 10**6
    assert spent == expected
    print(f"\n$0.01 cap on the local stack: spent ${spent} in {len(allowances)} calls, allowances {allowances}")
