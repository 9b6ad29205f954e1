"""What orchestration costs per tool step and per session, from measurement: Stepwise next to a naive single-Lambda
loop, Lambda durable functions and AgentCore Runtime, for sessions of 5, 20 and 100 steps at 2 s and 20 s of model
latency; the latency a step adds, locally and on AWS (estimated); the issue-12 table with its goals.

Method (docs/benchmarks.md says more):
- Counts come from the local stack (the synthesised template on moto, the real handlers): a run of N steps is N model
  calls to a scripted fake Messages API on 127.0.0.1 through the real anthropic SDK, the first N-1 asking for one
  calculator call (a built-in tool), the last answering. bench/meter.py counts each Lambda invocation, its AWS calls,
  the DynamoDB read/write units DynamoDB would bill, and the state transitions of the execution.
- Memory of each function comes from the synthesised template.
- Prices come from functions/agent/data/aws_prices.json and pricing.json only (bench/costmodel.py).
- Model latency is simulated arithmetically: the fake answers at once, and the model latency is added to the billed
  duration of each step invocation once per model call it made (the step Lambda waits for the whole model call; one
  invocation takes several steps while their calls run in it, functions/agent/step_loop.py).
- A Lambda's billed duration on AWS is estimated as its handler's own CPU time measured here (its thread's CPU time
  less moto's work answering its AWS calls), scaled to the CPU share its memory gives (a vCPU at 1,769 MB), plus the
  assumed latency of each AWS call it made (bench/costmodel.py AwsLatency), plus the model latency for a step.
- Per tool step = the difference between the 20-step and the 5-step session, over their 15 more tool steps.

Usage: python bench/orchestration.py [--steps 5 20 100] [--latency 2 20] [--markdown] [--template TEMPLATE_JSON]
       python bench/orchestration.py --update docs/benchmarks.md   (rewrites the measured part of the page)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import costmodel  # noqa: E402
from bench.costmodel import (  # noqa: E402
    AGENTCORE,
    DURABLE,
    LATENCY,
    AwsPrices,
    Bill,
    Counts,
    LambdaUse,
    billed_ms,
    cpu_scaled,
    stepwise_bill,
)
from bench.meter import Invocation, Meter, entered, quiet, wait_for_execution  # noqa: E402

MODEL = costmodel.REFERENCE_MODEL
TOOL = "calculator"
ISSUE_GOALS = {"per_step_2s_pct": 0.5, "per_step_20s_pct": 1.0, "vs_naive": 1.2, "transitions": 2}
WCU_PER_ITEM = 1000  # DynamoDB's per-item (per-partition) write throughput, write units per second


# ------------------------------------------------------------------------------------------ measuring


@dataclass
class Session:
    """One measured run of ``steps`` model calls."""

    steps: int
    tool_calls: int
    transitions: int
    history_events: int
    states: list[str]  # the name of each state entered, in order
    invocations: list[Invocation]
    model_calls: list[float]  # when each model request reached the fake (perf_counter)
    wall_seconds: float


@dataclass
class Stack:
    """The functions of the template: logical id -> memory (MB), and which one is which."""

    memory: dict[str, int]
    names: dict[str, str]  # logical id -> the handler's module name (step, tool, ...)
    step: str
    tool: str
    intake: str
    webhooks: str
    api: str

    @staticmethod
    def of(template: dict[str, Any], topology: Any) -> Stack:
        functions = {lid: res["Properties"] for lid, res in template["Resources"].items()
                     if res["Type"] == "AWS::Lambda::Function"}  # fmt: skip
        by_handler = {props.get("Handler"): lid for lid, props in functions.items()}
        return Stack(
            memory={lid: int(props.get("MemorySize", 128)) for lid, props in functions.items()},
            names={lid: str(props.get("Handler", lid)).split(".")[-2] for lid, props in functions.items()},
            step=by_handler["functions.handlers.step.handler"],
            tool=by_handler["functions.handlers.tool.handler"],
            intake=topology.intake_function,
            webhooks=topology.webhooks_function,
            api=topology.api_function,
        )


def scripted(steps: int, arrivals: list[float]) -> Callable[[dict[str, Any]], tuple[int, dict[str, Any]]]:
    """The fake model's reply to each request: a calculator call for the first steps-1, then an answer."""
    from tests.fakes.anthropic_server import message

    tokens_in, tokens_out = costmodel.REFERENCE_TOKENS

    def reply(_: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        arrivals.append(time.perf_counter())
        n = len(arrivals)
        usage = {"input_tokens": tokens_in, "output_tokens": tokens_out}
        if n < steps:
            call = {"type": "tool_use", "id": f"toolu_{n:04d}", "name": TOOL, "input": {"expression": f"{n} * 7"}}
            return 200, message([call], "tool_use", model=MODEL, **usage)
        return 200, message([{"type": "text", "text": "done"}], "end_turn", model=MODEL, **usage)

    return reply


def run_session(stack: Any, meter: Meter, fake: Any, steps: int) -> Session:
    arrivals: list[float] = []
    fake.script = [scripted(steps, arrivals)] * steps
    meter.clear()
    body = {"input": f"A session of {steps} steps.", "model": MODEL, "tools": [TOOL], "budget": {"max_steps": steps}}
    started = time.perf_counter()
    status, _, answer = stack.handle_http("POST", "/runs", {}, json.dumps(body))
    if status != 202:
        raise RuntimeError(f"POST /runs answered {status}: {answer}")
    run_id = json.loads(answer)["run_id"]
    history = wait_for_execution(stack, run_id)
    wall = time.perf_counter() - started
    drained(stack)  # what the run's end sent on (its webhooks fan-out) is the run's, not the next one's
    invocations = list(meter.invocations)  # (not the GET below)
    _, _, final = stack.handle_http("GET", f"/runs/{run_id}", {}, "")
    run = json.loads(final)
    if run["status"] != "SUCCEEDED" or run["steps"] != steps:
        raise RuntimeError(f"the {steps}-step run ended {run['status']} after {run['steps']} steps: {run.get('error')}")
    meter.check()
    # one calculator call a step but the last (the script's), wherever the workflow runs it
    return Session(steps=steps, tool_calls=steps - 1, transitions=entered(history),
                   history_events=len(history),
                   states=[e["stateEnteredEventDetails"]["name"] for e in history
                           if e["type"].endswith("StateEntered")],
                   invocations=invocations, model_calls=arrivals,
                   wall_seconds=wall)  # fmt: skip


def drained(stack: Any, timeout: float = 60) -> None:
    """Wait until the intake and webhooks queues hold no message in flight (delayed ones, the watchdog's, aside)."""
    names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    deadline = time.monotonic() + timeout
    for queue in (stack.queue_url, stack.webhooks_queue_url):
        while any(int(n) for n in stack.sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=names)
                  ["Attributes"].values()):  # fmt: skip
            if time.monotonic() > deadline:
                raise TimeoutError(f"{queue} did not drain within {timeout:g} s")
            time.sleep(0.05)


