"""The hard budget with several steps per step invocation (functions/agent/step_loop.py), on the real DynamoDB adapter
(moto): 50 runs, each taking its steps in loops as the step function does, never pass a tenant's daily budget by more
than one reservation, and every call billed is recorded once."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import boto3

from functions.adapters.dynamodb_store import DynamoDBRunStore
from functions.agent.ledger import BudgetLimits
from functions.agent.models import RunStatus, StepRef, Usage
from functions.agent.step import StepOutcome
from functions.agent.step_loop import LaterStepFailed, StepLoop, Steps
from functions.agent.tool import ToolRunner
from functions.tools import builtin_registry
from tests.fakes import core
from tests.fakes.clock import FixedClock
from tests.functional.conftest import TABLE, Aws
from tests.functional.test_budgets import PRICES, TENANT, AtomicCalls, PerRunModel, counter, key_of, submit


def drive_in_loops(store: DynamoDBRunStore, model: PerRunModel, run_id: str, limits: BudgetLimits) -> StepOutcome:
    """What the workflow does for one run when its step function loops: Step (several steps), Route, then the Tools
    map for calls left, Step again, ... Finalize."""
    tools = ToolRunner(store=store, toolbox=builtin_registry(), clock=FixedClock())
    runner = core.runner(store, model, limits=limits, tools=tools)
    key, step = key_of(run_id), 0
    for _ in range(20):
        taken = list(Steps(runner, StepRef(key, step), loop=StepLoop(), time_left=lambda: 900.0))
        last = [t for t in taken if isinstance(t, StepOutcome)][-1]
        if isinstance(taken[-1], LaterStepFailed):
            step = taken[-1].ref.step
            continue
        if last.status is not None:
            core.lifecycle(store).end(key, last.status, last.error)
            return last
        core.run_tools(store, last)
        step = last.next_step
    raise AssertionError(f"run {run_id} did not end")


def test_fifty_parallel_looping_runs_never_overspend_the_tenant_budget_by_more_than_one_reservation(aws: Aws) -> None:
    # Given a tenant daily budget that about half of 50 two-step runs fit in
    store = DynamoDBRunStore(TABLE, AtomicCalls(boto3.client("dynamodb")))
    limit = Decimal("0.10")
    model = PerRunModel(Usage(input_tokens=2_000, output_tokens=200))
    runs = [submit(store, f"task {i}: what is 6*7?") for i in range(50)]
    # When all 50 run at once, each step invocation taking both of its run's steps
    with ThreadPoolExecutor(max_workers=50) as pool:
        outcomes = list(pool.map(lambda r: drive_in_loops(store, model, r, BudgetLimits(tenant_daily_usd=limit)), runs))
    # Then the recorded spend never passes the budget by more than one reservation, and every call billed is recorded
    spent = Decimal(str(counter(aws, TENANT)["spent_usd"]))
    assert spent <= limit + PRICES.worst_case("claude-haiku-4-5", 1_000, 1024), (spent, limit)
    assert spent == model.billed
    statuses = [o.status for o in outcomes]
    assert statuses.count(RunStatus.SUCCEEDED) >= 1 and statuses.count(RunStatus.BUDGET_EXCEEDED) >= 1
    assert Decimal(str(counter(aws, TENANT)["committed_usd"])) == spent  # nothing left reserved
