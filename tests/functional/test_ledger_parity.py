"""The budget rules exist once (functions/agent/ledger.py); the DynamoDB adapter and the in-memory fake only
apply its plans. Here both stores are given the same state and the same operation, and must agree on the
outcome (the same refusal, code and message), on the run afterwards, on every spend counter, and on the index of
active work (functions/agent/active.py), which must list exactly the runs the rule says are active."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import boto3
import pytest

from functions.adapters.dynamodb_store import ACTIVE_PK, ACTIVE_SK, RUN_SK, DynamoDBRunStore, counter_key, run_pk
from functions.adapters.serde import from_item
from functions.agent import ledger
from functions.agent.active import ActiveEntry, listing, shard_of
from functions.agent.ledger import (
    AtStep,
    BudgetLimits,
    Condition,
    CostAtMost,
    Counter,
    HasEnded,
    Holds,
    HoldsNothing,
    HoldsNothingFor,
    IsActive,
    LeaseIs,
    Plan,
    RunChange,
)
from functions.agent.models import (
    Budget,
    Lease,
    Reservation,
    Run,
    RunError,
    RunKey,
    RunStatus,
    StepDecision,
    StepRecord,
    StepRef,
    ToolError,
    ToolOutcome,
    Usage,
)
from functions.agent.ports import RunStore
from tests.fakes import core
from tests.fakes.memory_store import InMemoryRunStore
from tests.fakes.services import RecordingQueue, RecordingWorkflow
from tests.functional.conftest import TABLE, Aws

DAY = "2026-11-21"
NOW = f"{DAY}T12:00:00.000+00:00"
MODEL = "claude-haiku-4-5"


def new_run(run_id: str, *, max_usd: float | None = None, tenant: str = "acme") -> Run:
    return Run(
        run_id=run_id,
        tenant=tenant,
        status=RunStatus.QUEUED,
        input="task",
        model=MODEL,
        tools=["calculator"],
        budget=Budget(max_usd=max_usd),
        created_at=NOW,
        updated_at=NOW,
    )


def held(step: int = 0, amount: str = "0.05", model: str = MODEL) -> Reservation:
    return Reservation(step=step, amount_usd=Decimal(amount), day=DAY, model=model, reason="test")


def record(run: Run, step: int = 0, cost: str = "0.01", status: RunStatus | None = None) -> StepRecord:
    return StepRecord(
        run_id=run.run_id,
        step=step,
        model=MODEL,
        provider="scripted",
        stop_reason="end_turn" if status else "tool_use",
        content=[{"type": "text", "text": "x"}],
        usage=Usage(input_tokens=100, output_tokens=10),
        cost_usd=Decimal(cost),
        decision=StepDecision.FINISH if status else StepDecision.TOOLS,
        status=status,
        error=RunError(code="REFUSAL", message="no") if status is RunStatus.FAILED else None,
        started_at=NOW,
        finished_at=NOW,
        duration_ms=0,
    )


def outcome(operation: Callable[[RunStore], Any], store: RunStore) -> Any:
    """What an operation returned, or the error it raised as (type, code, message)."""
    try:
        return ("returned", operation(store))
    except Exception as exc:  # the point is to compare whatever happens
        return ("raised", type(exc).__name__, getattr(exc, "code", None), str(exc))


def counters_of(store: RunStore, aws: Aws, runs: list[Run]) -> dict[Counter, dict[str, Any]]:
    """Every counter a plan may touch for these runs, as plain values (missing fields and counters omitted)."""
    wanted = [Counter(None, DAY), *(Counter(None, DAY, shard=k) for k in range(ledger.STAT_SHARDS))]
    for run in runs:
        wanted += [
            Counter(run.tenant, DAY),
            Counter(run.tenant, DAY, run_id=run.run_id),
            *(Counter(run.tenant, DAY, shard=k) for k in range(ledger.STAT_SHARDS)),
            *(Counter(run.tenant, DAY, model=MODEL, shard=k) for k in range(ledger.STAT_SHARDS)),
        ]
    found: dict[Counter, dict[str, Any]] = {}
    for counter in wanted:
        if isinstance(store, InMemoryRunStore):
            fields = {k: Decimal(v) for k, v in store.counters.get(counter, {}).items()}
        else:
            item = aws.dynamodb.get_item(TableName=TABLE, Key=counter_key(counter), ConsistentRead=True).get("Item")
            fields = {k: Decimal(str(v)) for k, v in from_item(item).items() if k not in ("pk", "sk")} if item else {}
        if fields:
            found[counter] = fields
    return found


Setup = Callable[[RunStore, list[Run]], None]
Operation = Callable[[RunStore, list[Run]], Any]


def _reserve(index: int, wanted: Reservation, limits: BudgetLimits, replacing: Reservation | None = None) -> Operation:
    def operation(store: RunStore, runs: list[Run]) -> Any:
        run = store.get_run(runs[index].key)
        assert run is not None
        return ledger.reserve(store, run, wanted, limits, replacing=replacing, now=NOW)

    return operation


def _settle(index: int, step: int = 0, status: RunStatus | None = None) -> Operation:
    def operation(store: RunStore, runs: list[Run]) -> Any:
        run = store.get_run(runs[index].key)
        assert run is not None
        return ledger.settle(store, run, record(run, step, status=status), "done" if status else None)

    return operation


def _end(index: int, status: RunStatus, *, release: bool = True) -> Operation:
    def operation(store: RunStore, runs: list[Run]) -> Any:
        return ledger.end_run(store, runs[index].key, status, release=release, now=NOW)

    return operation


def _end_over_a_stale_read(index: int, meanwhile: Operation) -> Operation:
    """An end planned over the run as read, written after ``meanwhile`` changed it (a step settled, a call reserved):
    refused, so its ender reads the run again (and settles the calls of the step it finds)."""

    def operation(store: RunStore, runs: list[Run]) -> Any:
        read = store.get_run(runs[index].key)
        assert read is not None
        meanwhile(store, runs)
        return store.apply(ledger.end_plan(read, RunStatus.CANCELLED, error=None, release=False, now=NOW))

    return operation


def listed(store: RunStore, runs: list[Run]) -> list[ActiveEntry]:
    """What the store's index of active work lists for these runs' tenants."""
    tenants = sorted({run.tenant for run in runs})
    return [e for t in tenants for e in store.list_active(shard_of(t), tenant=t, limit=100, after=None)]


def _written_before_the_index(index: int) -> Operation:
    """The run as a release before the index of active work wrote it: active, but not listed."""

    def operation(store: RunStore, runs: list[Run]) -> Any:
        key = runs[index].key
        if isinstance(store, InMemoryRunStore):
            store.listed.pop(key)
        else:
            assert isinstance(store, DynamoDBRunStore)
            store.client.update_item(TableName=TABLE, Key={"pk": {"S": run_pk(key)}, "sk": {"S": RUN_SK}},
                                     UpdateExpression=f"REMOVE {ACTIVE_PK}, {ACTIVE_SK}")  # fmt: skip
        assert listed(store, runs) == []

    return operation


def _then(*operations: Operation) -> Setup:
    def setup(store: RunStore, runs: list[Run]) -> None:
        for operation in operations:
            operation(store, runs)

    return setup


TENANT_LIMIT = BudgetLimits(tenant_daily_usd=Decimal("0.08"))
GLOBAL_LIMIT = BudgetLimits(global_daily_usd=Decimal("0.08"))
BOTH_LIMITS = BudgetLimits(tenant_daily_usd=Decimal("0.08"), global_daily_usd=Decimal("0.08"))
# (name, runs, setup, operation): runs[0] is the run under test, runs[1] another run of the same tenant
SCENARIOS: list[tuple[str, list[Run], Setup, Operation]] = [
    ("a reservation within every budget", [new_run("r0")], _then(), _reserve(0, held(), BOTH_LIMITS)),
    (
        "the tenant's day is full",
        [new_run("r0"), new_run("r1")],
        _then(_reserve(1, held(amount="0.05"), BudgetLimits())),
        _reserve(0, held(amount="0.05"), TENANT_LIMIT),
    ),
    (
        "the global day is full (another tenant spent it)",
        [new_run("r0"), new_run("r1", tenant="globex")],
        _then(_reserve(1, held(amount="0.05"), BudgetLimits())),
        _reserve(0, held(amount="0.05"), GLOBAL_LIMIT),
    ),
    (
        "both days are full: the tenant's budget is named",
        [new_run("r0"), new_run("r1")],
        _then(_reserve(1, held(amount="0.05"), BudgetLimits())),
        _reserve(0, held(amount="0.05"), BOTH_LIMITS),
    ),
    ("one call larger than the whole budget", [new_run("r0")], _then(), _reserve(0, held(amount="0.09"), TENANT_LIMIT)),
    (
        "the run's max_usd",
        [new_run("r0", max_usd=0.02)],
        _then(_reserve(0, held(amount="0.01"), BudgetLimits()), _settle(0)),
        _reserve(0, held(step=1, amount="0.015"), BudgetLimits()),
    ),
    (
        "a duplicate invocation shares the reservation made first",
        [new_run("r0")],
        _then(_reserve(0, held(amount="0.01"), BudgetLimits())),
        _reserve(0, held(amount="0.02"), BudgetLimits()),
    ),
    (
        "a move to a fallback, applied twice, charges the difference once",
        [new_run("r0")],
        _then(
            _reserve(0, held(amount="0.05"), TENANT_LIMIT),
            _reserve(0, held(amount="0.01", model="claude-sonnet-5-5"), TENANT_LIMIT, replacing=held(amount="0.05")),
        ),
        _reserve(0, held(amount="0.01", model="claude-sonnet-5-5"), TENANT_LIMIT, replacing=held(amount="0.05")),
    ),
    (
        "a reservation on an ended run",
        [new_run("r0")],
        _then(_end(0, RunStatus.CANCELLED)),
        _reserve(0, held(), BudgetLimits()),
    ),
    (
        "a settlement against the reservation",
        [new_run("r0")],
        _then(_reserve(0, held(), BudgetLimits())),
        _settle(0),
    ),
    (
        "a settlement that ends the run",
        [new_run("r0")],
        _then(_reserve(0, held(), BudgetLimits())),
        _settle(0, status=RunStatus.FAILED),
    ),
    ("a settlement saved before", [new_run("r0")], _then(_settle(0)), _settle(0)),
    ("a settlement on a cancelled run", [new_run("r0")], _then(_end(0, RunStatus.CANCELLED)), _settle(0)),
    (
        "a call billed after its run was cancelled, settled late",
        [new_run("r0")],
        _then(_reserve(0, held(), BudgetLimits()), _end(0, RunStatus.CANCELLED, release=False)),
        lambda store, runs: ledger.settle_late(store, runs[0].key, record(runs[0])),
    ),
    (
        "the end of a run frees its reservation",
        [new_run("r0")],
        _then(_reserve(0, held(), BudgetLimits())),
        _end(0, RunStatus.SUCCEEDED),
    ),
    ("the end of an ended run", [new_run("r0")], _then(_end(0, RunStatus.CANCELLED)), _end(0, RunStatus.SUCCEEDED)),
    (
        "the delayed release of a cancelled run's reservation",
        [new_run("r0")],
        _then(_reserve(0, held(), BudgetLimits()), _end(0, RunStatus.CANCELLED, release=False)),
        lambda store, runs: ledger.release(store, runs[0].key, 0),
    ),
    ("a run of another tenant stays listed", [new_run("r0"), new_run("r1", tenant="globex")], _then(),
     _end(0, RunStatus.CANCELLED)),
    ("a run written before the index is listed from its next reservation", [new_run("r0")],
     _then(_written_before_the_index(0)), _reserve(0, held(), BudgetLimits())),
    ("a run written before the index ends unlisted", [new_run("r0")], _then(_written_before_the_index(0)),
     _end(0, RunStatus.FAILED)),
    ("an end over a run whose step settled since it was read", [new_run("r0")],
     _then(_reserve(0, held(), BudgetLimits())), _end_over_a_stale_read(0, _settle(0))),
    ("an end over a run that reserved since it was read", [new_run("r0")], _then(),
     _end_over_a_stale_read(0, _reserve(0, held(), BudgetLimits()))),
    ("an end over a run as it was read", [new_run("r0")], _then(_reserve(0, held(), BudgetLimits())),
     _end_over_a_stale_read(0, _then())),
]  # fmt: skip


@pytest.mark.parametrize(("name", "runs", "setup", "operation"), SCENARIOS, ids=[s[0] for s in SCENARIOS])
def test_both_stores_apply_the_ledger_alike(
    aws: Aws, name: str, runs: list[Run], setup: Setup, operation: Operation
) -> None:
    # Given the same state in DynamoDB (moto) and in memory
    stores: list[RunStore] = [DynamoDBRunStore(TABLE, boto3.client("dynamodb")), InMemoryRunStore()]
    results = []
    for store in stores:
        for run in runs:
            store.create_run(run)
        setup(store, runs)
        # When the same ledger operation is applied to each
        result = outcome(lambda s: operation(s, runs), store)
        after = [store.get_run(run.key) for run in runs]
        results.append((result, after, counters_of(store, aws, runs), listed(store, runs)))
    # Then they agree on what happened, on the runs, on every counter and on what the index lists
    (dynamodb, memory) = results
    assert dynamodb[0] == memory[0], name
    assert dynamodb[1] == memory[1], name
    assert dynamodb[2] == memory[2], name
    assert dynamodb[3] == memory[3], name
    # And the index lists exactly the runs the rule says are active (a run an earlier release wrote is listed from
    # its next write that keeps it active)
    runs_after = [run for run in memory[1] if run is not None]
    wanted = sorted(found.key for run in runs_after if (found := listing(run)) is not None)
    assert [entry.key for entry in memory[3]] == wanted, name
    assert all(entry.status is next(r for r in runs_after if r.run_id == entry.run_id).status for entry in memory[3])


def test_the_budget_refusals_name_the_budget_its_limit_and_what_is_committed(aws: Aws) -> None:
    # The same refusal from both stores (above); here, what it says
    store = DynamoDBRunStore(TABLE, boto3.client("dynamodb"))
    for run in (new_run("r0"), new_run("r1")):
        store.create_run(run)
    ledger.reserve(store, new_run("r1"), held(amount="0.05"), BudgetLimits(), now=NOW)
    with pytest.raises(Exception) as refused:
        ledger.reserve(store, new_run("r0"), held(amount="0.05"), TENANT_LIMIT, now=NOW)
    assert getattr(refused.value, "code", None) == "TENANT_DAILY_BUDGET"
    assert str(refused.value) == (
        "tenant acme daily budget $0.08 for 2026-11-21: $0.05 spent or reserved, the next call may cost up to $0.05"
    )


LEASE = Lease(day=DAY, usd=Decimal("0.20"), tenant_limit=Decimal("0.08"))
RUN_STATES: dict[str, Callable[[Run], Run]] = {
    "queued": lambda run: run,
    "running, holding for step 1": lambda run: run.model_copy(
        update={
            "status": RunStatus.RUNNING,
            "completed_steps": 1,
            "reservation": held(step=1),
            "cost_usd": Decimal("0.3"),
        }
    ),
    "cancelled, still holding for step 0": lambda run: run.model_copy(
        update={"status": RunStatus.CANCELLED, "reservation": held(step=0)}
    ),
    "running, leased": lambda run: run.model_copy(update={"status": RunStatus.RUNNING, "lease": LEASE}),
    "running, holding for step 0 under the lease": lambda run: run.model_copy(
        update={"status": RunStatus.RUNNING, "lease": LEASE.model_copy(update={"held": held(step=0)})}
    ),
}
CONDITIONS: list[Condition] = [
    AtStep(0),
    AtStep(1),
    IsActive(),
    HasEnded(),
    Holds(held(step=1)),
    Holds(held(step=1, amount="0.06")),
    Holds(held(step=0)),
    HoldsNothing(),
    HoldsNothingFor(0),
    HoldsNothingFor(1),
    CostAtMost(Decimal("0.3")),
    CostAtMost(Decimal("0.29")),
    LeaseIs(None),
    LeaseIs(LEASE),
    LeaseIs(LEASE.model_copy(update={"held": held(step=0)})),
    LeaseIs(LEASE.model_copy(update={"usd": Decimal("0.2")})),  # the same amount written otherwise: not as stored
]


def test_every_condition_means_the_same_in_both_stores(aws: Aws) -> None:
    # Given runs in several states, stored in both stores
    dynamodb, memory = DynamoDBRunStore(TABLE, boto3.client("dynamodb")), InMemoryRunStore()
    disagreements = []
    for number, (state, make) in enumerate(RUN_STATES.items()):
        run = make(new_run(f"run_state_{number}"))
        for store in (dynamodb, memory):
            store.create_run(run)
        for condition in CONDITIONS:
            # When a plan guarded by just that condition (changing only updated_at) is applied to each
            plan = Plan(run=RunChange(run.key, (condition,), updated_at=NOW))
            accepted = [store.apply(plan) is None for store in (dynamodb, memory)]
            # Then DynamoDB's rendering and the condition's own ``holds`` agree
            if accepted[0] != accepted[1] or accepted[1] != condition.holds(run):
                disagreements.append((state, condition, accepted))
    assert disagreements == []
    # And a run that does not exist fails every condition in both
    missing = RunKey("acme", "run_missing")
    for condition in CONDITIONS:
        plan = Plan(run=RunChange(missing, (condition,), updated_at=NOW))
        assert dynamodb.apply(plan) is plan.run and memory.apply(plan) is plan.run


def test_both_stores_keep_the_result_an_ended_turn_gave_a_call_and_drop_what_it_reports_later(aws: Aws) -> None:
    # Given a run whose last step asked for three calls: one answered, one with side effects started, one not started
    calls = [{"type": "tool_use", "id": f"t{n}", "name": "calculator", "input": {}} for n in range(3)]
    results = []
    for store in (DynamoDBRunStore(TABLE, boto3.client("dynamodb")), InMemoryRunStore()):
        run = new_run("r0")
        store.create_run(run)
        ledger.reserve(store, run, held(), BudgetLimits(), now=NOW)
        reserved = store.get_run(run.key)
        assert reserved is not None
        ledger.settle(store, reserved, record(run).model_copy(update={"content": calls}), None)
        ref = StepRef(run.key, 0)
        store.save_tool_result(ref, ToolOutcome(tool_use_id="t0", name="calculator", content="2"))
        store.claim_tool(ref, ToolOutcome(tool_use_id="t1", name="calculator", content="?", is_error=True, final=False))
        # When the run is cancelled (its calls settled first), and then each call reports its result
        core.lifecycle(store, RecordingQueue()).cancel(run.key, RecordingWorkflow())
        late = [store.save_tool_result(ref, ToolOutcome(tool_use_id=f"t{n}", name="calculator", content="late"))
                for n in range(3)]  # fmt: skip
        results.append((store.load_history(run.key).tool_results, late))
    # Then both stores keep the result that landed first, the cancel's for the others, and drop the late ones
    (dynamodb, memory) = results
    assert dynamodb == memory
    kept = memory[0]
    assert [kept[(0, f"t{n}")].error_kind for n in range(3)] == [None, ToolError.UNKNOWN_OUTCOME, ToolError.RUN_ENDED]
    assert kept[(0, "t2")].content.startswith("the run was cancelled before this call returned")
    assert memory[1] == [kept[(0, f"t{n}")] for n in range(3)]
