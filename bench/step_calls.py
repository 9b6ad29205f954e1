"""Per agent step, on the local stack: Step Functions state transitions, DynamoDB calls and their read/write units.

Runs tasks through the real workflow (offline stub model unless ANTHROPIC_API_KEY is set), counts every
DynamoDB API call the functions make and the units DynamoDB would bill for it (bench/meter.py), and the
StateEntered events of each execution (what Standard workflows bill as state transitions). A tool step's
transitions are the execution's beyond Begin, Finalize, Done and the last step's Step and Route, over its tool steps:
0 when its calls are fast built-ins (they run in the step, and the same Step invocation takes the next step:
functions/agent/step_loop.py), more when the Tools map runs one (Tools, one RunTool per call, AfterTools, then Step
and Route again). Each is checked against what the workflow should take (``Task.expected``); the exit status says
whether all matched.

Usage: python bench/step_calls.py [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.meter import Meter, entered, quiet, wait_for_execution
from stepwise.local.stack import LocalStack


@dataclass(frozen=True)
class Task:
    input: str
    expected: float | None  # state transitions per tool step (None: a run without one)
    tools: list[str] | None = None  # the run's tools (None: all)


TASKS = [
    Task("What is (17 * 23) + sqrt(16), and what time is it in Asia/Tokyo?", 0),  # 2 built-in calls, in the step
    Task("What is 6 * 7?", 0),  # 1 built-in call, in the step
    # http_fetch is not fast (the network): the Tools map runs it (it refuses: no domains are allowed)
    Task("Use http_fetch on https://example.com/ please.", 5, ["http_fetch"]),
    Task("Say hello.", None),  # 1 step, no tool
]


def tool_step_transitions(history: list[dict[str, Any]], steps: int) -> list[float]:
    """The transitions of a run's ``steps - 1`` tool steps, each: beyond Begin, Finalize, Done and the last step's
    own Step and Route (a run that ends by its answer), over them; none for a run without a tool step."""
    if steps < 2:
        return []
    fixed = sum(entered(history, state) for state in ("Begin", "Finalize", "Done")) + 2
    return [(entered(history) - fixed) / (steps - 1)] * (steps - 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5, help="runs per task")
    args = parser.parse_args()
    report = sys.stdout
    mismatches = 0
    with quiet(), LocalStack(port=0) as stack, Meter(stack) as meter:
        print(f"{'task':<66} {'steps':>5} {'map':>5} {'transitions':>11} {'ddb calls':>9} {'per step':>40}"
              f" {'per tool step':>13}", file=report)  # fmt: skip
        for task in TASKS:
            per_tool_step: list[float] = []
            for _ in range(args.runs):
                meter.clear()
                body: dict[str, Any] = {"input": task.input} | ({"tools": task.tools} if task.tools is not None else {})
                status, _, answer = stack.handle_http("POST", "/runs", {}, json.dumps(body))
                assert status == 202, answer
                run_id = json.loads(answer)["run_id"]
                history = wait_for_execution(stack, run_id)
                api = [i for i in meter.invocations if i.function == stack.topology.api_function]
                workflow = [i for i in meter.invocations if i.function != stack.topology.api_function]
                api_calls = sum(i.count("dynamodb") for i in api)
                workflow_calls = sum(i.count("dynamodb") for i in workflow)
                ops = Counter(c.operation for i in api + workflow for c in i.calls if c.service == "dynamodb")
                rru, wru = sum(i.rru for i in workflow), sum(i.wru for i in workflow)
                steps = json.loads(stack.handle_http("GET", f"/runs/{run_id}", {}, "")[2])["steps"]  # (not counted)
                tools = entered(history, "RunTool")
                transitions = entered(history)
                per_tool_step += tool_step_transitions(history, steps)
            measured = sum(per_tool_step) / len(per_tool_step) if per_tool_step else None
            matched = measured == task.expected
            mismatches += not matched
            shown = ("-" if measured is None else f"{measured:.1f}") + (
                "" if matched else f" (expected {task.expected})"
            )
            print(
                f"{task.input:<66} {steps:>5} {tools:>5} {transitions:>11} {workflow_calls:>9}"
                f"   {transitions / steps:.1f} transitions, {workflow_calls / steps:.1f} ddb"
                f" ({rru / steps:.1f} RRU, {wru / steps:.1f} WRU) {shown:>13}",
                file=report,
            )
            per_step = ", ".join(f"{op} {n / steps:.1f}" for op, n in sorted(ops.items()))
            print(f"{'':<66} incl. POST /runs ({api_calls} ddb call): {per_step}", file=report)
    return 1 if mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
