"""The DynamoDB adapter against moto: keys, the step transaction and conditional writes."""

from __future__ import annotations

from decimal import Decimal

import boto3
import pytest

from functions.adapters.dynamodb_store import DynamoDBRunStore, run_pk
from functions.agent import ledger
from functions.agent.errors import RunAlreadyExistsError, RunNotActiveError, RunNotFoundError, StepAlreadySavedError
from functions.agent.models import (
    AgentConfig,
    Budget,
    CustomTool,
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
    Turn,
    Usage,
)
from tests.fakes.clock import FixedClock
from tests.functional.conftest import TABLE, Aws

NOW = "2026-11-21T12:00:03.000+00:00"
KEY = RunKey("acme", "run_00000000000000000000000001")


def make_run(run_id: str = "run_00000000000000000000000001", tenant: str = "acme") -> Run:
    return Run(
        run_id=run_id,
        tenant=tenant,
        status=RunStatus.QUEUED,
        input="task",
        model="claude-haiku-4-5",
        tools=["calculator"],
        budget=Budget(max_steps=3, max_usd=0.5),
        metadata={"team": "search", "nested": {"n": 1.5}},
        created_at="2026-11-21T12:00:00.000+00:00",
        updated_at="2026-11-21T12:00:00.000+00:00",
    )


def make_step(run: Run, n: int, cost: str = "0.0012345") -> StepRecord:
    return StepRecord(
        run_id=run.run_id,
        step=n,
        model="claude-haiku-4-5",
        provider="scripted",
        stop_reason="tool_use",
        content=[{"type": "tool_use", "id": f"t{n}", "name": "calculator", "input": {"expression": "1+1"}}],
        usage=Usage(input_tokens=100, output_tokens=10, cache_creation_input_tokens=5, cache_read_input_tokens=7),
        cost_usd=Decimal(cost),
        decision=StepDecision.TOOLS,
        started_at="2026-11-21T12:00:01.000+00:00",
        finished_at="2026-11-21T12:00:02.000+00:00",
        duration_ms=1000,
    )


@pytest.fixture
def store(aws: Aws) -> DynamoDBRunStore:
    return DynamoDBRunStore(TABLE, boto3.client("dynamodb"))


def test_run_round_trips_and_keys_are_tenant_scoped(store: DynamoDBRunStore, aws: Aws) -> None:
    run = make_run()
    store.create_run(run)
    assert store.get_run(KEY) == run
    assert store.get_run(RunKey("other", run.run_id)) is None
    item = aws.dynamodb.get_item(TableName=TABLE, Key={"pk": {"S": run_pk(KEY)}, "sk": {"S": "RUN"}})
    assert item["Item"]["pk"]["S"] == f"T#acme#R#{run.run_id}"
    with pytest.raises(RunAlreadyExistsError):
        store.create_run(run)


def test_save_step_adds_usage_and_exact_cost_in_one_transaction(store: DynamoDBRunStore) -> None:
    run = make_run()
    store.create_run(run)
    ledger.settle(store, run, make_step(run, 0), None)
    ledger.settle(store, run.model_copy(update={"completed_steps": 1}), make_step(run, 1, "0.0000001"), "done")
    saved = store.get_run(KEY)
    assert saved is not None
    assert saved.completed_steps == 2 and saved.status is RunStatus.RUNNING and saved.output == "done"
    assert saved.usage == Usage(
        input_tokens=200, output_tokens=20, cache_creation_input_tokens=10, cache_read_input_tokens=14
    )
    assert saved.cost_usd == Decimal("0.0012346")
    history = store.load_history(KEY)
    assert [s.step for s in history.steps] == [0, 1]
    assert history.steps[0] == make_step(run, 0)


