"""Several steps per step invocation on the local stack (functions/agent/step_loop.py): a run whose tool calls are fast
built-ins takes its steps in one Step task, not one a step; a cancel while it loops stops it at its next step."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from bench.meter import entered
from stepwise.local.stack import LocalStack
from tests.e2e.conftest import execution_history, http, wait
from tests.fakes.anthropic_server import FakeAnthropic, message

pytestmark = pytest.mark.e2e

STEPS = 10


def calculator(n: int) -> tuple[int, dict[str, Any]]:
    call = {"type": "tool_use", "id": f"toolu_{n:04d}", "name": "calculator", "input": {"expression": f"{n} * 7"}}
    return 200, message([call], "tool_use")


def step_invocations(stack: LocalStack) -> int:
    """How many times the local stack has invoked the step function."""
    (step,) = [name for name, handler in stack.topology.handlers.items() if handler.endswith(".step.handler")]
    return stack.lambdas.invocations[step]


def test_a_ten_step_calculator_run_takes_its_steps_in_one_step_invocation(
    stack: LocalStack, fake_api: FakeAnthropic
) -> None:
    # Given a model that asks for a calculator call 9 times, then answers
    fake_api.script = [calculator(n) for n in range(STEPS - 1)] + [
        (200, message([{"type": "text", "text": "252 in all"}], "end_turn"))
    ]
    before = step_invocations(stack)
    # When a run of the calculator runs to its end
    status, accepted = http(stack, "POST", "/runs", {"input": "Add up n * 7", "tools": ["calculator"]})
    assert status == 202
    run = wait(stack, accepted["run_id"])
    # Then it made its 10 model calls, each a step recorded with its tool's result
    assert run["status"] == "SUCCEEDED" and run["steps"] == STEPS and len(fake_api.requests) == STEPS
    _, steps = http(stack, "GET", f"/runs/{run['run_id']}/steps")
    results = [c["result"]["content"] for s in steps["steps"] for c in s["tool_calls"]]
    assert results == [str(n * 7) for n in range(STEPS - 1)]
    # And the execution took one Step task for them all: 5 state transitions, where a Step task a step took 23
    history = execution_history(stack, run["run_id"])
    names = [e["stateEnteredEventDetails"]["name"] for e in history if "stateEnteredEventDetails" in e]
    assert names == ["Begin", "Step", "Route", "Finalize", "Done"]
    assert entered(history) == 5 < 1 + 2 * STEPS + 2
    assert step_invocations(stack) - before == 1


def test_a_cancel_while_the_invocation_loops_stops_it_at_its_next_step(
    stack: LocalStack, fake_api: FakeAnthropic
) -> None:
    # Given a run whose 4th model call is held until the test lets it answer
    answering, go_on = threading.Event(), threading.Event()

    def held(_: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        answering.set()
        go_on.wait(timeout=30)
        return calculator(3)

    fake_api.script = [calculator(0), calculator(1), calculator(2), held, *(calculator(n) for n in range(4, 12))]
    before = step_invocations(stack)
    status, accepted = http(stack, "POST", "/runs", {"input": "Add up n * 7", "tools": ["calculator"]})
    assert status == 202
    run_id = accepted["run_id"]
    assert answering.wait(timeout=30), "the 4th call never came"
    # When it is cancelled while that call is in flight, then the call answers
    status, cancelled = http(stack, "POST", f"/runs/{run_id}/cancel")
    assert status == 200 and cancelled["status"] == "CANCELLED"
    go_on.set()
    # Then that call is recorded (it was billed), its tool call not run, and no further step is taken
    deadline = time.monotonic() + 30
    while (steps := http(stack, "GET", f"/runs/{run_id}/steps")[1]["steps"]) and len(steps) < 4:
        assert time.monotonic() < deadline, "the call in flight was never recorded"
        time.sleep(0.1)
    _, run = http(stack, "GET", f"/runs/{run_id}")
    assert run["status"] == "CANCELLED" and run["steps"] == 4
    (late,) = steps[3]["tool_calls"]
    assert late["result"]["is_error"] is True
    time.sleep(1.0)  # (a loop that went on would have called the model again by now: it answers at once)
    assert len(fake_api.requests) == 4
    history = execution_history(stack, run_id)
    assert entered(history, "Step") == 1 and step_invocations(stack) - before == 1
