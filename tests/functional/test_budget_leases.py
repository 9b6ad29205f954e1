"""Budget leases on the DynamoDB adapter (moto), in the three cases where the sharded counters that were backed out
(branch hotitems-wip) could overspend a daily budget:

1. deploy day: what the previous version committed on the unsharded day counter must bind the new version;
2. a limit set or lowered mid-day: what was spent and leased before it must count against it;
3. a rollout mixing versions: each version's reservation is freed where it was held, and committed never falls
   below what was spent.

The previous version's writes are made here as it made them (``previous_*``): reservations as plain attributes of
the run item (with their JSON) and ``committed_usd``/``spent_usd``/``steps`` ADDed to the unsharded day counters.
"""

from __future__ import annotations

from decimal import Decimal

import boto3
import pytest

from functions.adapters.dynamodb_store import DynamoDBRunStore, day_sk, run_pk, spend_pk
from functions.adapters.serde import to_item
from functions.agent import ledger
from functions.agent.errors import BudgetRefusedError
from functions.agent.ledger import BudgetLimits
from functions.agent.models import Budget, Reservation, Run, RunError, RunStatus, StepDecision, StepRecord, Usage
from functions.agent.pricing import CallPrice
from tests.functional.conftest import TABLE, Aws

TENANT = "acme"
DAY = "2026-11-21"
NOW = f"{DAY}T12:00:00.000+00:00"
MODEL = "claude-haiku-4-5"
CALL = CallPrice(prompt_usd=Decimal("0.001"), output_usd=Decimal("0.000005"))  # 1,000 tokens in, haiku out
FULL_CALL = CALL.worst_case(1024)  # $0.00612


@pytest.fixture
def store(aws: Aws) -> DynamoDBRunStore:
    return DynamoDBRunStore(TABLE, boto3.client("dynamodb"))


def new_run(store: DynamoDBRunStore, run_id: str, *, reservation: Reservation | None = None) -> Run:
    run = Run(
        run_id=run_id, tenant=TENANT, status=RunStatus.RUNNING, input="task", model=MODEL, tools=["calculator"],
        budget=Budget(), reservation=reservation, created_at=NOW, updated_at=NOW,
    )  # fmt: skip
    store.create_run(run)
    return run


def read(store: DynamoDBRunStore, run: Run) -> Run:
    found = store.get_run(run.key)
    assert found is not None
    return found


def wanted(step: int = 0) -> Reservation:
    return Reservation(step=step, amount_usd=Decimal(0), day=DAY, model=MODEL)


def call(store: DynamoDBRunStore, run: Run, limits: BudgetLimits) -> Run:
    """Reserve the run's next call as the step does (sized, from its lease)."""
    reserved, _ = ledger.reserve_call(store, read(store, run), wanted(run.completed_steps), limits, CALL,
                                      prompt_tokens=1000, max_tokens=1024, now=NOW)  # fmt: skip
    return reserved


def take_lease(store: DynamoDBRunStore, run: Run, limits: BudgetLimits, usd: str) -> Run:
    """Reserve a full call of step 0 under a lease of ``usd``."""
    sized = wanted().model_copy(update={"amount_usd": FULL_CALL})
    return ledger.reserve_run(store, run, sized, limits, now=NOW, lease_usd=Decimal(usd))[0]


def record(run: Run, cost: str, *, ends: bool = False) -> StepRecord:
    return StepRecord(
        run_id=run.run_id, step=run.completed_steps, model=MODEL, provider="scripted",
        stop_reason="end_turn" if ends else "tool_use", content=[{"type": "text", "text": "x"}],
        usage=Usage(input_tokens=1000, output_tokens=10), cost_usd=Decimal(cost),
        decision=StepDecision.FINISH if ends else StepDecision.TOOLS, status=RunStatus.SUCCEEDED if ends else None,
        started_at=NOW, finished_at=NOW, duration_ms=0,
    )  # fmt: skip


def settle(store: DynamoDBRunStore, run: Run, cost: str, *, ends: bool = False) -> Run:
    current = read(store, run)
    ledger.settle(store, current, record(current, cost, ends=ends), "done" if ends else None)
    return read(store, run)


def committed(store: DynamoDBRunStore) -> tuple[Decimal, Decimal]:
    return store.committed(TENANT, DAY)


def spent(store: DynamoDBRunStore) -> tuple[Decimal, Decimal]:
    """The day's spend as its readers see it: every shard and the unsharded item, the tenant's and everyone's."""
    return store.day_stats(TENANT, DAY).get("spent_usd", Decimal(0)), store.day_stats(None, DAY)["spent_usd"]