def test_a_duplicate_step_is_refused_and_charges_nothing(store: DynamoDBRunStore) -> None:
    run = make_run()
    store.create_run(run)
    ledger.settle(store, run, make_step(run, 0), None)
    with pytest.raises(StepAlreadySavedError):
        ledger.settle(store, run, make_step(run, 0), None)
    saved = store.get_run(KEY)
    assert saved is not None and saved.completed_steps == 1 and saved.cost_usd == Decimal("0.0012345")


def test_no_step_lands_on_a_finished_run(store: DynamoDBRunStore) -> None:
    run = make_run()
    store.create_run(run)
    cancelled = RunError(code="CANCELLED", message="x")
    assert ledger.end_run(store, KEY, RunStatus.CANCELLED, error=cancelled, now=NOW)
    with pytest.raises(RunNotActiveError):
        ledger.settle(store, run, make_step(run, 0), None)
    assert store.get_step(KEY, 0) is None
    assert not ledger.end_run(store, KEY, RunStatus.SUCCEEDED, now=NOW)
    final = store.get_run(KEY)
    assert (
        final is not None
        and final.status is RunStatus.CANCELLED
        and final.error == RunError(code="CANCELLED", message="x")
    )


def test_tool_result_is_stored_once(store: DynamoDBRunStore) -> None:
    run = make_run()
    store.create_run(run)
    ledger.settle(store, run, make_step(run, 0), None)
    ref = StepRef(KEY, 0)
    failed = ToolOutcome(
        tool_use_id="t0", name="calculator", content="no", is_error=True, error_kind=ToolError.REJECTED
    )
    first = store.save_tool_result(ref, failed)
    second = store.save_tool_result(ref, ToolOutcome(tool_use_id="t0", name="calculator", content="3"))
    assert first == second == failed  # stored once, its kind of error included
    loaded_run, record, outcome = store.load_tool_context(ref, "t0")
    assert loaded_run == store.get_run(KEY) and record is not None and outcome == first


def test_history_of_a_long_run_is_read_across_query_pages(store: DynamoDBRunStore) -> None:
    run = make_run().model_copy(update={"budget": Budget(max_steps=100)})
    store.create_run(run)
    big = "x" * 60_000  # ~60 KB per step: 40 steps are several 1 MB query pages
    for n in range(40):
        record = make_step(run, n).model_copy(update={"content": [{"type": "text", "text": big}]})
        ledger.settle(store, run.model_copy(update={"completed_steps": n}), record, None)
    assert len(store.load_history(KEY).steps) == 40


def test_missing_run_history_raises(store: DynamoDBRunStore) -> None:
    with pytest.raises(RunNotFoundError):
        store.load_history(RunKey("acme", "run_missing"))