# A step's own time on AWS beyond its model call (reading, settling, its tools): assumed, to tell how many steps
# one invocation takes at a model latency before its time cap stops it (see loop_steps)
STEP_OWN_SECONDS = 0.5


def loop_steps(template: dict[str, Any], latency: float) -> int:
    """The steps one step invocation takes in a row at this model latency on AWS: its step cap, or fewer when its
    time cap (no step starts after STEPWISE_STEP_LOOP_SECONDS) comes first (functions/agent/step_loop.py). The fake
    answers at once, so the local stack would never reach the time cap: the bench sets the step cap to this."""
    (step,) = [r["Properties"] for r in template["Resources"].values() if r["Type"] == "AWS::Lambda::Function"
               and r["Properties"].get("Handler") == "functions.handlers.step.handler"]  # fmt: skip
    variables = step["Environment"]["Variables"]
    cap, seconds = int(variables["STEPWISE_STEP_LOOP_STEPS"]), float(variables["STEPWISE_STEP_LOOP_SECONDS"])
    return max(1, min(cap, math.ceil(seconds / (latency + STEP_OWN_SECONDS))))


def measure(
    step_counts: list[int], template: dict[str, Any], loops: list[int]
) -> tuple[Stack, dict[int, dict[int, Session]]]:
    """Sessions of each length, measured once for each step cap in ``loops``: {cap: {steps: session}}."""
    from functions.adapters import wiring
    from stepwise.local.stack import LocalStack
    from tests.fakes.anthropic_server import FakeAnthropic

    measured: dict[int, dict[int, Session]] = {}
    with FakeAnthropic() as fake, quiet():
        os.environ.update({"ANTHROPIC_API_KEY": "sk-ant-bench", "ANTHROPIC_BASE_URL": fake.base_url,
                           "STEPWISE_MODEL_PROVIDER": "auto"})  # fmt: skip
        with LocalStack(port=0, template=template) as stack, Meter(stack) as meter:
            shape = Stack.of(template, stack.topology)
            for loop in sorted(set(loops), reverse=True):
                os.environ["STEPWISE_STEP_LOOP_STEPS"] = str(loop)
                wiring.reset()  # the functions read it again
                run_session(stack, meter, fake, 2)  # warm: every module imported, every client made (no cold starts)
                measured[loop] = {steps: run_session(stack, meter, fake, steps) for steps in step_counts}
    return shape, measured


