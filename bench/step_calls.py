"""Per agent step: Step Functions state transitions and DynamoDB calls, measured on the local stack.

Runs tasks through the real workflow (offline stub model unless ANTHROPIC_API_KEY is set), counts every
DynamoDB API call the functions make (botocore before-call events) and the StateEntered events of each
execution (what Standard workflows bill as state transitions).

Usage: python bench/step_calls.py [--runs 5]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import time
from collections import Counter
from typing import Any

import boto3

from stepwise.local.stack import LocalStack

TASKS = [
    "What is (17 * 23) + sqrt(16), and what time is it in Asia/Tokyo?",  # 2 steps, 2 tools in one Map
    "What is 6 * 7?",  # 2 steps, 1 tool
    "Say hello.",  # 1 step, no tool
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5, help="runs per task")
    args = parser.parse_args()
    os.environ.update({"POWERTOOLS_LOG_LEVEL": "ERROR", "POWERTOOLS_METRICS_DISABLED": "true"})  # counts, not logs
    calls: Counter[str] = Counter()

    def count(event_name: str, **_: Any) -> None:
        calls[event_name.rsplit(".", 1)[-1]] += 1

    report = sys.stdout  # the functions print EMF metrics (single metrics even when disabled): keep them apart
    with LocalStack(port=0) as stack, contextlib.redirect_stdout(io.StringIO()):
        boto3._get_default_session().events.register("before-call.dynamodb", count)  # the functions' clients
        print(
            f"{'task':<66} {'steps':>5} {'tools':>5} {'transitions':>11} {'ddb calls':>9} {'per step':>22}", file=report
        )
        for task in TASKS:
            for _ in range(args.runs):
                calls.clear()
                status, _, body = stack.handle_http("POST", "/runs", {}, json.dumps({"input": task}))
                assert status == 202, body
                run_id = json.loads(body)["run_id"]
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
                tools = sum(1 for e in history if e.get("stateEnteredEventDetails", {}).get("name") == "RunTool")
                ops = ", ".join(f"{op} {n / steps:.1f}" for op, n in sorted(calls.items()))
            print(
                f"{task:<66} {steps:>5} {tools:>5} {transitions:>11} {workflow_calls:>9}"
                f"   {transitions / steps:.1f} transitions, {workflow_calls / steps:.1f} ddb",
                file=report,
            )
            print(f"{'':<66} incl. POST /runs ({api_calls} ddb call): {ops}", file=report)


if __name__ == "__main__":
    main()
