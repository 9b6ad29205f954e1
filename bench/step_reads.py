"""What one step of a long run reads and writes in DynamoDB, and the step handler's CPU time, by step number.

Runs one run of ``--steps`` steps on the local stack (the real workflow and handlers on moto), its model the scripted
fake Messages API (tests/fakes/anthropic_server.py) through the real anthropic SDK: every step but the last asks for
one calculator call, the last answers. Every DynamoDB call the functions make is asked for
ReturnConsumedCapacity=TOTAL; moto answers with a fixed figure per call, not one from item sizes, so the capacity
is also computed here from the bytes of the items each call read or wrote, as DynamoDB bills on-demand tables:

    reads   a strongly consistent Query: its items' bytes together, in 4 KB units (at least 1); GetItem and each key
            of BatchGetItem: the item's bytes in 4 KB units (at least 1, found or not); eventually consistent: half
    writes  each item written: its bytes in 1 KB units (an update: the item as it is after; a delete: as it was),
            twice inside a transaction (which also counts 2 read units per ConditionCheck)

A step's figures are what the step function read and wrote in that invocation; "cycle" adds what the others (the
tool function, intake, finalize) did from that step to the next. CPU is the step handler's thread time (its model
call's SDK work included, the fake model's own not), as the median of the 5 steps around the one shown.

Usage: python bench/step_reads.py [--steps 100] [--show 5,55,95]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import statistics
import sys
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3

# `python bench/step_reads.py` puts bench/ first on the path, not the project (appended: PYTHONPATH=another checkout
# measures that checkout's code with this bench)
sys.path.append(str(Path(__file__).resolve().parents[1]))

from functions.adapters.dynamodb_history import item_bytes
from stepwise.local.stack import LocalStack
from tests.fakes.anthropic_server import FakeAnthropic, message

WRITES = ("PutItem", "UpdateItem", "DeleteItem")


@dataclass
class Figures:
    rru: float = 0.0
    wru: float = 0.0
    items: int = 0  # items read
    read_bytes: int = 0
    reported: float = 0.0  # what moto returned as ConsumedCapacity
    calls: dict[str, int] = field(default_factory=lambda: defaultdict(int))


@dataclass
class Step:
    number: int
    cpu_ms: float = 0.0
    wall_ms: float = 0.0
    own: Figures = field(default_factory=Figures)  # the step function's invocation
    cycle: Figures = field(default_factory=Figures)  # every function until the next step


class Meter:
    """Counts every DynamoDB call of the local stack's functions (botocore events on the default session)."""

    def __init__(self, stack: LocalStack) -> None:
        self.stack = stack
        self.steps: list[Step] = []
        self.params = threading.local()
        self.sizes: dict[tuple[str, str], int] = {}  # last known bytes of each item written
        self.side = boto3.session.Session().client("dynamodb", region_name=stack.sfn.meta.region_name)  # unhooked
        self.in_step = threading.local()

    def install(self) -> None:
        events = boto3._get_default_session().events
        events.register("provide-client-params.dynamodb", self._ask_capacity)
        events.register("after-call.dynamodb", self._count)
        name = next(n for n, path in self.stack.lambdas._paths.items() if path == "functions.handlers.step.handler")
        inner = self.stack.lambdas.handler(name)

        def timed(event: dict[str, Any], context: Any) -> Any:
            step = Step(int(event.get("step", 0)))
            self.steps.append(step)
            self.in_step.on = True
            cpu, wall = time.thread_time(), time.perf_counter()
            try:
                return inner(event, context)
            finally:
                step.cpu_ms = (time.thread_time() - cpu) * 1000
                step.wall_ms = (time.perf_counter() - wall) * 1000
                self.in_step.on = False

        self.stack.lambdas._handlers[name] = timed

    def _ask_capacity(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        if model.name in ("Query", "GetItem", "BatchGetItem", "TransactWriteItems", *WRITES):
            params["ReturnConsumedCapacity"] = "TOTAL"
        self.params.last = dict(params)

    def _count(self, parsed: dict[str, Any], model: Any, **_: Any) -> None:
        if not self.steps or model.name not in ("Query", "GetItem", "BatchGetItem", "TransactWriteItems", *WRITES):
            return
        params: dict[str, Any] = getattr(self.params, "last", {})
        figures = [self.steps[-1].cycle] + ([self.steps[-1].own] if getattr(self.in_step, "on", False) else [])
        rru, wru, items, read = self._capacity(model.name, params, parsed)
        reported = parsed.get("ConsumedCapacity")
        reported_units = sum(c.get("CapacityUnits", 0) for c in reported) if isinstance(reported, list) else (
            reported or {}).get("CapacityUnits", 0)  # fmt: skip
        for f in figures:
            f.rru += rru
            f.wru += wru
            f.items += items
            f.read_bytes += read
            f.reported += reported_units
            f.calls[model.name] += 1

    def _capacity(self, op: str, params: dict[str, Any], parsed: dict[str, Any]) -> tuple[float, float, int, int]:
        half = 1.0 if params.get("ConsistentRead") else 0.5
        if op == "Query":
            read = sum(map(item_bytes, parsed.get("Items", [])))
            return max(1, math.ceil(read / 4096)) * half, 0.0, len(parsed.get("Items", [])), read
        if op == "GetItem":
            read = item_bytes(parsed["Item"]) if "Item" in parsed else 0
            return max(1, math.ceil(read / 4096)) * half, 0.0, int("Item" in parsed), read
        if op == "BatchGetItem":
            rru, items, read = 0.0, 0, 0
            for table, request in params["RequestItems"].items():
                found = parsed.get("Responses", {}).get(table, [])
                consistent = 1.0 if request.get("ConsistentRead") else 0.5
                rru += sum(max(1, math.ceil(item_bytes(i) / 4096)) for i in found) * consistent
                rru += (len(request["Keys"]) - len(found)) * consistent
                items, read = items + len(found), read + sum(map(item_bytes, found))
            return rru, 0.0, items, read
        if op == "TransactWriteItems":
            wru, rru = 0.0, 0.0
            for entry in params["TransactItems"]:
                ((kind, body),) = entry.items()
                if kind == "ConditionCheck":
                    rru += 2
                else:
                    wru += 2 * self._written(kind, body)
            return rru, wru, 0, 0
        return 0.0, float(self._written(op.removesuffix("Item"), params)), 0, 0

    def _written(self, kind: str, body: dict[str, Any]) -> int:
        if kind == "Put":
            key = (body["Item"]["pk"]["S"], body["Item"]["sk"]["S"])
            self.sizes[key] = item_bytes(body["Item"])
        else:
            key = (body["Key"]["pk"]["S"], body["Key"]["sk"]["S"])
            if kind == "Update":  # the item as it is now (this bench runs one run at a time)
                found = self.side.get_item(TableName=body["TableName"], Key=body["Key"]).get("Item")
                self.sizes[key] = item_bytes(found) if found else 0
        size = self.sizes.pop(key, 1024) if kind == "Delete" else self.sizes[key]
        return max(1, math.ceil(size / 1024))


def script(steps: int) -> Any:
    def reply(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        taken = sum(1 for m in body["messages"] if m["role"] == "assistant")
        if taken + 1 >= steps:
            return 200, message([{"type": "text", "text": "done"}], "end_turn")
        call = {"type": "tool_use", "id": f"toolu_{taken:05d}", "name": "calculator",
                "input": {"expression": f"{taken} * 7"}}  # fmt: skip
        return 200, message([call], "tool_use")

    return reply


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=100, help="steps of the run (a run takes at most 100)")
    parser.add_argument(
        "--show",
        default="5,55,95",
        help="the steps whose figures are printed (CPU and wall time: the median of the 5 steps around each)",
    )
    args = parser.parse_args()
    fake = FakeAnthropic(*[script(args.steps)] * args.steps)
    os.environ.update({"POWERTOOLS_LOG_LEVEL": "ERROR", "POWERTOOLS_METRICS_DISABLED": "true",
                       "STEPWISE_STEP_LOOP_STEPS": "1",  # one step an invocation: its figures are per step
                       "ANTHROPIC_API_KEY": "sk-ant-bench", "STEPWISE_MODEL_PROVIDER": "auto"})  # fmt: skip
    report = sys.stdout
    with contextlib.redirect_stdout(io.StringIO()), fake, LocalStack(port=0) as stack:
        os.environ["ANTHROPIC_BASE_URL"] = fake.base_url
        meter = Meter(stack)
        meter.install()
        body = {"input": "Count in sevens.", "budget": {"max_steps": args.steps}}
        status, _, answer = stack.handle_http("POST", "/runs", {}, json.dumps(body))
        assert status == 202, answer
        run_id = json.loads(answer)["run_id"]
        started = time.perf_counter()
        while True:
            status, _, answer = stack.handle_http("GET", f"/runs/{run_id}", {}, "")
            if json.loads(answer)["status"] not in ("QUEUED", "RUNNING"):
                break
            time.sleep(0.1)
        final = json.loads(answer)
        arn = stack.state_machine_arn.replace(":stateMachine:", ":execution:") + ":" + run_id
        while stack.sfn.describe_execution(executionArn=arn)["status"] == "RUNNING":  # its last invocations return
            time.sleep(0.1)
        print(f"run {run_id}: {final['status']} after {final['steps']} steps in {time.perf_counter() - started:.0f} s "
              f"(python bench/step_reads.py --steps {args.steps})", file=report)  # fmt: skip
        by_step = {step.number: step for step in meter.steps}
        print(f"{'step':>5} {'RRU':>6} {'WRU':>6} {'items read':>10} {'KB read':>8} {'moto says':>9} "
              f"{'cycle RRU':>9} {'cycle WRU':>9} {'CPU ms':>7} {'wall ms':>8}  calls", file=report)  # fmt: skip
        for number in [int(n) for n in args.show.split(",") if int(n) in by_step]:
            s = by_step[number]
            # CPU and wall time: the median of the steps around it (one step's time is noisy on a shared machine)
            near = [by_step[n] for n in range(number - 2, number + 3) if n in by_step]
            cpu, wall = statistics.median(t.cpu_ms for t in near), statistics.median(t.wall_ms for t in near)
            calls = ", ".join(f"{op} {n}" for op, n in sorted(s.own.calls.items()))
            print(f"{number:>5} {s.own.rru:>6.1f} {s.own.wru:>6.1f} {s.own.items:>10} {s.own.read_bytes / 1024:>8.1f} "
                  f"{s.own.reported:>9.1f} {s.cycle.rru:>9.1f} {s.cycle.wru:>9.1f} {cpu:>7.1f} {wall:>8.1f}"
                  f"  {calls}", file=report)  # fmt: skip


if __name__ == "__main__":
    main()
