"""Per agent step, on the local stack: Step Functions state transitions, DynamoDB calls and their read/write units.

Runs tasks through the real workflow (offline stub model unless ANTHROPIC_API_KEY is set), counts every
DynamoDB API call the functions make and the units DynamoDB would bill for it (bench/meter.py), and the
StateEntered events of each execution (what Standard workflows bill as state transitions).

Usage: python bench/step_calls.py [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.meter import Meter, entered, quiet, wait_for_execution
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
    report = sys.stdout
    with quiet(), LocalStack(port=0) as stack, Meter(stack) as meter:
        print(f"{'task':<66} {'steps':>5} {'tools':>5} {'transitions':>11} {'ddb calls':>9} {'per step':>22}",
              file=report)  # fmt: skip
        for task in TASKS:
            for _ in range(args.runs):
                meter.clear()
                status, _, body = stack.handle_http("POST", "/runs", {}, json.dumps({"input": task}))
                assert status == 202, body
                history = wait_for_execution(stack, json.loads(body)["run_id"])
                api = [i for i in meter.invocations if i.function == stack.topology.api_function]
                workflow = [i for i in meter.invocations if i.function != stack.topology.api_function]
                api_calls = sum(i.count("dynamodb") for i in api)
                workflow_calls = sum(i.count("dynamodb") for i in workflow)
                steps, tools = entered(history, "Step"), entered(history, "RunTool")
                transitions = entered(history)
                ops = Counter(c.operation for i in meter.invocations for c in i.calls if c.service == "dynamodb")
                rru, wru = sum(i.rru for i in workflow), sum(i.wru for i in workflow)
            print(
                f"{task:<66} {steps:>5} {tools:>5} {transitions:>11} {workflow_calls:>9}"
                f"   {transitions / steps:.1f} transitions, {workflow_calls / steps:.1f} ddb"
                f" ({rru / steps:.1f} RRU, {wru / steps:.1f} WRU)",
                file=report,
            )
            per_step = ", ".join(f"{op} {n / steps:.1f}" for op, n in sorted(ops.items()))
            print(f"{'':<66} incl. POST /runs ({api_calls} ddb call): {per_step}", file=report)


if __name__ == "__main__":
    main()
