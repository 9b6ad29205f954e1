"""A long session on the local stack: 300 steps (12 turns of 25), each reading a 100 KB tool result.

The official anthropic SDK drives a session of the local stack (its real handlers on moto) whose model, the scripted
fake Messages API on 127.0.0.1 (it refuses a prompt over 200,000 tokens, as the real API does), asks each step for a
deployer tool that returns 100,000 characters, and ends each turn with an answer. Printed: the step function's
DynamoDB reads per step (calls, items, KB read; read units estimated as DynamoDB counts them for strongly
consistent reads: one per 4 KB of each response's items, rounded up per call) and its CPU time (the handler's
thread time) at steps 5, 55, 150 and 250; the largest prompt sent; the execution history events of the longest turn.
No model is called: the answers are scripted; token counts are the fake's estimates (4 characters a token).

Usage (from the project root): python bench/long_session.py [--turns 12] [--steps-per-turn 25]
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import json
import math
import os
import pstats
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `python bench/long_session.py` puts bench/ first on the path, not the project
    sys.path.insert(0, str(ROOT))

import anthropic  # noqa: E402
import boto3  # noqa: E402

from functions.adapters import wiring  # noqa: E402
from stepwise.local.stack import LocalStack  # noqa: E402
from tests.fakes.anthropic_server import CONTEXT_WINDOW, FakeAnthropic, message, prompt_tokens  # noqa: E402
from tests.fakes.report_tool import big_report  # noqa: E402

SAMPLES = (5, 55, 150, 250, 295)


class StepMeter:
    """Per invocation of the step function: DynamoDB calls, items and bytes it read, and its CPU time; with
    ``profile``, the invocations of the 5 steps around each of those steps run under cProfile (which slows them:
    their CPU times are not the figures')."""

    def __init__(self, profile: tuple[int, ...] = ()) -> None:
        self.local = threading.local()
        self.by_step: dict[int, dict[str, float]] = {}
        self.profiled = {n: step for step in profile for n in range(step - 2, step + 3)}
        self.profiles: dict[int, pstats.Stats] = {}

    def after_call(self, parsed: dict[str, Any], model: Any, **_: Any) -> None:
        meter = getattr(self.local, "current", None)
        if meter is None:
            return
        items: list[Any] = []
        if "Item" in parsed:
            items = [parsed["Item"]]
        elif "Items" in parsed:
            items = parsed["Items"]
        elif "Responses" in parsed:  # BatchGetItem (a dict of tables) or TransactGetItems (a list)
            found = parsed["Responses"]
            items = [i for rows in found.values() for i in rows] if isinstance(found, dict) else found
        size = sum(len(json.dumps(item, default=str)) for item in items)
        meter["calls"] += 1
        meter["items"] += len(items)
        meter["bytes"] += size
        if model.name in ("GetItem", "Query", "BatchGetItem", "TransactGetItems", "Scan"):
            meter["rru"] += max(1, math.ceil(size / 4096)) * (2 if model.name == "TransactGetItems" else 1)

    def wrap(self, handler: Any) -> Any:
        def measured(event: dict[str, Any], context: Any) -> Any:
            self.local.current = meter = {"calls": 0, "items": 0, "bytes": 0, "rru": 0, "cpu_ms": 0.0}
            sample = self.profiled.get(int(event.get("step", -1)))
            profiler = cProfile.Profile(time.thread_time) if sample is not None else None
            started = time.thread_time()
            try:
                if profiler is None:
                    return handler(event, context)
                return profiler.runcall(handler, event, context)
            finally:
                meter["cpu_ms"] = (time.thread_time() - started) * 1000
                self.local.current = None
                self.by_step[int(event.get("step", -1))] = meter  # a retried step: its last invocation
                if profiler is not None and sample is not None:
                    stats = pstats.Stats(profiler, stream=io.StringIO())
                    self.profiles[sample] = self.profiles[sample].add(stats) if sample in self.profiles else stats

        return measured


def script(turns: int, per_turn: int) -> list[Any]:
    replies: list[Any] = []
    for turn in range(turns):
        for k in range(per_turn - 1):
            n = turn * per_turn + k
            call = {"type": "tool_use", "id": f"toolu_{n}", "name": "big_report", "input": {"n": n}}
            replies.append((200, message([call], "tool_use")))
        replies.append((200, message([{"type": "text", "text": f"turn {turn + 1}: read."}], "end_turn")))
    return replies


def all_events(client: anthropic.Anthropic, session_id: str) -> list[Any]:
    """Every event of the session: the SDK's page iterator follows the pages (a session of 300 steps has ~1,500)."""
    return list(client.beta.sessions.events.list(session_id, limit=1000))


def idle_count(client: anthropic.Anthropic, session_id: str) -> int:
    return sum(1 for event in all_events(client, session_id) if event.type == "session.status_idle")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--turns", type=int, default=12)
    parser.add_argument("--steps-per-turn", type=int, default=25, help="at most 25, a session turn's max_steps")
    parser.add_argument(
        "--profile",
        default="",
        metavar="STEPS",
        help="e.g. 5,250: print where the step handler's time goes around these steps (cProfile)",
    )
    args = parser.parse_args()
    # one step an invocation (functions/agent/step_loop.py): the figures are per step
    os.environ.update({"POWERTOOLS_LOG_LEVEL": "ERROR", "POWERTOOLS_METRICS_DISABLED": "true",
                       "STEPWISE_STEP_LOOP_STEPS": "1"})  # fmt: skip
    report = sys.stdout  # the functions print EMF blobs even when disabled: keep them apart from the figures
    meter = StepMeter(tuple(int(step) for step in args.profile.split(",") if step))
    started = time.monotonic()
    with FakeAnthropic() as fake, LocalStack(port=0) as stack, contextlib.redirect_stdout(io.StringIO()):
        fake.script = script(args.turns, args.steps_per_turn)
        os.environ.update({"ANTHROPIC_API_KEY": "sk-ant-bench", "ANTHROPIC_BASE_URL": fake.base_url,
                           "STEPWISE_MODEL_PROVIDER": "auto"})  # fmt: skip
        wiring.deployer_tools = lambda: [big_report.__stepwise_tool__]  # type: ignore[attr-defined]
        wiring.reset()
        step_function = next(name for name, path in stack.lambdas._paths.items() if path.endswith("step.handler"))
        stack.lambdas._handlers[step_function] = meter.wrap(stack.lambdas.handler(step_function))
        boto3._get_default_session().events.register("after-call.dynamodb", meter.after_call)
        client = anthropic.Anthropic(api_key="local", base_url=stack.url, max_retries=0)
        toolset: Any = {"type": "stepwise_toolset_20261201", "default_config": {"enabled": False},
                        "configs": [{"name": "big_report", "enabled": True}]}  # fmt: skip
        agent = client.beta.agents.create(name="reader", model="claude-haiku-4-5", tools=[toolset])
        session = client.beta.sessions.create(agent=agent.id, environment_id="bench")
        for turn in range(1, args.turns + 1):
            text = [{"type": "text", "text": f"Read the next {args.steps_per_turn - 1} reports."}]
            said: Any = {"type": "user.message", "content": text}
            client.beta.sessions.events.send(session.id, events=[said])
            deadline = time.monotonic() + 1200
            while idle_count(client, session.id) < turn:
                if time.monotonic() > deadline:
                    raise SystemExit(f"turn {turn} did not idle in 20 minutes")
                time.sleep(0.5)
            print(f"turn {turn:>3} idle after {time.monotonic() - started:6.1f} s", file=report, flush=True)
        events = all_events(client, session.id)
        errors = [event for event in events if event.type == "session.error"]
        compacted = sum(1 for event in events if event.type == "agent.thread_context_compacted")
        executions = stack.sfn.list_executions(stateMachineArn=stack.state_machine_arn, maxResults=1000)["executions"]
        history_sizes = []
        for execution in executions:
            pages = stack.sfn.get_paginator("get_execution_history").paginate(executionArn=execution["executionArn"])
            history_sizes.append(sum(len(page["events"]) for page in pages))
    steps = sorted(meter.by_step)
    sizes = [prompt_tokens(request) for request in fake.requests]
    print(f"\n$ python bench/long_session.py --turns {args.turns} --steps-per-turn {args.steps_per_turn}", file=report)
    print(f"steps {len(steps)}, model calls {len(fake.requests)}, session errors {len(errors)}, "
          f"context clearings {compacted}, wall {time.monotonic() - started:.0f} s", file=report)  # fmt: skip
    print(f"largest prompt {max(sizes):,} tokens (the fake's window: {CONTEXT_WINDOW:,}); "
          f"median {statistics.median(sizes):,.0f}", file=report)  # fmt: skip
    print(f"execution history: {max(history_sizes)} events in the longest of {len(history_sizes)} turns "
          f"(the limit is 25,000)", file=report)  # fmt: skip
    print(f"{'step':>5} {'ddb calls':>9} {'items':>6} {'KB read':>8} {'RRU (est.)':>10} {'CPU ms':>7}", file=report)
    print("(each row: the median over the 5 steps around it, so one slow invocation does not decide it)", file=report)
    rows = {sample: around(meter.by_step, sample) for sample in SAMPLES if sample in meter.by_step}
    for sample, m in rows.items():
        print(f"{sample:>5} {m['calls']:>9.0f} {m['items']:>6.0f} {m['bytes'] / 1024:>8.1f} {m['rru']:>10.0f} "
              f"{m['cpu_ms']:>7.1f}", file=report)  # fmt: skip
    first = min(rows, default=0)
    for sample in [s for s in rows if s != first]:  # the goal is step 250's: within 1.5x of step 5's
        ratio = {k: rows[sample][k] / max(rows[first][k], 1e-9) for k in ("rru", "cpu_ms")}
        print(f"step {sample} / step {first}: RRU {ratio['rru']:.2f}x, CPU {ratio['cpu_ms']:.2f}x (goal: <= 1.5x)",
              file=report)  # fmt: skip
    for sample, stats in sorted(meter.profiles.items()):
        print(f"\nthe 5 steps around step {sample} under cProfile (thread CPU time), by cumulative time:", file=report)
        stats.stream = report  # type: ignore[attr-defined]
        stats.sort_stats("cumulative").print_stats(40)


def around(by_step: dict[int, dict[str, float]], step: int) -> dict[str, float]:
    window = [by_step[n] for n in range(step - 2, step + 3) if n in by_step]
    return {key: statistics.median(m[key] for m in window) for key in window[0]}


if __name__ == "__main__":
    main()