def test_a_transaction_conflict_is_retried_in_place_and_the_step_is_saved(
    store: DynamoDBRunStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a run item that a concurrent writer holds for the first two attempts
    from botocore.exceptions import ClientError

    run = make_run()
    store.create_run(run)
    real = store.client.transact_write_items
    attempts: list[int] = []

    def contended(**kwargs: object) -> object:
        attempts.append(1)
        if len(attempts) <= 2:
            error = {
                "Error": {"Code": "TransactionCanceledException", "Message": "conflict"},
                "CancellationReasons": [{"Code": "None"}, {"Code": "TransactionConflict"}],
            }
            raise ClientError(error, "TransactWriteItems")  # type: ignore[arg-type]
        return real(**kwargs)

    monkeypatch.setattr(store.client, "transact_write_items", contended)
    # When the step is saved
    ledger.settle(store, run, make_step(run, 0), None)
    # Then it landed on the third attempt, charged once
    saved = store.get_run(KEY)
    assert len(attempts) == 3
    assert saved is not None and saved.completed_steps == 1 and saved.cost_usd == Decimal("0.0012345")


def test_every_run_field_survives_the_round_trip(store: DynamoDBRunStore) -> None:
    # Given a run with every field set away from its default (a new field must be added here too)
    full = make_run().model_copy(
        update={
            "status": RunStatus.RUNNING,
            "max_tokens_per_call": 2048,
            "completed_steps": 3,
            "usage": Usage(
                input_tokens=5,
                output_tokens=6,
                cache_creation_input_tokens=7,
                cache_read_input_tokens=8,
                cache_creation_1h_input_tokens=2,
            ),
            "cost_usd": Decimal("0.000123"),
            "output": "answer ✓",
            "error": RunError(code="X", message="why"),
            "request_hash": "abc",
            "reservation": Reservation(
                step=3,
                amount_usd=Decimal("0.0042"),
                day="2026-11-21",
                model="claude-sonnet-4-5",
                cheap=True,
                reason="r",
            ),
            "lease": Lease(
                day="2026-11-21",
                usd=Decimal("0.0500"),
                tenant_limit=Decimal("1.5"),
                global_limit=Decimal(20),
                held=Reservation(step=2, amount_usd=Decimal("0.004"), day="2026-11-21", model="claude-haiku-4-5"),
            ),
            "cache_responses": True,
            "fallbacks": ["claude-haiku-4-5"],
            "agent": AgentConfig(
                system="be brief",
                custom_tools=[CustomTool(name="lookup", description="d", input_schema={"type": "object"})],
                ask=["calculator"],
            ),
            "session": {"rev": 4, "title": "t", "approved": [{"id": "toolu_1", "name": "calculator", "step": 2}]},
            "turns": [
                Turn(
                    first_step=0,
                    started_at="2026-11-21T00:00:00.000+00:00",
                    tools=[{"id": "toolu_0", "name": "calculator", "step": 0}],
                    ended_status=RunStatus.IDLE,
                    ended_error=RunError(code="Y", message="w"),
                    ended_at="2026-11-21T00:00:01.000+00:00",
                ),
                Turn(first_step=2, started_at="2026-11-21T00:00:02.000+00:00"),
            ],
            "created_by": "0123456789ab",
        }
    )
    defaults = Run.model_fields
    unset = [
        name
        for name, info in defaults.items()
        if not info.is_required() and getattr(full, name) == info.get_default(call_default_factory=True)
    ]
    assert unset == [], f"set these in the test: {unset}"
    # When it is stored and read back
    store.create_run(full)
    # Then nothing was lost
    assert store.get_run(KEY) == full


def test_response_cache_items_expire_and_are_tenant_scoped(aws: Aws) -> None:
    from functions.adapters.dynamodb_response_cache import DynamoDBResponseCache
    from tests.fakes.model import text_response

    clock = FixedClock()
    cache = DynamoDBResponseCache(TABLE, boto3.client("dynamodb"), clock, ttl_seconds=60)
    response = text_response("cached ✓", usage=Usage(input_tokens=9, output_tokens=3))
    written_at = clock.current  # put reads the clock once
    cache.put("acme", "k1", response)
    assert cache.get("acme", "k1") == response
    assert cache.get("globex", "k1") is None
    item = aws.dynamodb.get_item(TableName=TABLE, Key={"pk": {"S": "T#acme#RC#k1"}, "sk": {"S": "RESPONSE"}})["Item"]
    assert int(item["expires_at"]["N"]) == int(written_at.timestamp()) + 60  # DynamoDB TTL attribute
    clock.current = clock.current.replace(year=clock.current.year + 1)  # long after the TTL
    assert cache.get("acme", "k1") is None


LEGACY_HELD = Reservation(step=0, amount_usd=Decimal("0.05"), day="2026-11-21", model="claude-haiku-4-5", reason="r")


def legacy_run(aws: Aws, held: Reservation) -> None:
    """A run in flight as an earlier version stored it: its reservation one JSON string attribute beside
    reserved_step, and the day counters holding it."""
    from functions.adapters.dynamodb_store import counter_key, run_to_item
    from functions.adapters.serde import to_item
    from functions.agent.ledger import Counter

    item = run_to_item(make_run().model_copy(update={"status": RunStatus.RUNNING}))
    item.update(to_item({"reserved_step": held.step, "reservation": held.model_dump_json()}))
    aws.dynamodb.put_item(TableName=TABLE, Item=item)
    for tenant in ("acme", None):
        aws.dynamodb.update_item(
            TableName=TABLE,
            Key=counter_key(Counter(tenant, held.day)),
            UpdateExpression="ADD committed_usd :a",
            ExpressionAttributeValues={":a": {"N": str(held.amount_usd)}},
        )


def test_a_run_written_with_the_old_reservation_format_keeps_its_reservation_across_the_upgrade(
    store: DynamoDBRunStore, aws: Aws
) -> None:
    # Given a run in flight that an earlier version stored
    held = LEGACY_HELD
    legacy_run(aws, held)
    # When it is read and its step settles
    run = store.get_run(KEY)
    assert run is not None and run.reservation == held
    ledger.settle(store, run, make_step(run, 0, "0.01"), None)
    # Then the step was charged against that reservation, which is gone in both formats
    after = store.get_run(KEY)
    raw = aws.dynamodb.get_item(TableName=TABLE, Key={"pk": {"S": run_pk(KEY)}, "sk": {"S": "RUN"}})["Item"]
    assert after is not None and after.reservation is None and after.completed_steps == 1
    assert "reservation" not in raw and "reserved_step" not in raw
    assert store.committed("acme", "2026-11-21") == (Decimal("0.01"), Decimal("0.01"))  # the hold became the cost


def test_a_legacy_reservation_moved_twice_by_duplicate_invocations_is_charged_once(
    store: DynamoDBRunStore, aws: Aws
) -> None:
    # Given a run in flight across the upgrade (its reservation in the old JSON format, held by the counters)
    from functions.adapters.serde import from_item
    from functions.agent.ledger import BudgetLimits

    first, moved = (
        LEGACY_HELD,
        LEGACY_HELD.model_copy(update={"amount_usd": Decimal("0.20"), "model": "claude-sonnet-5-5"}),
    )
    legacy_run(aws, first)
    stale = store.get_run(KEY)
    assert stale is not None
    # When two invocations that both read it move the reservation to a fallback
    results = [ledger.reserve(store, stale, moved, BudgetLimits(), replacing=first, now=NOW) for _ in range(2)]
    # Then the old reservation was freed and the moved one taken under a lease, once; both hold the moved one
    assert results == [moved, moved]
    assert store.committed("acme", "2026-11-21") == (Decimal("0.20"), Decimal("0.20"))
    # And the item carries it in the lease only: the previous version sees no reservation of its own to settle
    # against (it would charge its own way: see tests/functional/test_budget_leases.py)
    raw = from_item(aws.dynamodb.get_item(TableName=TABLE, Key={"pk": {"S": run_pk(KEY)}, "sk": {"S": "RUN"}})["Item"])
    assert "reservation" not in raw and "reserved_step" not in raw
    assert Lease.model_validate_json(raw["lease"]).held == moved
    # And the invocation still holding the old view cannot settle against the reservation it no longer holds
    with pytest.raises(RunNotActiveError):
        ledger.settle(store, stale, make_step(stale, 0, "0.01"), None)


def test_an_invalid_input_result_stored_before_the_upgrade_is_still_recognised(
    store: DynamoDBRunStore, aws: Aws
) -> None:
    from functions.adapters.dynamodb_store import tool_sk
    from functions.adapters.serde import to_item

    legacy = {"pk": run_pk(KEY), "sk": tool_sk(0, "t1"), "type": "tool", "step": 0, "tool_use_id": "t1"}
    legacy |= {"name": "calculator", "content": "invalid input for calculator: expression: Field required"}
    aws.dynamodb.put_item(TableName=TABLE, Item=to_item({**legacy, "is_error": True, "duration_ms": 1}))
    _, _, outcome = store.load_tool_context(StepRef(KEY, 0), "t1")
    assert outcome is not None and outcome.error_kind is ToolError.INVALID_INPUT


def test_a_reservation_the_previous_version_moved_during_a_rolling_deploy_is_read_as_moved(
    store: DynamoDBRunStore, aws: Aws
) -> None:
    # Given a reservation this version made, then moved by a function still on the previous version (it sets
    # only reserved_step and the JSON, under the condition reservation = the JSON it read)
    from functions.adapters.serde import to_item

    legacy_run(aws, LEGACY_HELD)
    moved = LEGACY_HELD.model_copy(update={"amount_usd": Decimal("0.20"), "model": "claude-sonnet-5-5"})
    aws.dynamodb.update_item(
        TableName=TABLE,
        Key={"pk": {"S": run_pk(KEY)}, "sk": {"S": "RUN"}},
        UpdateExpression="SET reserved_step = :s, reservation = :new",
        ConditionExpression="reservation = :old",
        ExpressionAttributeValues=to_item(
            {":s": 0, ":new": moved.model_dump_json(), ":old": LEGACY_HELD.model_dump_json()}
        ),
    )
    # When this version reads the run and settles its step
    current = store.get_run(KEY)
    assert current is not None and current.reservation == moved  # not the stale plain attributes
    ledger.settle(store, current, make_step(current, 0, "0.01"), None)
    # Then the moved reservation was settled, and nothing else is left held
    after = store.get_run(KEY)
    assert after is not None and after.reservation is None and after.completed_steps == 1


def test_a_reservation_the_previous_version_made_after_removing_one_is_read_from_its_json(
    store: DynamoDBRunStore, aws: Aws
) -> None:
    # Given the plain attributes of a released reservation left behind by the previous version (it removes
    # only reserved_step and the JSON), and a new reservation it then made for the next step
    from functions.adapters.serde import to_item

    store.create_run(make_run().model_copy(update={"status": RunStatus.RUNNING, "completed_steps": 1}))
    orphaned = to_item({"reserved_usd": Decimal("0.05"), "reserved_day": "2026-11-20", "reserved_model": "old"})
    nxt = LEGACY_HELD.model_copy(update={"step": 1, "amount_usd": Decimal("0.90"), "model": "claude-sonnet-5-5"})
    aws.dynamodb.update_item(
        TableName=TABLE,
        Key={"pk": {"S": run_pk(KEY)}, "sk": {"S": "RUN"}},
        UpdateExpression="SET reserved_usd = :u, reserved_day = :d, reserved_model = :m, reserved_step = :s, "
        "reservation = :j",
        ExpressionAttributeValues={
            ":u": orphaned["reserved_usd"],
            ":d": orphaned["reserved_day"],
            ":m": orphaned["reserved_model"],
            **to_item({":s": 1, ":j": nxt.model_dump_json()}),
        },
    )
    # Then this version reads the reservation the JSON holds, not a mix of the two
    current = store.get_run(KEY)
    assert current is not None and current.reservation == nxt


def test_a_settlement_planned_again_is_sent_with_its_own_idempotency_token(store: DynamoDBRunStore) -> None:
    # Given one step record settled under two different plans (the reservation it was read with moved)
    run = make_run()
    store.create_run(run)
    tokens: list[str] = []
    real = store.client.transact_write_items

    def recording(**kwargs: object) -> object:
        tokens.append(str(kwargs.get("ClientRequestToken")))
        return real(**kwargs)

    store.client.transact_write_items = recording  # type: ignore[method-assign]
    record = make_step(run, 0)
    held = run.model_copy(update={"reservation": LEGACY_HELD})
    store.apply(ledger.settle_plan(held, record, None, require_active=True))  # refused: nothing is held
    store.apply(ledger.settle_plan(run, record, None, require_active=True))
    # Then DynamoDB never takes the second for a repeat of the first (same record, different transaction)
    assert len(tokens) == 2 and tokens[0] != tokens[1]