def previous_counters(aws: Aws, *, committed_usd: str, spent_usd: str = "0", steps: int = 0) -> None:
    """What the previous version's reservations and settlements leave on the unsharded day counters."""
    for tenant in (TENANT, None):
        aws.dynamodb.update_item(
            TableName=TABLE, Key=to_item({"pk": spend_pk(tenant), "sk": day_sk(DAY)}),
            UpdateExpression="ADD committed_usd :c, spent_usd :s, steps :n",
            ExpressionAttributeValues=to_item({":c": Decimal(committed_usd), ":s": Decimal(spent_usd), ":n": steps}),
        )  # fmt: skip


def previous_settles_without_its_reservation(aws: Aws, run: Run, cost: str) -> None:
    """The previous version settling a step it sees no reservation for (the call was reserved under a lease, which
    it cannot read): a plain charge on the unsharded counters, the run's steps and cost; the lease left as it is."""
    aws.dynamodb.update_item(
        TableName=TABLE, Key=to_item({"pk": run_pk(run.key), "sk": "RUN"}),
        UpdateExpression="SET steps = steps + :one ADD cost_usd :c",
        ConditionExpression="attribute_not_exists(reserved_step)",
        ExpressionAttributeValues=to_item({":one": 1, ":c": Decimal(cost)}),
    )  # fmt: skip
    previous_counters(aws, committed_usd=cost, spent_usd=cost, steps=1)


def previous_ends(aws: Aws, run: Run) -> None:
    """The previous version ending a run holding no reservation of its own: it never touches the lease."""
    aws.dynamodb.update_item(
        TableName=TABLE, Key=to_item({"pk": run_pk(run.key), "sk": "RUN"}),
        UpdateExpression="SET #s = :cancelled", ExpressionAttributeNames={"#s": "status"},
        ExpressionAttributeValues=to_item({":cancelled": "CANCELLED"}),
    )  # fmt: skip


# ------------------------------------------------------------------------------------- 1. deploy day


def test_on_deploy_day_what_the_previous_version_committed_binds_the_new_one(store: DynamoDBRunStore, aws: Aws) -> None:
    # Given a tenant budget of $0.10 of which the previous version committed $0.0995 today (unsharded, as it wrote)
    previous_counters(aws, committed_usd="0.0995", spent_usd="0.0995", steps=10)
    limits = BudgetLimits(tenant_daily_usd=Decimal("0.10"))
    run = new_run(store, "run_deploy")
    # When the new version's run asks for a call (the smallest is $0.00132)
    with pytest.raises(BudgetRefusedError) as refused:
        call(store, run, limits)
    # Then the tenant's budget refuses it, and nothing more is committed
    assert refused.value.code == "TENANT_DAILY_BUDGET"
    assert "tenant acme daily budget $0.1 for 2026-11-21: $0.0995 spent or reserved" in str(refused.value)
    assert committed(store) == (Decimal("0.0995"), Decimal("0.0995"))


def test_on_deploy_day_the_day_adds_up_both_versions_writes(store: DynamoDBRunStore, aws: Aws) -> None:
    # Given $0.50 in 10 steps spent by the previous version today
    previous_counters(aws, committed_usd="0.5", spent_usd="0.5", steps=10)
    limits = BudgetLimits(tenant_daily_usd=Decimal(1), global_daily_usd=Decimal(2))
    # When the new version runs a run of two calls, $0.004 and $0.003
    run = call(store, new_run(store, "run_both"), limits)
    run = call(store, settle(store, run, "0.004"), limits)
    settle(store, run, "0.003", ends=True)
    # Then committed is exactly what was spent, and every reader adds up both versions' statistics
    assert committed(store) == (Decimal("0.507"), Decimal("0.507"))
    assert spent(store) == (Decimal("0.507"), Decimal("0.507"))
    (day,) = [row for row in store.spend_rows(TENANT, DAY, DAY) if row.model is None and row.run_id is None]
    assert (day.cost_usd, day.steps) == (Decimal("0.507"), 12)


# ------------------------------------------------------------------------------------- 2. a limit set mid-day