# ------------------------------------------------------------------------------------------ counting


def aws_seconds(invocation: Invocation, memory_mb: int, model_seconds: float) -> float:
    """The invocation's billed duration on AWS, estimated (see the module's docstring)."""
    calls = sum(LATENCY.call_ms(call.service, call.operation) for call in invocation.calls) / 1000
    return cpu_scaled(invocation.own_cpu_seconds, memory_mb) + calls + model_seconds


def counts(shape: Stack, session: Session, model_seconds: float) -> Counts:
    by_function: dict[str, list[Invocation]] = {}
    for invocation in session.invocations:
        by_function.setdefault(invocation.function, []).append(invocation)
    lambdas = []
    for function, invocations in sorted(by_function.items()):
        memory = shape.memory[function]
        waits = [model_seconds * steps_taken(i) if function == shape.step else 0.0 for i in invocations]
        billed = sum(billed_ms(aws_seconds(i, memory, wait)) for i, wait in zip(invocations, waits, strict=True))
        lambdas.append(LambdaUse(memory, len(invocations), billed))
    sqs = sum(i.count("sqs") for i in session.invocations)
    for consumer in (shape.intake, shape.webhooks):  # their event source mappings: a receive and a delete per batch
        sqs += 2 * len(by_function.get(consumer, []))
    return Counts(
        transitions=session.transitions, lambdas=tuple(lambdas),
        rru=sum(i.rru for i in session.invocations), wru=sum(i.wru for i in session.invocations),
        sqs_requests=sqs, api_requests=1,
    )  # fmt: skip


def step_invocations(shape: Stack, session: Session) -> list[Invocation]:
    steps = [i for i in session.invocations if i.function == shape.step]
    taken = sum(steps_taken(i) for i in steps)
    if taken != len(session.model_calls):  # each step taken made one model call (nothing was retried or replayed)
        raise RuntimeError(f"{taken} steps taken ({len(steps)} invocations), {len(session.model_calls)} model calls")
    return steps


def steps_taken(invocation: Invocation) -> int:
    """The steps a step invocation took: from the one its event named to the last one it returned the state of."""
    return int(invocation.result["completed_step"]) - int(invocation.event["step"]) + 1


def step_cpu_seconds(shape: Stack, session: Session) -> float:
    """The step function's own CPU time per step (its invocations' over the steps they took)."""
    steps = step_invocations(shape, session)
    return sum(i.own_cpu_seconds for i in steps) / sum(steps_taken(i) for i in steps)


def difference(a: Bill, b: Bill, over: int) -> Bill:
    return Bill({item: (a.items[item] - b.items.get(item, 0.0)) / over for item in a.items})


# ------------------------------------------------------------------------------------------ the report


