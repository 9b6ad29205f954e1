"""Per agent step, on the local stack: Step Functions state transitions, DynamoDB calls and their read/write units.

Runs tasks through the real workflow (offline stub model unless ANTHROPIC_API_KEY is set), counts every
DynamoDB API call the functions make and the units DynamoDB would bill for it (bench/meter.py), and the
StateEntered events of each execution (what Standard workflows bill as state transitions). A tool step's
transitions are those from its Step to the next Step: 2 when its calls are fast built-ins (they run in the step:
Step, Route), more when the Tools map runs one (Step, Route, Tools, one RunTool per call, AfterTools). Each is
checked against what the workflow should take (``Task.expected``); the exit status says whether all matched.

Usage: python bench/step_calls.py [--runs 5]
"""

from __future__ import annotations

import argparse
import itertools
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
    Task("What is (17 * 23) + sqrt(16), and what time is it in Asia/Tokyo?", 2),  # 2 built-in calls, in the step
    Task("What is 6 * 7?", 2),  # 1 built-in call, in the step
    # http_fetch is not fast (the network): the Tools map runs it (it refuses: no domains are allowed)
    Task("Use http_fetch on https://example.com/ please.", 5, ["http_fetch"]),
    Task("Say hello.", None),  # 1 step, no tool
]


def tool_step_transitions(history: list[dict[str, Any]]) -> list[int]:
    """For each step followed by another: the StateEntered events from its Step up to the next Step."""
    names = [e["stateEnteredEventDetails"]["name"] for e in history if e["type"].endswith("StateEntered")]
    starts = [i for i, name in enumerate(names) if name == "Step"]
    return [after - before for before, after in itertools.pairwise(starts)]


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
            per_tool_step: list[int] = []
            for _ in range(args.runs):
                meter.clear()
                body: dict[str, Any] = {"input": task.input} | ({"tools": task.tools} if task.tools is not None else {})
                status, _, answer = stack.handle_http("POST", "/runs", {}, json.dumps(body))
                assert status == 202, answer
                history = wait_for_execution(stack, json.loads(answer)["run_id"])
                api = [i for i in meter.invocations if i.function == stack.topology.api_function]
                workflow = [i for i in meter.invocations if i.function != stack.topology.api_function]
                api_calls = sum(i.count("dynamodb") for i in api)
                workflow_calls = sum(i.count("dynamodb") for i in workflow)
                steps, tools = entered(history, "Step"), entered(history, "RunTool")
                transitions = entered(history)
                per_tool_step += tool_step_transitions(history)
                ops = Counter(c.operation for i in meter.invocations for c in i.calls if c.service == "dynamodb")
                rru, wru = sum(i.rru for i in workflow), sum(i.wru for i in workflow)
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
