"""Per agent step: Step Functions state transitions and DynamoDB calls, measured on the local stack.

Runs tasks through the real workflow (offline stub model unless ANTHROPIC_API_KEY is set), counts every
DynamoDB API call the functions make (botocore before-call events) and the StateEntered events of each
execution (what Standard workflows bill as state transitions). A tool step's transitions are those from its Step
to the next Step: 2 when its calls are fast built-ins (they run in the step: Step, Route), more when the Tools map
runs one (Step, Route, Tools, one RunTool per call, AfterTools). Each figure is checked against what the workflow
should take (``expected``); the exit status says whether all matched.

Usage: python bench/step_calls.py [--runs 5]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import itertools
import json
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import boto3

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
    entered = [e["stateEnteredEventDetails"]["name"] for e in history if e["type"].endswith("StateEntered")]
    starts = [i for i, name in enumerate(entered) if name == "Step"]
    return [after - before for before, after in itertools.pairwise(starts)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5, help="runs per task")
    args = parser.parse_args()
    os.environ.update({"POWERTOOLS_LOG_LEVEL": "ERROR", "POWERTOOLS_METRICS_DISABLED": "true"})  # counts, not logs
    calls: Counter[str] = Counter()
    mismatches = 0

    def count(event_name: str, **_: Any) -> None:
        calls[event_name.rsplit(".", 1)[-1]] += 1

    report = sys.stdout  # the functions print EMF metrics (single metrics even when disabled): keep them apart
    with LocalStack(port=0) as stack, contextlib.redirect_stdout(io.StringIO()):
        boto3._get_default_session().events.register("before-call.dynamodb", count)  # the functions' clients
        print(
            f"{'task':<66} {'steps':>5} {'map':>5} {'transitions':>11} {'ddb calls':>9} {'per step':>22}"
            f" {'per tool step':>13}",
            file=report,
        )
        for task in TASKS:
            per_tool_step: list[int] = []
            for _ in range(args.runs):
                calls.clear()
                body: dict[str, Any] = {"input": task.input}
                if task.tools is not None:
                    body["tools"] = task.tools
                status, _, answer = stack.handle_http("POST", "/runs", {}, json.dumps(body))
                assert status == 202, answer
                run_id = json.loads(answer)["run_id"]
                api_calls = sum(calls.values())
                arn = stack.state_machine_arn.replace(":stateMachine:", ":execution:") + ":" + run_id
                while True:
                    try:
                        if stack.sfn.describe_execution(executionArn=arn)["status"] != "RUNNING":
                            break
                    except stack.sfn.exceptions.ExecutionDoesNotExist:
                        pass
                    time.sleep(0.02)
                history = stack.sfn.get_execution_history(executionArn=arn, maxResults=1000)["events"]
                transitions = sum(1 for e in history if e["type"].endswith("StateEntered"))
                workflow_calls = sum(calls.values()) - api_calls
                steps = sum(1 for e in history if e.get("stateEnteredEventDetails", {}).get("name") == "Step")
                mapped = sum(1 for e in history if e.get("stateEnteredEventDetails", {}).get("name") == "RunTool")
                per_tool_step += tool_step_transitions(history)
                ops = ", ".join(f"{op} {n / steps:.1f}" for op, n in sorted(calls.items()))
            measured = sum(per_tool_step) / len(per_tool_step) if per_tool_step else None
            matched = measured == task.expected
            mismatches += not matched
            shown = "-" if measured is None else f"{measured:.1f}"
            expected = "" if matched else f" (expected {task.expected})"
            print(
                f"{task.input:<66} {steps:>5} {mapped:>5} {transitions:>11} {workflow_calls:>9}"
                f"   {transitions / steps:.1f} transitions, {workflow_calls / steps:.1f} ddb {shown:>13}{expected}",
                file=report,
            )
            print(f"{'':<66} incl. POST /runs ({api_calls} ddb call): {ops}", file=report)
    return 1 if mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