@dataclass
class Report:
    markdown: bool
    command: str
    lines: list[str] = field(default_factory=list)

    def heading(self, text: str) -> None:
        if self.lines and self.lines[-1]:
            self.lines.append("")
        self.lines += [f"### {text}" if self.markdown else f"== {text}", ""]

    def text(self, text: str) -> None:
        self.lines.append(text)

    def table(self, header: list[str], rows: list[list[str]]) -> None:
        if self.markdown:
            if self.lines and self.lines[-1]:
                self.lines.append("")
            self.lines.append("| " + " | ".join(header) + " |")
            self.lines.append("|" + "---|" * len(header))
            self.lines += ["| " + " | ".join(row) + " |" for row in rows]
            self.lines.append("")
            return
        widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]
        for row in [header, *rows]:
            self.lines.append("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)))


def usd(value: float | None) -> str:
    return "n/a" if value is None else f"${value:.6f}"


def pct(value: float) -> str:
    return f"{value * 100:.2f} %"


def verdict(ok: bool) -> str:
    return "met" if ok else "not met"


def build(
    args: argparse.Namespace,
    prices: AwsPrices,
    shape: Stack,
    at: dict[float, dict[int, Session]],
    loops: dict[float, int],
) -> Report:
    """``at``: the sessions as they run at each model latency (``loops``: the steps an invocation takes at it)."""
    sessions = at[args.latency[0]]  # what does not depend on the latency: measured with the first one's loop
    report = Report(markdown=args.markdown, command=command_line(args))
    cmd = f"`{report.command}`" if args.markdown else report.command
    reference = costmodel.reference_step_usd()
    step_memory = shape.memory[shape.step]
    small, large = min(sessions), max(sessions)
    per_step_span = sorted(sessions)[1] if len(sessions) > 2 else large  # 20 when run with 5 20 100
    report.text(f"All figures: {cmd} (prices {prices.version}, {prices.region}; model step = {MODEL} "
                f"{costmodel.REFERENCE_TOKENS[0]:,} in / {costmodel.REFERENCE_TOKENS[1]} out = {usd(reference)}, "
                "priced from pricing.json).")  # fmt: skip
    report.text("Steps one step invocation takes in a row (functions/agent/step_loop.py), as the template's caps allow "
                "at each model latency (a step's own time assumed " f"{STEP_OWN_SECONDS:g} s): "
                + ", ".join(f"{loops[s]} at {s:g} s" for s in args.latency)
                + "; the sessions are measured with that step cap.")  # fmt: skip

    # -- per tool step and per session, at each latency
    bills = {(n, s): stepwise_bill(prices, counts(shape, at[s][n], s)) for n in sessions for s in args.latency}
    per_tool_step = {s: difference(bills[(per_step_span, s)], bills[(small, s)], per_step_span - small)
                     for s in args.latency}  # fmt: skip
    tool_steps = per_step_span - small

    report.heading(
        f"Per tool step (the {per_step_span}-step session less the {small}-step one, over its "
        f"{tool_steps} more tool steps)"
    )
    rows = []
    for s in args.latency:
        bill = per_tool_step[s]
        waiting = costmodel.waiting_usd(prices, step_memory, s)
        rows.append([f"{s:g} s", usd(bill.total), pct(bill.total / reference), pct(waiting / bill.total),
                     *(usd(bill.items[k]) for k in bill.items)])  # fmt: skip
    report.table(["model latency", "orchestration $/tool step", "of a Sonnet step",
                  f"step Lambda ({step_memory} MB) waiting", *per_tool_step[args.latency[0]].items], rows)  # fmt: skip

    report.heading("Per session: Stepwise vs a naive single-Lambda loop, Lambda durable functions, AgentCore Runtime")
    step_compute = {n: step_cpu_seconds(shape, sessions[n]) for n in sessions}
    tool_compute = {n: statistics.median([i.own_cpu_seconds for i in sessions[n].invocations
                                          if i.function == shape.tool] or [0.0]) for n in sessions}  # fmt: skip
    rows = []
    for n in sorted(sessions):
        for s in args.latency:
            total = bills[(n, s)].total
            naive = costmodel.naive_loop_usd(prices, step_memory, n, s)
            compute = step_compute[n] + tool_compute[n]  # per step, on one full core
            durable = costmodel.durable_usd(prices, step_memory, n, sessions[n].tool_calls, s,
                                            cpu_scaled(compute, step_memory))  # fmt: skip
            agentcore = costmodel.agentcore_usd(prices, n, s, compute / AGENTCORE.vcpus)
            versus_naive = "n/a (over 15 min)" if naive is None else f"{total / naive:.2f}x"
            rows.append([str(n), f"{s:g} s", usd(total), usd(total / n), pct(total / n / reference), usd(naive),
                         versus_naive, usd(durable), f"{total / durable:.2f}x", usd(agentcore),
                         f"{total / agentcore:.2f}x"])  # fmt: skip
    report.table(["steps", "latency", "Stepwise $/session", "$/step", "of a Sonnet step", "naive loop",
                  "Stepwise / naive", "durable functions", "Stepwise / durable", "AgentCore", "Stepwise / AgentCore"],
                 rows)  # fmt: skip

    # -- latency
    report.heading("Latency a tool step adds to the model's")
    middle = sessions[per_step_span]
    gaps = [b - a for a, b in zip(middle.model_calls, middle.model_calls[1:], strict=False)]
    in_steps = (shape.step, shape.tool)
    invocations_per_step: float = sum(i.function in in_steps for i in middle.invocations)
    invocations_per_step = invocations_per_step - sum(i.function in in_steps for i in sessions[small].invocations)
    invocations_per_step /= tool_steps
    transitions_per_step = (middle.transitions - sessions[small].transitions) / tool_steps
    transitions_at = {s: (at[s][per_step_span].transitions - at[s][small].transitions) / tool_steps
                      for s in args.latency}  # fmt: skip
    calls = [c for i in middle.invocations if i.function in (shape.step, shape.tool) for c in i.calls]
    calls_small = [c for i in sessions[small].invocations if i.function in (shape.step, shape.tool) for c in i.calls]
    call_ms = (sum(LATENCY.call_ms(c.service, c.operation) for c in calls)
               - sum(LATENCY.call_ms(c.service, c.operation) for c in calls_small)) / tool_steps  # fmt: skip
    own_ms = 1000 * (cpu_scaled(step_compute[per_step_span], step_memory)
                     + cpu_scaled(tool_compute[per_step_span], shape.memory[shape.tool]))  # fmt: skip
    floor = transitions_per_step * LATENCY.transition_ms + invocations_per_step * LATENCY.invoke_ms + call_ms + own_ms
    report.table(["where", "per tool step", "how"], [
        ["local stack (moto)", f"{statistics.median(gaps) * 1000:.0f} ms median, {max(gaps) * 1000:.0f} ms max",
         f"between consecutive model requests of the {per_step_span}-step session (the fake answers at once)"],
        ["AWS, estimated floor", f"{floor:.0f} ms",
         f"{transitions_per_step:.1f} transitions x {LATENCY.transition_ms:g} ms + {invocations_per_step:.1f} invokes "
         f"x {LATENCY.invoke_ms:g} ms + DynamoDB/AWS calls {call_ms:.0f} ms + handlers' own compute {own_ms:.0f} ms"],
    ])  # fmt: skip
    report.text(f"Assumed AWS latencies, not measured here: {LATENCY.describe()}.")

    # -- the issue's table
    report.heading("The issue-12 table, re-measured")
    share_20 = costmodel.waiting_usd(prices, step_memory, 20) / per_tool_step[20].total if 20 in args.latency else None
    ratio_5_20 = bills[(small, 20)].total / (costmodel.naive_loop_usd(prices, step_memory, small, 20) or 1)
    hot = hot_items(shape, sessions[per_step_span])
    rru = rru_by_step(shape, sessions[large])
    probe = [p for p in (5, 55) if p in rru]
    rows = []
    if 2 in args.latency and 20 in args.latency:
        a, b = per_tool_step[2].total, per_tool_step[20].total
        rows.append(["orchestration $ per tool step, model latency 2 s / 20 s",
                     f"{usd(a)} / {usd(b)} ({pct(a / reference)} / {pct(b / reference)} of {usd(reference)})",
                     "<= 0.5 % / <= 1 % of a Sonnet step",
                     verdict(100 * a / reference <= ISSUE_GOALS["per_step_2s_pct"]
                             and 100 * b / reference <= ISSUE_GOALS["per_step_20s_pct"])])  # fmt: skip
    if share_20 is not None:
        rows.append([f"share of that which is the step Lambda ({step_memory} MB, from the template) waiting on the "
                     "model, at 20 s", pct(share_20), "the smallest memory measurement supports",
                     "not judged here (no memory use measured)"])  # fmt: skip
    rows.append([f"vs a naive single-Lambda loop (same memory), {small} steps at 20 s", f"{ratio_5_20:.2f}x dearer",
                 "within 1.2x", verdict(ratio_5_20 <= ISSUE_GOALS["vs_naive"])])  # fmt: skip
    rows.append(["state transitions per tool step (built-in tool)",
                 " / ".join(f"{transitions_at[s]:.2g} at {s:g} s" for s in args.latency), "2",
                 verdict(max(transitions_at.values()) <= ISSUE_GOALS["transitions"])])  # fmt: skip
    rows.append(["cold import as shipped", "run `python bench/cold_start.py`", "api/intake <= 200 ms, step <= 600 ms",
                 "see bench/cold_start.py"])  # fmt: skip
    rows.append(["single items every step writes (not the run's own)", hot.describe(), "none; a steps/s figure",
                 verdict(not hot.items)])  # fmt: skip
    if probe:
        figures = " vs ".join(f"{rru[p]:g} RRU at step {p}" for p in reversed(probe))
        flat = verdict(rru[55] <= rru[5] * 1.5) if len(probe) == 2 else "n/a (a session of 56+ steps judges it)"
        rows.append([f"DynamoDB read per step (step and tool Lambdas) at step 55 vs step 5 ({large}-step session)",
                     figures, "independent of run length (within 1.5x)", flat])  # fmt: skip
    rows.append(["execution history events", ", ".join(f"{sessions[n].history_events} at {n} steps"
                                                        for n in sorted(sessions)), "far below 25,000", verdict(
        max(s.history_events for s in sessions.values()) < 25_000 / 4)])  # fmt: skip
    report.table(["measure", "now", "goal", "verdict"], [[*r] for r in rows])

    report.heading(
        f"Counts per tool step, measured (at {args.latency[0]:g} s: {loops[args.latency[0]]} steps an invocation)"
    )
    small_s, middle_s = sessions[small], sessions[per_step_span]
    ddb = sum(i.count("dynamodb") for i in middle_s.invocations) - sum(i.count("dynamodb") for i in small_s.invocations)
    wru = sum(i.wru for i in middle_s.invocations) - sum(i.wru for i in small_s.invocations)
    rru_total = sum(i.rru for i in middle_s.invocations) - sum(i.rru for i in small_s.invocations)
    states = Counter(e for e in middle_s.states) - Counter(e for e in small_s.states)
    entered_per_step = ", ".join(f"{name} {n / tool_steps:g}" for name, n in sorted(states.items()))
    report.text(f"States entered per tool step: {entered_per_step}.")
    report.table(["transitions", "Lambda invocations", "DynamoDB calls", "WRU", "RRU",
                  "step Lambda own CPU per step (this machine)", "tool Lambda own CPU"], [[
        f"{transitions_per_step:g}", f"{invocations_per_step:g}", f"{ddb / tool_steps:.3g}", f"{wru / tool_steps:.3g}",
        f"{rru_total / tool_steps:.3g}", f"{step_compute[per_step_span] * 1000:.0f} ms",
        f"{tool_compute[per_step_span] * 1000:.0f} ms"]])  # fmt: skip
    report.heading("Counts per session, measured (estimated billed Lambda time at each model latency)")
    rows = []
    for n in sorted(sessions):
        session = sessions[n]
        by_function = Counter(shape.names.get(i.function, i.function) for i in session.invocations)
        lambda_ms = " / ".join(f"{sum(use.billed_ms for use in counts(shape, at[s][n], s).lambdas) / 1000:,.1f} s"
                               for s in args.latency)  # fmt: skip
        transitions = " / ".join(str(at[s][n].transitions) for s in args.latency)
        totals = counts(shape, session, 0.0)
        invoked = ", ".join(f"{name} {k}" for name, k in sorted(by_function.items()))
        rows.append([str(n), transitions, invoked, lambda_ms,
                     str(sum(i.count("dynamodb") for i in session.invocations)), f"{totals.wru:g}", f"{totals.rru:g}",
                     f"{totals.sqs_requests:g}", f"{totals.api_requests:g}"])  # fmt: skip
    billed = "Lambda billed, " + " / ".join(f"{s:g} s" for s in args.latency)
    report.table(["steps", "transitions, " + " / ".join(f"{s:g} s" for s in args.latency),
                  f"Lambda invocations ({args.latency[0]:g} s)", billed, "DynamoDB calls", "WRU", "RRU", "SQS requests",
                  "API requests"], rows)  # fmt: skip
    report.text(f"Assumptions. Lambda durable functions: {DURABLE.describe()}. AgentCore Runtime: "
                f"{AGENTCORE.describe()}. The naive loop bills only its wait on the model (its own compute left out, "
                "which favours it). Lambda own CPU time scaled by 1,769 MB / memory. The event source mapping's SQS "
                "receive and delete counted once per intake batch. Left out: the api authorizer (deployed with API "
                "keys), the run watchdog's check 15 minutes after the start, polling GET /runs.")  # fmt: skip
    return report


@dataclass
class HotItems:
    items: dict[tuple[str, str], float]  # a shared item written by every tool step -> its write units per step

    def describe(self) -> str:
        if not self.items:
            return "none"
        worst = max(self.items.values())
        names = ", ".join(f"{pk} {sk}" for pk, sk in sorted(self.items))
        return (
            f"{len(self.items)} hot items ({names}), up to {worst:g} WRU per step each: <= "
            f"{WCU_PER_ITEM / worst:.0f} steps/s by WCU (transaction conflicts lower it)"
        )


def hot_items(shape: Stack, session: Session) -> HotItems:
    """Items that name no run (shared by every run of a tenant, or every tenant) written by every step invocation."""
    steps = step_invocations(shape, session)
    seen: dict[tuple[str, str], list[float]] = {}
    for invocation in steps:
        shared: dict[tuple[str, str], float] = {}
        for call in invocation.calls:
            for key, written in call.written.items():
                if "#R#" not in key[0] + key[1]:  # a run's items name it (T#..#R#run, ..#R#run)
                    shared[key] = shared.get(key, 0.0) + written
        for key, units in shared.items():  # per step the invocation took
            seen.setdefault(key, []).append(units / steps_taken(invocation))
    # the last step (the answer) may write less; a day bucket names today's date: the same item all day
    return HotItems({key: statistics.mean(units) for key, units in seen.items() if len(units) >= len(steps) - 1})


def rru_by_step(shape: Stack, session: Session) -> dict[int, float]:
    found: dict[int, float] = {}
    for invocation in session.invocations:
        step = invocation.event.get("step")
        if invocation.function in (shape.step, shape.tool) and isinstance(step, int):
            taken = steps_taken(invocation) if invocation.function == shape.step else 1
            for each in range(step, step + taken):  # a step invocation's reads, shared by the steps it took
                found[each] = found.get(each, 0.0) + invocation.rru / taken
    return found


def command_line(args: argparse.Namespace) -> str:
    parts = ["python", "bench/orchestration.py"]
    if args.steps != DEFAULT_STEPS:
        parts += ["--steps", *map(str, args.steps)]
    if args.latency != DEFAULT_LATENCY:
        parts += ["--latency", *(f"{s:g}" for s in args.latency)]
    return shlex.join(parts)


DEFAULT_STEPS = [5, 20, 100]
DEFAULT_LATENCY = [2.0, 20.0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, nargs="+", default=DEFAULT_STEPS, help="session lengths (model calls)")
    parser.add_argument("--latency", type=float, nargs="+", default=DEFAULT_LATENCY, help="model latency, seconds")
    parser.add_argument("--markdown", action="store_true", help="print markdown (docs/benchmarks.md)")
    parser.add_argument("--template", type=Path, help="a synthesised template (default: synthesise it now)")
    parser.add_argument(
        "--update",
        type=Path,
        metavar="MARKDOWN_FILE",
        help=f"write the markdown report between {BEGIN} and {END} in this file (docs/benchmarks.md)",
    )
    args = parser.parse_args()
    args.markdown = args.markdown or args.update is not None
    if len(args.steps) < 2 or min(args.steps) < 2:
        parser.error("--steps: at least two session lengths of 2 steps or more (per tool step = their difference)")
    args.steps = sorted(set(args.steps))
    from stepwise.local.template import synthesize

    template = json.loads(args.template.read_text()) if args.template else synthesize()
    prices = costmodel.load_prices()
    out = sys.stdout
    loops = {s: loop_steps(template, s) for s in args.latency}
    shape, measured = measure(args.steps, template, list(loops.values()))
    at = {s: measured[loops[s]] for s in args.latency}
    text = "\n".join(build(args, prices, shape, at, loops).lines).strip()
    if args.update is not None:
        update(args.update, text)
    print(text, file=out)


BEGIN, END = "<!-- bench/orchestration.py: begin -->", "<!-- bench/orchestration.py: end -->"


def update(path: Path, report: str) -> None:
    """Replace what stands between the markers in ``path`` with ``report``."""
    document = path.read_text()
    if document.count(BEGIN) != 1 or document.count(END) != 1 or document.index(BEGIN) > document.index(END):
        raise SystemExit(f"{path}: needs one {BEGIN} line and, after it, one {END} line")
    head, rest = document.split(BEGIN)
    _, tail = rest.split(END)
    path.write_text(f"{head}{BEGIN}\n{report}\n{END}{tail}")


if __name__ == "__main__":
    main()
