"""Fault injection on the local stack: a faulty provider, crashing step Lambdas, conflicting writes,
duplicate intake deliveries, cancels while runs work. ``run_chaos`` drives N runs through it and audits every run,
counter and tool call."""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from botocore.exceptions import ClientError

from functions.agent.models import RunKey
from tests.fakes.anthropic_server import FakeAnthropic, error, message

TERMINAL = {"SUCCEEDED", "FAILED", "CANCELLED", "BUDGET_EXCEEDED", "TIMED_OUT"}
RETRYABLE_KINDS = ("429", "529", "500", "timeout", "malformed", "empty")
CANCEL_MOMENTS = ("model", "tool", "clock")
_TASK = re.compile(r"task (\d+):")


@dataclass
class Faults:
    retryable: float = 0.3  # share of model calls that fail retryably, spread over RETRYABLE_KINDS
    huge: float = 0.02  # share of answers that are huge (150 KB of text)
    duplicate_intake: float = 0.2  # share of runs whose intake message is delivered twice
    crash_after_call: float = 0.05  # share of step invocations that die after the model answered
    store_conflicts: float = 0.05  # share of DynamoDB transactions that lose to a concurrent writer
    seed: int = 7
    # share of runs cancelled (POST /runs/{id}/cancel) while they work: while the model answers their first call,
    # while their tool call runs, or at a random moment of their first 3 s (CANCEL_MOMENTS, one at random)
    cancels: float = 0.0


