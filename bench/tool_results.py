"""A tool result of N characters through the real workflow on the local stack: what the state payloads, the table
items and the results bucket hold, and what one call costs in invocations and transitions (offline stub model;
the tool is a deployer's tool returning N characters).

Usage: python bench/tool_results.py [--chars 1000000]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import boto3
from pydantic import BaseModel

from functions.adapters import wiring
from functions.tools import Tool
from functions.tools.registry import deployer_tools
from stepwise.client import StepwiseClient
from stepwise.local.stack import RESULTS_BUCKET, TABLE_NAME, LocalStack


class Nothing(BaseModel):
    pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--chars", type=int, default=1_000_000, help="the size of the tool's result")
    args = parser.parse_args()
    os.environ.pop("ANTHROPIC_API_KEY", None)  # the offline stub names the tool from the message
    report = Tool(name="big_report", description="A long report", input_model=Nothing,
                  fn=lambda _: ("0123456789" * (args.chars // 10 + 1))[: args.chars])  # fmt: skip
    with mock.patch.object(wiring, "deployer_tools", lambda: [*deployer_tools(), report]), LocalStack(port=0) as stack:
        client = StepwiseClient(stack.url)
        started = time.perf_counter()
        run = client.request("POST", "/runs", {"input": "big_report please", "tools": ["big_report"]})
        while (run := client.request("GET", f"/runs/{run['run_id']}"))["status"] in ("QUEUED", "RUNNING"):
            time.sleep(0.05)
        elapsed = time.perf_counter() - started
        arn = stack.state_machine_arn.replace(":stateMachine:", ":execution:") + ":" + run["run_id"]
        while stack.sfn.describe_execution(executionArn=arn)["status"] == "RUNNING":
            time.sleep(0.05)
        history = stack.sfn.get_execution_history(executionArn=arn, maxResults=1000)["events"]
        payloads = [
            d[f]
            for e in history
            for k, d in e.items()
            if k.endswith("EventDetails")
            for f in ("input", "output")
            if f in d
        ]
        items = boto3.client("dynamodb").scan(TableName=TABLE_NAME)["Items"]
        objects = boto3.client("s3").list_objects_v2(Bucket=RESULTS_BUCKET).get("Contents", [])
        path, offset, read = f"/runs/{run['run_id']}/tool_results/{first_call(history)}", 0, 0
        while offset is not None:
            whole = client.request("GET", f"{path}?offset={offset}")
            read, offset = read + len(whole["content"]), whole["next_offset"]
        invoked = {name: count for name, count in stack.lambdas.invocations.items() if count}
    print(f"command: python bench/tool_results.py --chars {args.chars}")
    print(f"run {run['status']} in {elapsed:.2f} s, {run['steps']} steps")
    print(f"largest state input/output: {max(len(p.encode()) for p in payloads):,} bytes (limit 262,144)")
    print(f"largest table item: {max(len(json.dumps(i).encode()) for i in items):,} bytes of JSON (limit 400 KB)")
    print(f"results bucket: {len(objects)} object(s), {sum(o['Size'] for o in objects):,} bytes")
    print(f"GET /runs/{{id}}/tool_results/{{id}}: size {whole['size']:,}, {read:,} characters read in pages")
    print(f"state transitions: {sum(1 for e in history if e['type'].endswith('StateEntered'))}; invocations: {invoked}")


def first_call(history: list[dict[str, Any]]) -> str:
    for event in history:
        details = event.get("mapIterationStartedEventDetails") or event.get("stateEnteredEventDetails") or {}
        text = details.get("input") or ""
        if '"tool_use_id"' in text:
            return str(json.loads(text)["tool_use_id"])
    raise SystemExit("no tool call in the execution")


if __name__ == "__main__":
    main()
