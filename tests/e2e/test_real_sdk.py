"""The local stack with an API key: the real anthropic SDK talks to a scripted fake Messages API on 127.0.0.1."""

from __future__ import annotations

from decimal import Decimal

import pytest

from functions.agent.models import Usage
from functions.agent.pricing import default_price_book
from stepwise.local.stack import LocalStack
from tests.e2e.conftest import execution_history, http, wait
from tests.fakes.anthropic_server import FakeAnthropic, error, message

pytestmark = pytest.mark.e2e


def tool_use(call_id: str, tool_input: dict[str, str], **usage: int) -> tuple[int, dict[str, object]]:
    return 200, message(
        [{"type": "tool_use", "id": call_id, "name": "calculator", "input": tool_input}], "tool_use", **usage
    )


def test_overload_is_retried_by_the_workflow_and_bad_tool_input_reaches_the_model(
    stack: LocalStack, fake_api: FakeAnthropic
) -> None:
    # Given a provider that is overloaded once, then asks for a tool with bad input, then good input, then answers
    fake_api.script = [
        error(529, "overloaded_error", "Overloaded"),
        tool_use("toolu_a", {"expr": "6*7"}, input_tokens=1000, output_tokens=50),
        tool_use("toolu_b", {"expression": "6*7"}, input_tokens=300, output_tokens=40, cache_read_input_tokens=900),
        (
            200,
            message(
                [{"type": "text", "text": "6 * 7 = 42"}],
                "end_turn",
                input_tokens=400,
                output_tokens=12,
                cache_creation_input_tokens=200,
            ),
        ),
    ]
    # When a run is submitted over HTTP
    _, accepted = http(
        stack, "POST", "/runs", {"input": "What is 6*7?", "model": "claude-haiku-4-5", "tools": ["calculator"]}
    )
    run = wait(stack, accepted["run_id"], timeout=60)
    # Then the 529 was retried by Step Functions (not the SDK): four HTTP calls for three steps
    assert run["status"] == "SUCCEEDED", run
    assert run["output"] == "6 * 7 = 42"
    assert run["steps"] == 3 and len(fake_api.requests) == 4
    # And the model saw the invalid tool input as an error result, then the real result
    second_call, third_call = fake_api.requests[2], fake_api.requests[3]
    bad = second_call["messages"][-1]["content"][0]
    assert (
        bad["tool_use_id"] == "toolu_a" and bad["is_error"] is True and "invalid input for calculator" in bad["content"]
    )
    assert third_call["messages"][-1]["content"][0]["content"] == "42"
    assert [t["name"] for t in second_call["tools"]] == ["calculator"]
    assert second_call["model"] == "claude-haiku-4-5" and "system" in second_call
    assert "sk-ant-test" in (fake_api.headers[0].get("x-api-key", "") + fake_api.headers[0].get("authorization", ""))
    # And usage and cost are exactly the provider's numbers, cache tokens priced at cache rates
    assert run["usage"] == {
        "input_tokens": 1700,
        "output_tokens": 102,
        "cache_creation_input_tokens": 200,
        "cache_read_input_tokens": 900,
    }
    prices = default_price_book()
    expected = sum(
        (
            prices.cost("claude-haiku-4-5", usage)
            for usage in (
                Usage(input_tokens=1000, output_tokens=50),
                Usage(input_tokens=300, output_tokens=40, cache_read_input_tokens=900),
                Usage(input_tokens=400, output_tokens=12, cache_creation_input_tokens=200),
            )
        ),
        Decimal(0),
    )
    assert Decimal(str(run["cost_usd"])) == expected