class FaultyProvider:
    """The fake Messages API's reply: a fault at the configured rates, else a two-step agent answer."""

    def __init__(self, faults: Faults, rng: random.Random, call_timeout: float) -> None:
        self.faults, self.rng, self.call_timeout = faults, rng, call_timeout
        self.lock = threading.Lock()
        self.calls = 0
        self.injected: Counter[str] = Counter()
        self.answering: Callable[[int], None] = lambda task: None  # told each call's task (run index) first
        self.tool_tasks: dict[str, int] = {}  # the task each tool call it asked for is of

    def __call__(self, body: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
        first = body["messages"][0]["content"]
        found = _TASK.search(first if isinstance(first, str) else json.dumps(first))
        task = int(found.group(1)) if found else -1
        self.answering(task)
        with self.lock:
            self.calls += 1
            roll = self.rng.random()
            kind = self.rng.choice(RETRYABLE_KINDS) if roll < self.faults.retryable else None
            huge = kind is None and self.rng.random() < self.faults.huge
            if kind:
                self.injected[kind] += 1
            elif huge:
                self.injected["huge"] += 1
        if kind == "429":
            return (*error(429, "rate_limit_error", "slow down"), {"retry-after": "1"})
        if kind == "529":
            return (*error(529, "overloaded_error", "Overloaded"), {})
        if kind == "500":
            return (*error(500, "api_error", "Internal server error"), {})
        if kind == "timeout":
            time.sleep(self.call_timeout + 0.5)  # the client gives up first
            return 200, message([{"type": "text", "text": "too late"}], "end_turn"), {}
        if kind == "malformed":
            return 200, {"type": "message", "content": "not a list of blocks"}, {}
        if kind == "empty":
            return 200, {}, {}
        done = any(
            isinstance(m["content"], list) and any(b.get("type") == "tool_result" for b in m["content"])
            for m in body["messages"]
        )
        if not done:
            tool_use_id = f"toolu_{self.rng.randrange(10**9)}"
            self.tool_tasks[tool_use_id] = task
            content = [
                {
                    "type": "tool_use",
                    "id": tool_use_id,
                    "name": "calculator",
                    "input": {"expression": "6*7"},
                }
            ]
            return 200, message(content, "tool_use", model=body["model"], input_tokens=400, output_tokens=40), {}
        text = "6 * 7 = 42" + (" " + "x" * 150_000 if huge else "")
        return (
            200,
            message(
                [{"type": "text", "text": text}], "end_turn", model=body["model"], input_tokens=500, output_tokens=20
            ),
            {},
        )


class InjectedCrash(Exception):
    """The step Lambda dies (a timeout or out of memory, as Lambda reports it)."""

    lambda_error_type = "Sandbox.Timedout"


class DiedAmongTools(BaseException):
    """The function running a tool call (the step, for a fast call; else the tool function) dies after the tool did
    its work, before its result is stored. A BaseException: nothing in the function may catch it, as nothing can
    catch a Lambda's timeout."""

    lambda_error_type = "Sandbox.Timedout"


@dataclass
class Report:
    submitted: int
    statuses: Counter[str]
    failure_reasons: Counter[str]
    lost: int
    double_charged_steps: int
    accounting_mismatches: list[str]
    model_calls: int
    minimum_calls: int
    injected: Counter[str]
    crashes: int
    conflicts: int
    duplicate_deliveries: int
    circuit_openings: int
    seconds: float
    tool_crashes: int = 0  # functions that died while a tool call ran (after its work)
    cancels: Counter[str] = field(default_factory=Counter)  # what the API answered each cancel
    unanswered_calls: list[str] = field(default_factory=list)  # a kept step's tool calls without a final result
    # the longest spell (s) each circuit of the runs' model and its fallbacks stayed other than closed, and all of
    # them at once (no model to fall back to), as the table held them every poll (CircuitWatch)
    circuits_down: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def lines(self) -> list[str]:
        return [
            f"runs submitted            {self.submitted}",
            f"reached a terminal state  {sum(self.statuses.values())}  "
            f"({', '.join(f'{k} {v}' for k, v in sorted(self.statuses.items()))})",
            f"failed, by reason         {dict(self.failure_reasons) or '-'}",
            f"lost (never terminal)     {self.lost}",
            f"double-charged/mispriced  {self.double_charged_steps}  (steps, counters, reservations audited)",
            f"calls without a result    {len(self.unanswered_calls)}  (every tool call of every kept step)",
            f"model calls made          {self.model_calls}  (minimum needed {self.minimum_calls}, "
            f"{self.model_calls / max(self.minimum_calls, 1):.2f}x)",
            f"provider faults injected  {sum(self.injected.values())}  {dict(self.injected)}",
            f"step crashes injected     {self.crashes}",
            f"tool crashes injected     {self.tool_crashes}  (the function died as a tool call ran)",
            f"DynamoDB conflicts        {self.conflicts}",
            f"duplicate intake msgs     {self.duplicate_deliveries}",
            f"cancels sent              {sum(self.cancels.values())}  {dict(self.cancels) or ''}".rstrip(),
            f"circuit openings          {self.circuit_openings}",
            f"longest not closed        {', '.join(f'{k} {v:.1f} s' for k, v in self.circuits_down.items()) or '-'}",
            f"wall time                 {self.seconds:.1f} s",
        ]


class CircuitWatch:
    """The circuits of the runs' model and its fallbacks as the table holds them, read at each ``poll``: the longest
    spell each stayed open or half-open, and all of them at once ("all"): a step then has no model to call."""

    def __init__(self, circuits: Any, models: list[str]) -> None:
        from functions.agent.circuit import circuit_key
        from functions.agent.pricing import default_price_book

        prices = default_price_book()
        self.circuits = circuits
        self.keys = {model: circuit_key(prices.price(model).provider, model) for model in models}
        self.since: dict[str, float] = {}  # model or "all" -> when it was first seen not closed
        self.longest: dict[str, float] = dict.fromkeys([*models, "all"], 0.0)

    def poll(self) -> None:
        from functions.agent.circuit import CircuitState

        now = time.monotonic()
        down = {m for m, key in self.keys.items() if self.circuits.load(key).state is not CircuitState.CLOSED}
        for name in self.longest:
            if name in down or (name == "all" and down == set(self.keys)):
                started = self.since.setdefault(name, now)
                self.longest[name] = max(self.longest[name], now - started)
            else:
                self.since.pop(name, None)


def run_chaos(runs: int, faults: Faults, *, deadline_seconds: float = 600) -> Report:
    from functions.adapters import dynamodb_store, wiring
    from functions.adapters.dynamodb_circuits import DynamoDBCircuitStore
    from functions.adapters.settings import ApiSettings, Settings, load
    from functions.agent.routing import default_routing
    from stepwise.local.stack import LocalStack
    from stepwise.local.template import synthesize

    rng = random.Random(faults.seed)
    call_timeout = 1.0
    provider = FaultyProvider(faults, rng, call_timeout)
    counts = Counter[str]()
    env = {
        "ANTHROPIC_API_KEY": "chaos",
        "STEPWISE_MODEL_PROVIDER": "auto",
        "STEPWISE_MODEL_TIMEOUT_SECONDS": str(call_timeout),
        "STEPWISE_CIRCUIT_FAILURE_THRESHOLD": "10",
        "STEPWISE_CIRCUIT_WINDOW_SECONDS": "10",
        "STEPWISE_CIRCUIT_COOLDOWN_SECONDS": "2",
        "STEPWISE_RELEASE_DELAY_SECONDS": "0",
        "POWERTOOLS_LOG_LEVEL": "ERROR",
    }
    saved = {key: os.environ.get(key) for key in [*env, "ANTHROPIC_BASE_URL"]}
    template = synthesize(context={"model_retry_interval_seconds": 1, "model_retry_max_delay_seconds": 4})
    emf = io.StringIO()
    real_pending = dynamodb_store.DynamoDBRunStore.save_pending
    real_apply = dynamodb_store.DynamoDBRunStore.apply

    def crash_maybe() -> None:
        with provider.lock:
            crash = rng.random() < faults.crash_after_call / 2
        if crash:
            counts["crash"] += 1
            raise InjectedCrash("injected: the step Lambda died after the model answered")

    def pending(self: Any, *args: Any, **kwargs: Any) -> None:
        crash_maybe()  # dies before the answer is stored: the retry calls the model again
        real_pending(self, *args, **kwargs)

    def apply(self: Any, plan: Any) -> Any:
        if plan.record is not None:  # a settlement
            crash_maybe()  # dies after the answer was stored: the retry settles it without a call
        return real_apply(self, plan)

    with FakeAnthropic(*([provider] * (runs * 40))) as fake, contextlib.redirect_stdout(emf):
        os.environ.update({**env, "ANTHROPIC_BASE_URL": fake.base_url})
        started = time.monotonic()
        try:
            with LocalStack(port=0, template=template) as stack:
                os.environ.update({**env, "ANTHROPIC_BASE_URL": fake.base_url})
                wiring.reset()
                dynamodb_store.DynamoDBRunStore.save_pending = pending  # type: ignore[method-assign]
                dynamodb_store.DynamoDBRunStore.apply = apply  # type: ignore[method-assign]
                client = wiring.aws_client("dynamodb")
                real_transact = client.transact_write_items

                def transact(**kwargs: Any) -> Any:
                    with provider.lock:
                        conflict = rng.random() < faults.store_conflicts
                    if conflict:
                        counts["conflict"] += 1
                        reasons = [{"Code": "TransactionConflict"}] + [{"Code": "None"}] * (
                            len(kwargs["TransactItems"]) - 1
                        )
                        raise ClientError(
                            {
                                "Error": {"Code": "TransactionCanceledException", "Message": "injected conflict"},
                                "CancellationReasons": reasons,
                            },
                            "TransactWriteItems",
                        )
                    return real_transact(**kwargs)

                client.transact_write_items = transact
                run_ids: list[str] = []
                # the runs cancelled while they work, and when (see Faults.cancels); drawn apart from the faults
                chooser = random.Random(faults.seed + 1)
                moments = {i: chooser.choice(CANCEL_MOMENTS) for i in range(runs) if chooser.random() < faults.cancels}
                clock = {i: chooser.uniform(0, 3) for i, moment in moments.items() if moment == "clock"}
                sent: set[int] = set()
                cancelling: list[threading.Thread] = []

                def cancel(task: int) -> None:
                    with provider.lock:
                        if task in sent or task >= len(run_ids):
                            return
                        sent.add(task)
                    status, _, _ = stack.handle_http("POST", f"/runs/{run_ids[task]}/cancel", {}, "")
                    with provider.lock:
                        counts[f"cancel {status}"] += 1

                def while_answering(task: int) -> None:  # the cancel races the model's answer
                    if moments.get(task) == "model":
                        thread = threading.Thread(target=cancel, args=(task,), daemon=True)
                        cancelling.append(thread)
                        thread.start()

                registry = wiring.registry()
                real_execute = registry.execute

                def while_running(call: Any, allowed: Any) -> Any:  # the tool runs on past the cancel
                    task = provider.tool_tasks.get(call.id, -1)
                    if moments.get(task) == "tool":
                        cancel(task)
                    result = real_execute(call, allowed)
                    with provider.lock:
                        dies = rng.random() < faults.crash_after_call / 2
                        counts["tool_crash"] += dies
                    if dies:  # the step (a fast call: it is retried, and the Map runs its calls) or the tool function
                        raise DiedAmongTools("injected: the function died after the tool ran")
                    return result

                provider.answering = while_answering
                registry.execute = while_running  # type: ignore[method-assign]
                for i in range(runs):
                    status, _, body = stack.handle_http(
                        "POST", "/runs", {}, json.dumps({"input": f"task {i}: what is 6 * 7?"})
                    )
                    assert status == 202, body
                    run_id = json.loads(body)["run_id"]
                    run_ids.append(run_id)
                    with provider.lock:
                        duplicate = rng.random() < faults.duplicate_intake
                    if duplicate:
                        counts["duplicate"] += 1
                        stack.sqs.send_message(
                            QueueUrl=stack.queue_url, MessageBody=json.dumps({"tenant": "local", "run_id": run_id})
                        )
                store = wiring.store(load(Settings))
                deadline = time.monotonic() + deadline_seconds
                cancel_at = {i: time.monotonic() + at for i, at in clock.items()}
                pending_ids = set(run_ids)
                settings = load(ApiSettings)  # the runs' model: the api's default
                models = [settings.default_model, *default_routing().fallbacks.get(settings.default_model, [])]
                watch = CircuitWatch(DynamoDBCircuitStore(settings.table_name, client), models)
                while pending_ids and time.monotonic() < deadline:
                    watch.poll()
                    for task in [i for i, at in cancel_at.items() if at <= time.monotonic()]:
                        del cancel_at[task]
                        cancel(task)
                    pending_ids = {
                        r
                        for r in pending_ids
                        if (run := store.get_run(RunKey("local", r))) is None or run.status.value not in TERMINAL
                    }
                    time.sleep(0.5)
                for thread in cancelling:
                    thread.join(timeout=30)
                # let finalizers, late settlements and the releases of what cancelled runs held land
                holding = set(run_ids)
                while holding and time.monotonic() < deadline:
                    holding = {
                        r for r in holding if (run := store.get_run(RunKey("local", r))) and (run.held or run.lease)
                    }
                    time.sleep(0.5)
                time.sleep(1.5)
                report = _audit(store, run_ids, provider, counts, emf.getvalue(), time.monotonic() - started)
                report.circuits_down = {name: round(seconds, 1) for name, seconds in watch.longest.items()}
        finally:
            provider.answering = lambda task: None
            dynamodb_store.DynamoDBRunStore.save_pending = real_pending  # type: ignore[method-assign]
            dynamodb_store.DynamoDBRunStore.apply = real_apply  # type: ignore[method-assign]
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
            wiring.reset()
    return report


def _audit(
    store: Any, run_ids: list[str], provider: FaultyProvider, counts: Counter[str], emf: str, seconds: float
) -> Report:
    """Every run ended; every step is priced at the model it was served for and charged once; no ended run
    holds a reservation; the tenant's and the global day counters equal the runs' totals, committed = spent; every
    tool call of every kept step has a final result (a cancelled run's too: its end gave them theirs)."""
    from functions.agent.pricing import default_price_book

    prices = default_price_book()
    statuses: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    examples: dict[str, str] = {}
    mismatches: list[str] = []
    unanswered: list[str] = []
    minimum = 0
    lost = 0
    total_cost = Decimal(0)
    total_steps = 0
    for run_id in run_ids:
        history = store.load_history(RunKey("local", run_id))
        run = history.run
        if run.status.value not in TERMINAL:
            lost += 1
            continue
        statuses[run.status.value] += 1
        if run.error and run.status.value != "SUCCEEDED":
            reasons[run.error.code] += 1
            examples.setdefault(run.error.code, run.error.message[:300])
        steps = history.steps
        minimum += len(steps)
        if run.held is not None or run.lease is not None:
            mismatches.append(f"{run_id}: ended {run.status.value} still holding {run.held} under {run.lease}")
        for record in steps:
            if record.provider != "response-cache":
                expected = prices.cost(record.requested_model or record.model, record.usage)
                if record.cost_usd != expected:
                    mismatches.append(f"{run_id} step {record.step}: charged {record.cost_usd}, priced {expected}")
        for record in steps:
            if record.decision.value not in ("tools", "action"):  # (a superseded step's calls are not run)
                continue
            for call in record.tool_calls():
                outcome = history.tool_results.get((record.step, call.id))
                if outcome is None or not outcome.final:
                    unanswered.append(f"{run_id} step {record.step} ({run.status.value}): no result for {call.id}")
        charged = sum((s.cost_usd for s in steps), Decimal(0))
        if (
            charged != run.cost_usd
            or len(steps) != run.completed_steps
            or [s.step for s in steps] != list(range(len(steps)))
        ):
            mismatches.append(
                f"{run_id}: run cost {run.cost_usd} / steps {run.completed_steps} vs records {charged} / {len(steps)}"
            )
        total_cost += run.cost_usd
        total_steps += run.completed_steps
    day = time.strftime("%Y-%m-%d", time.gmtime())
    counter = {row.day: row for row in store.spend_rows("local", day, day) if row.model is None and row.run_id is None}
    if day not in counter:
        if total_cost:
            mismatches.append(f"no tenant day counter for {day} although the runs cost {total_cost}")
    elif counter[day].cost_usd != total_cost or counter[day].steps != total_steps:
        mismatches.append(
            f"tenant day counter {counter[day].cost_usd} / {counter[day].steps} vs runs {total_cost} / {total_steps}"
        )
    tenant_committed, global_committed = store.committed("local", day)
    if tenant_committed != total_cost or global_committed != total_cost:
        mismatches.append(f"committed (tenant {tenant_committed}, global {global_committed}) != spent {total_cost}")
    openings = sum(1 for line in emf.splitlines() if '"CircuitTransitions"' in line and '"State":"open"' in line)
    return Report(
        submitted=len(run_ids),
        statuses=statuses,
        failure_reasons=reasons,
        lost=lost,
        double_charged_steps=len(mismatches),
        accounting_mismatches=mismatches,
        model_calls=provider.calls,
        minimum_calls=minimum,
        injected=provider.injected,
        crashes=counts["crash"],
        tool_crashes=counts["tool_crash"],
        conflicts=counts["conflict"],
        duplicate_deliveries=counts["duplicate"],
        circuit_openings=openings,
        seconds=seconds,
        unanswered_calls=unanswered,
        cancels=Counter({key.removeprefix("cancel "): n for key, n in counts.items() if key.startswith("cancel ")}),
        extra={"failure_examples": examples},
    )