def test_a_limit_set_mid_day_counts_what_was_spent_and_leased_before_it(store: DynamoDBRunStore) -> None:
    # Given a tenant that spent $0.10 today with no limit set, one of its runs still holding a lease
    unlimited = BudgetLimits()
    ongoing = settle(store, take_lease(store, new_run(store, "run_ongoing"), unlimited, "0.05"), "0.0005")
    assert ongoing.lease is not None and ongoing.lease.usd > FULL_CALL  # covers its next call
    finished = call(store, new_run(store, "run_done"), unlimited)
    settle(store, finished, "0.0995", ends=True)
    before = committed(store)
    # When a limit of $0.01 is set: a new run asks for a call, and the run holding a lease asks for its next one
    limited = BudgetLimits(tenant_daily_usd=Decimal("0.01"))
    refusals = []
    for run in (new_run(store, "run_new"), ongoing):
        with pytest.raises(BudgetRefusedError) as refused:
            call(store, run, limited)
        refusals.append(refused.value.code)
    # Then both are refused (the lease was taken without the limit: it is taken anew under it), nothing is spent
    assert refusals == ["TENANT_DAILY_BUDGET", "TENANT_DAILY_BUDGET"]
    assert committed(store) == before and spent(store)[0] == Decimal("0.1")


def test_a_lease_taken_under_a_higher_limit_is_checked_again_when_it_is_lowered(store: DynamoDBRunStore) -> None:
    # Given a run holding a $0.50 lease taken under a $1 limit, $0.01 of it spent
    run = new_run(store, "run_lowered")
    high = BudgetLimits(tenant_daily_usd=Decimal(1))
    run = take_lease(store, run, high, "0.5")
    run = settle(store, run, "0.01")
    assert committed(store)[0] == Decimal("0.5")
    # When the limit is lowered to $0.011 and the run asks for its next call ($0.00612 would fit in its lease)
    low = BudgetLimits(tenant_daily_usd=Decimal("0.011"))
    with pytest.raises(BudgetRefusedError) as refused:
        call(store, run, low)
    # Then it is refused: $0.01 spent and a call of at least $0.00132 do not fit in $0.011 - and the lease stays
    # counted (given back when the run ends)
    assert refused.value.code == "TENANT_DAILY_BUDGET"
    assert committed(store)[0] == Decimal("0.5")
    ledger.end_run(store, run.key, RunStatus.BUDGET_EXCEEDED, now=NOW, error=RunError(code="X", message="x"))
    assert committed(store) == (Decimal("0.01"), Decimal("0.01"))


def test_under_a_lowered_limit_a_lease_shrinks_to_what_is_left(store: DynamoDBRunStore) -> None:
    # Given a run holding a $0.50 lease under a $1 limit, $0.01 of it spent; the limit lowered to $0.02
    run = new_run(store, "run_shrunk")
    high = BudgetLimits(tenant_daily_usd=Decimal(1))
    run = take_lease(store, run, high, "0.5")
    run = settle(store, run, "0.01")
    # When it asks for its next call
    run = call(store, run, BudgetLimits(tenant_daily_usd=Decimal("0.02")))
    # Then the call fits in what the limit leaves, and the day's counter ends at most at the new limit
    assert run.lease is not None and run.held is not None and run.held.amount_usd <= Decimal("0.01")
    assert committed(store)[0] <= Decimal("0.02")


# ------------------------------------------------------------------------------------- 3. a rollout mixing versions


def test_the_previous_versions_reservation_is_settled_and_freed_on_the_counter_that_holds_it(
    store: DynamoDBRunStore, aws: Aws
) -> None:
    # Given a run holding a $0.05 reservation the previous version made for step 0 (on the unsharded counters)
    run = new_run(store, "run_rollout", reservation=Reservation(step=0, amount_usd=Decimal("0.05"), day=DAY,
                                                                 model=MODEL))  # fmt: skip
    previous_counters(aws, committed_usd="0.05")
    # When the new version settles its call ($0.01), then the previous version reserves $0.05 for step 1 and the
    # new version ends the run, freeing it
    run = settle(store, run, "0.01")
    assert committed(store) == (Decimal("0.01"), Decimal("0.01"))
    aws.dynamodb.delete_item(TableName=TABLE, Key=to_item({"pk": run_pk(run.key), "sk": "RUN"}))
    store.create_run(run.model_copy(update={"reservation": Reservation(step=1, amount_usd=Decimal("0.05"), day=DAY,
                                                                       model=MODEL)}))  # fmt: skip
    previous_counters(aws, committed_usd="0.05")
    assert ledger.end_run(store, run.key, RunStatus.CANCELLED, now=NOW)
    # Then committed is exactly what was spent: each reservation was freed where it was held
    assert committed(store) == (Decimal("0.01"), Decimal("0.01"))
    assert spent(store) == (Decimal("0.01"), Decimal("0.01"))