@pytest.mark.parametrize(
    ("status", "kind", "text"),
    [
        (400, "invalid_request_error", "messages: text content blocks must be non-empty"),
        (401, "authentication_error", "invalid x-api-key"),
    ],
)
def test_a_fatal_provider_error_fails_the_run_at_once_with_its_message(
    stack: LocalStack, fake_api: FakeAnthropic, status: int, kind: str, text: str
) -> None:
    fake_api.script = [error(status, kind, text)]
    _, accepted = http(stack, "POST", "/runs", {"input": "hello"})
    run = wait(stack, accepted["run_id"])
    assert run["status"] == "FAILED"
    assert run["error"]["code"] == f"MODEL_{status}" and text in run["error"]["message"]
    assert len(fake_api.requests) == 1  # a fatal error is never retried
    events = execution_history(stack, run["run_id"])
    assert [e["stateEnteredEventDetails"]["name"] for e in events if "stateEnteredEventDetails" in e].count("Step") == 1


def test_cancel_while_the_model_is_answering_stops_the_run_and_still_accounts_the_billed_call(
    stack: LocalStack, fake_api: FakeAnthropic
) -> None:
    # Given a model call that is still in flight when the client cancels
    import threading

    release = threading.Event()

    def slow_tool_use(_: dict[str, object]) -> tuple[int, dict[str, object]]:
        release.wait(timeout=20)
        return tool_use("toolu_slow", {"expression": "1+1"}, input_tokens=100, output_tokens=10)

    fake_api.script = [slow_tool_use]
    _, accepted = http(stack, "POST", "/runs", {"input": "What is 1+1?"})
    run_id = accepted["run_id"]
    for _ in range(200):
        if fake_api.requests:
            break
        threading.Event().wait(0.05)
    assert fake_api.requests, "the model was never called"
    # When the run is cancelled, then the model answers
    status, cancelled = http(stack, "POST", f"/runs/{run_id}/cancel")
    release.set()
    run = wait(stack, run_id)  # CANCELLED at once; the in-flight step lands when the model answers
    for _ in range(200):
        if run["steps"]:
            break
        threading.Event().wait(0.05)
        _, run = http(stack, "GET", f"/runs/{run_id}")
    # Then the run stays CANCELLED, no tool ran and no further model call was made,
    # but the call the provider billed is recorded and charged, its tool call given the end's error result
    # (recorded with the step: nothing about the run can appear after its end)
    assert status == 200 and cancelled["status"] == "CANCELLED"
    assert run["status"] == "CANCELLED" and run["error"]["code"] == "CANCELLED"
    assert len(fake_api.requests) == 1
    assert run["steps"] == 1 and run["usage"]["input_tokens"] == 100 and run["usage"]["output_tokens"] == 10
    billed = default_price_book().cost(run["model"], Usage(input_tokens=100, output_tokens=10))
    assert Decimal(str(run["cost_usd"])) == billed
    _, steps = http(stack, "GET", f"/runs/{run_id}/steps")
    result = steps["steps"][0]["tool_calls"][0]["result"]
    assert result["is_error"] is True and result["duration_ms"] == 0
    assert result["content"].startswith("the run was cancelled before this call returned")


def test_a_retry_after_is_honoured_by_a_wait_state_not_a_retry(stack: LocalStack, fake_api: FakeAnthropic) -> None:
    # Given a provider that throttles once, asking to retry after 1 second
    throttled = (
        429,
        {"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}},
        {"retry-after": "1"},
    )
    fake_api.script = [throttled, (200, message([{"type": "text", "text": "done"}], "end_turn"))]
    # When a run is submitted
    _, accepted = http(stack, "POST", "/runs", {"input": "hello"})
    run = wait(stack, accepted["run_id"])
    # Then it succeeded after waiting in the RetryAfter Wait state: no Lambda slept, no Retry was spent
    assert run["status"] == "SUCCEEDED" and run["steps"] == 1 and len(fake_api.requests) == 2
    events = execution_history(stack, run["run_id"])
    entered = [e["stateEnteredEventDetails"]["name"] for e in events if "stateEnteredEventDetails" in e]
    assert entered[:5] == ["Begin", "Step", "Route", "RetryAfter", "Step"]
    assert not [e for e in events if e["type"] == "LambdaFunctionFailed" or e["type"] == "TaskFailed"]