def test_a_call_reserved_under_a_lease_and_settled_by_the_previous_version_is_never_undercounted(
    store: DynamoDBRunStore, aws: Aws
) -> None:
    # Given a run whose step 0 the new version reserved under a lease
    limits = BudgetLimits(tenant_daily_usd=Decimal(1))
    run = call(store, new_run(store, "run_mixed"), limits)
    lease = run.lease
    assert lease is not None and run.held is not None
    # When the previous version settles that step (it sees no reservation: a plain charge of $0.004)
    previous_settles_without_its_reservation(aws, run, "0.004")
    # Then the day counts the charge and the whole lease: never less than what was spent and is held
    assert committed(store)[0] == lease.usd + Decimal("0.004")
    # And the new version's next call reserves from the lease (its stale call is dropped), and its end gives it back
    run = call(store, read(store, run), limits)
    assert run.held is not None and run.held.step == 1 and committed(store)[0] == lease.usd + Decimal("0.004")
    settle(store, run, "0.002", ends=True)
    assert committed(store) == (Decimal("0.006"), Decimal("0.006")) == spent(store)


def test_a_run_the_previous_version_ended_keeps_its_lease_counted(store: DynamoDBRunStore, aws: Aws) -> None:
    # Given a run holding a lease, $0.002 of it spent
    run = settle(store, call(store, new_run(store, "run_stranded"), BudgetLimits()), "0.002")
    assert run.lease is not None
    # When the previous version ends it (it knows nothing of leases)
    previous_ends(aws, run)
    # Then the lease stays counted for the rest of the day: under-use, never overspend
    assert committed(store)[0] == Decimal("0.002") + run.lease.usd
    assert read(store, run).lease == run.lease


# ------------------------------------------------------------------------------------------ sessions


def session_run(turns: list[int], steps: int) -> Run:
    from functions.agent.models import Turn

    return Run(run_id="sesn_1", tenant=TENANT, status=RunStatus.RUNNING, input="x", model=MODEL, tools=[],
               budget=Budget(), completed_steps=steps, session={"rev": len(turns), "agent_id": "agent_1"},
               turns=[Turn(first_step=first, started_at=NOW) for first in turns], created_at=NOW,
               updated_at=NOW)  # fmt: skip


def test_a_sessions_new_turn_leases_one_call_as_a_new_run_does(store: DynamoDBRunStore) -> None:
    # Given a session that took 20 steps over two turns, starting its third
    run = session_run([0, 12, 20], steps=20)
    store.create_run(run)
    wanted = Reservation(step=20, amount_usd=Decimal(0), day=DAY, model=MODEL)
    # When its first call is reserved
    reserved, held = ledger.reserve_call(store, run, wanted, BudgetLimits(tenant_daily_usd=Decimal(1)), CALL,
                                         prompt_tokens=200, max_tokens=1024, now=NOW)  # fmt: skip
    # Then the lease is that one call: the earlier turns' steps do not size it
    assert reserved.lease is not None and reserved.lease.usd == held.amount_usd
    assert store.committed(TENANT, DAY)[0] == held.amount_usd


def test_archiving_a_session_never_writes_back_a_lease_given_back_meanwhile(store: DynamoDBRunStore) -> None:
    from functions.adapters.dynamodb_sessions import DynamoDBSessionStore
    from functions.agent.sessions import _revised

    sessions = DynamoDBSessionStore(TABLE, boto3.client("dynamodb"))
    run = session_run([0], steps=0)
    sessions.create_session(run, [])
    # Given a turn interrupted while its call, reserved under a lease, is in flight
    wanted = Reservation(step=0, amount_usd=Decimal(0), day=DAY, model=MODEL)
    limits = BudgetLimits(tenant_daily_usd=Decimal(1))
    ledger.reserve_call(store, run, wanted, limits, CALL, prompt_tokens=200, max_tokens=1024, now=NOW)
    assert ledger.end_run(store, run.key, RunStatus.CANCELLED, now=NOW, release=False, turn=1)
    read = store.get_run(run.key)
    assert read is not None and read.held is not None
    # When the delayed release gives the lease back between an archive's read and its write
    archived = _revised(read, {"archived_at": NOW}, NOW)
    assert ledger.release(store, run.key, 0)
    # Then the archive's write is refused (the lease is not the one it read), and nothing is given back twice
    assert not sessions.save_session(archived, read=read, events=[], results=[])
    after = store.get_run(run.key)
    assert after is not None and after.lease is None and not (after.session or {}).get("archived_at")
    assert not ledger.release(store, run.key, 0)
    assert store.committed(TENANT, DAY) == (Decimal(0), Decimal(0))
