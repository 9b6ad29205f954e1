"""Hard budgets and exact accounting on the real DynamoDB adapter (moto).

moto does not serialise concurrent requests the way DynamoDB makes each conditional write and each
transaction atomic, so the concurrency test wraps the client so that each API call runs alone; the runs'
steps still interleave freely between calls (reserve ... model call ... settle), which is what is under test.
"""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any

import boto3
import pytest

from functions.adapters.dynamodb_store import DynamoDBRunStore, day_sk, spend_pks
from functions.adapters.serde import from_item, to_item
from functions.agent import ledger
from functions.agent.ledger import BudgetLimits
from functions.agent.models import Budget, ModelRequest, ModelResponse, RunKey, RunRequest, RunStatus, StepRef, Usage
from functions.agent.pricing import default_price_book
from functions.agent.step import StepOutcome
from tests.fakes import core
from tests.fakes.model import billed, text_response, tool_response
from tests.fakes.services import RecordingQueue, RecordingWorkflow
from tests.functional.conftest import TABLE, Aws

PRICES = default_price_book()
TENANT = "acme"
DAY = "2026-11-21"  # FixedClock's day
NOW = "2026-11-21T12:00:00.000+00:00"


class AtomicCalls:
    """A DynamoDB client whose API calls each run alone, as DynamoDB's per-request atomicity guarantees."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._client, name)
        if not callable(method):
            return method

        def call(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                return method(*args, **kwargs)

        return call


class PerRunModel:
    """Thread-safe scripted model: each run asks for the calculator, then answers; each call wants ``usage``
    and is billed what a provider would bill for it (``billed``: cut off at the request's max_tokens)."""

    provider = "scripted"

    def __init__(self, usage: Usage) -> None:
        self.usage = usage
        self.calls = 0
        self.billed = Decimal(0)  # what every call cost, at list prices
        self._lock = threading.Lock()

    def create(self, request: ModelRequest) -> ModelResponse:
        usage, cut = billed(self.usage, request)
        with self._lock:
            self.calls += 1
            self.billed += PRICES.cost(request.model, usage)
        if cut:
            return text_response("4", usage=usage, stop_reason="max_tokens")
        if len(request.messages) == 1:
            return tool_response(("t1", "calculator", {"expression": "6*7"}), usage=usage)
        return text_response("42", usage=usage)


def counter(aws: Aws, tenant: str | None, model: str | None = None) -> dict[str, Any]:
    """A day counter as its readers see it: the unsharded item and every statistics shard added up."""
    total: dict[str, Any] = {}
    for pk in spend_pks(tenant):
        item = aws.dynamodb.get_item(TableName=TABLE, Key=to_item({"pk": pk, "sk": day_sk(DAY, model)})).get("Item")
        for name, value in (from_item(item) if item else {}).items():
            if isinstance(value, (int, Decimal)) and not isinstance(value, bool):
                total[name] = total.get(name, 0) + value
    return total


def key_of(run_id: str) -> RunKey:
    return RunKey(TENANT, run_id)


def submit(store: DynamoDBRunStore, text: str, budget: Budget | None = None) -> str:
    submitter = core.submitter(store, new_id=lambda: "run_" + uuid.uuid4().hex[:26])
    return submitter.submit(TENANT, RunRequest(input=text, budget=budget or Budget())).run.run_id


def drive(store: DynamoDBRunStore, model: PerRunModel, run_id: str, limits: BudgetLimits) -> StepOutcome:
    """What the state machine does for one run: Step, Tools, Step, ... then Finalize."""
    return core.drive(store, model, key_of(run_id), limits=limits)


def take_step(store: DynamoDBRunStore, model: object, run_id: str, **config: object) -> StepOutcome:
    return core.runner(store, model, **config).run(StepRef(key_of(run_id), 0))  # type: ignore[arg-type]


def test_fifty_parallel_runs_never_overspend_the_tenant_budget_by_more_than_one_reservation(aws: Aws) -> None:
    # Given a tenant daily budget that about half of 50 two-step runs fit in
    store = DynamoDBRunStore(TABLE, AtomicCalls(boto3.client("dynamodb")))
    usage = Usage(input_tokens=2_000, output_tokens=200)  # billed: the prompt (< 1,000 tokens) + 200 out, ~$0.0018
    limit = Decimal("0.10")
    limits = BudgetLimits(tenant_daily_usd=limit)
    model = PerRunModel(usage)
    runs = [submit(store, f"task {i}: what is 6*7?") for i in range(50)]
    # When all 50 run at once
    with ThreadPoolExecutor(max_workers=50) as pool:
        outcomes = list(pool.map(lambda run_id: drive(store, model, run_id, limits), runs))
    # Then the recorded spend never passes the budget by more than one reservation
    spent = Decimal(str(counter(aws, TENANT)["spent_usd"]))
    largest_reservation = PRICES.worst_case("claude-haiku-4-5", 1_000, 1024)  # these prompts: < 1,000 tokens
    assert spent <= limit + largest_reservation, (spent, limit)
    assert spent == model.billed  # every call billed was recorded
    # And the budget was binding: some runs finished, others were refused with the reason
    statuses = [store.get_run(key_of(run_id)).status for run_id in runs]  # type: ignore[union-attr]
    refused = [o for o in outcomes if o.status is RunStatus.BUDGET_EXCEEDED]
    # (worst-case reservations of ~$0.006 against real calls of ~$0.0018 crowd the budget while many runs
    # are in flight: the price of a hard limit)
    assert statuses.count(RunStatus.SUCCEEDED) >= 1 and refused
    print(
        f"\n50 parallel runs, tenant budget ${limit}: spent ${spent} in {model.calls} calls, "
        f"{statuses.count(RunStatus.SUCCEEDED)} succeeded, {len(refused)} refused, "
        f"overshoot ${max(spent - limit, Decimal(0))} (bound: one reservation = ${largest_reservation})"
    )
    for outcome in refused:
        assert outcome.error is not None and outcome.error.code == "TENANT_DAILY_BUDGET"
        assert "daily budget $0.1" in outcome.error.message, outcome.error.message
    assert statuses.count(RunStatus.BUDGET_EXCEEDED) == len(refused)
    # And nothing is left reserved once every run has ended
    assert Decimal(str(counter(aws, TENANT)["committed_usd"])) == spent


def test_stored_cost_equals_the_hand_computed_figure_with_cache_tokens(aws: Aws) -> None:
    # Given claude-sonnet-4-5 list prices (USD/MTok): input 3, output 15, cache write 5m 3.75, 1h 6, read 0.30
    store = DynamoDBRunStore(TABLE, boto3.client("dynamodb"))
    run_id = core.submitter(store).submit(TENANT, RunRequest(input="hi", model="claude-sonnet-4-5")).run.run_id
    usage = Usage(
        input_tokens=1_234,
        output_tokens=567,
        cache_creation_input_tokens=3_000,
        cache_creation_1h_input_tokens=1_000,
        cache_read_input_tokens=45_678,
    )

    class Fixed:
        provider = "scripted"

        def create(self, request: ModelRequest) -> ModelResponse:
            return text_response("done", usage=usage).model_copy(update={"model": "claude-sonnet-4-5"})

    # When the step is taken
    take_step(store, Fixed(), run_id)
    # Then the stored cost is, by hand:
    #   1,234 x 3 + 567 x 15 + 2,000 x 3.75 + 1,000 x 6 + 45,678 x 0.30  = 39,910.4 micro-USD... per million:
    #   (3,702 + 8,505 + 7,500 + 6,000 + 13,703.4) / 1e6 = $0.0394104
    expected = Decimal("0.0394104")
    run = store.get_run(key_of(run_id))
    assert run is not None and run.cost_usd == expected
    assert round(float(run.cost_usd), 5) == 0.03941  # to the cent-thousandth
    assert Decimal(str(counter(aws, TENANT)["spent_usd"])) == expected
    assert Decimal(str(counter(aws, None)["spent_usd"])) == expected
    per_model = counter(aws, TENANT, "claude-sonnet-4-5")
    assert Decimal(str(per_model["spent_usd"])) == expected
    assert per_model["cache_read_input_tokens"] == 45_678 and per_model["cache_creation_1h_input_tokens"] == 1_000


def test_a_step_invoked_twice_leaves_one_record_and_one_charge(aws: Aws) -> None:
    store = DynamoDBRunStore(TABLE, boto3.client("dynamodb"))
    run_id = submit(store, "hello")
    model = PerRunModel(Usage(input_tokens=100, output_tokens=10))
    for _ in range(2):  # Step Functions retried the Lambda after it had succeeded
        take_step(store, model, run_id)
    steps = aws.dynamodb.query(
        TableName=TABLE,
        KeyConditionExpression="pk = :pk AND begins_with(sk, :s)",
        ExpressionAttributeValues=to_item({":pk": f"T#{TENANT}#R#{run_id}", ":s": "STEP#"}),
    )["Items"]
    charge = PRICES.cost("claude-haiku-4-5", Usage(input_tokens=100, output_tokens=10))
    assert len(steps) == 1 and model.calls == 1
    assert Decimal(str(counter(aws, TENANT)["spent_usd"])) == charge
    assert counter(aws, TENANT)["steps"] == 1
    assert store.get_run(key_of(run_id)).cost_usd == charge  # type: ignore[union-attr]


def test_a_refused_reservation_names_the_budget_and_a_finished_run_releases_what_it_held(aws: Aws) -> None:
    store = DynamoDBRunStore(TABLE, boto3.client("dynamodb"))
    # A global budget too small for even one worst-case call
    run_id = submit(store, "hello")
    outcome = take_step(store, PerRunModel(Usage()), run_id, limits=BudgetLimits(global_daily_usd=Decimal("0.001")))
    assert outcome.status is RunStatus.BUDGET_EXCEEDED and outcome.error is not None
    assert outcome.error.code == "GLOBAL_DAILY_BUDGET" and "global daily budget $0.001" in outcome.error.message
    # A reservation held by a run that is cancelled before its call returns is released
    other = submit(store, "hello again")
    run = store.get_run(key_of(other))
    assert run is not None
    from functions.agent.models import Reservation

    held = Reservation(step=0, amount_usd=Decimal("0.05"), day=DAY, model="claude-haiku-4-5")
    ledger.reserve(store, run, held, BudgetLimits(tenant_daily_usd=Decimal(1)), now=NOW)
    assert Decimal(str(counter(aws, TENANT)["committed_usd"])) == Decimal("0.05")
    assert ledger.end_run(store, key_of(other), RunStatus.CANCELLED, now=NOW)
    assert Decimal(str(counter(aws, TENANT)["committed_usd"])) == 0
    assert store.get_run(key_of(other)).held is None  # type: ignore[union-attr]


def test_run_max_usd_is_a_reservation_condition_too(aws: Aws) -> None:
    store = DynamoDBRunStore(TABLE, boto3.client("dynamodb"))
    run_id = submit(store, "hello", Budget(max_usd=0.001))
    outcome = take_step(store, PerRunModel(Usage()), run_id)
    assert outcome.status is RunStatus.BUDGET_EXCEEDED and outcome.error is not None
    assert outcome.error.code == "MAX_USD" and "max_usd=$0.001" in outcome.error.message


@pytest.fixture(autouse=True)
def _sanity() -> None:
    # the figures in these tests assume the list prices of the pricing file
    assert PRICES.cost("claude-haiku-4-5", Usage(input_tokens=1_000_000)) == Decimal(1)


class GatedModel:
    """Holds every call until released: calls in flight while the test cancels their runs."""

    provider = "scripted"

    def __init__(self, usage: Usage) -> None:
        self.usage = usage
        self.gate = threading.Event()
        self.in_flight = threading.Semaphore(0)
        self.billed = Decimal(0)
        self._lock = threading.Lock()

    def create(self, request: ModelRequest) -> ModelResponse:
        self.in_flight.release()
        assert self.gate.wait(timeout=30)
        usage, cut = billed(self.usage, request)
        with self._lock:
            self.billed += PRICES.cost(request.model, usage)
        return text_response("done", usage=usage, stop_reason="max_tokens" if cut else "end_turn")


def test_cancelling_runs_with_calls_in_flight_keeps_the_budget_bound(aws: Aws) -> None:
    # Given a tenant budget filled by 10 runs whose model calls are in flight
    store = DynamoDBRunStore(TABLE, AtomicCalls(boto3.client("dynamodb")))
    limit = Decimal("0.08")
    limits = BudgetLimits(tenant_daily_usd=limit)
    usage = Usage(input_tokens=2_000, output_tokens=200)
    gated = GatedModel(usage)
    first = [submit(store, f"slow {i}") for i in range(10)]
    pool = ThreadPoolExecutor(max_workers=10)
    in_flight = [pool.submit(drive, store, gated, run_id, limits) for run_id in first]
    for _ in first:  # every run reserved and is waiting on the model (or was refused)
        gated.in_flight.acquire(timeout=10)
    committed_before = Decimal(str(counter(aws, TENANT)["committed_usd"]))
    # When all of them are cancelled, then 10 new runs try to spend, then the first calls return
    queue = RecordingQueue()
    for run_id in first:
        core.lifecycle(store, queue).cancel(key_of(run_id), RecordingWorkflow())
    fast = PerRunModel(usage)
    second = [drive(store, fast, submit(store, f"fast {i}"), limits) for i in range(10)]
    gated.gate.set()
    for future in in_flight:
        future.result(timeout=30)
    pool.shutdown()
    for key, step in queue.releases:  # the delayed releases, after the calls can no longer run
        core.intake(store).release(key, step)
    # Then the cancelled runs kept their reservations until their calls settled: the new runs spent only what
    # was left beside them (in calls shrunk to fit it), and no call cost more than it reserved
    spent = Decimal(str(counter(aws, TENANT)["spent_usd"]))
    assert committed_before <= limit
    refused = [o for o in second if o.status is RunStatus.BUDGET_EXCEEDED]
    assert refused, [o.status for o in second]
    assert fast.billed <= limit - committed_before, (fast.billed, limit - committed_before)
    assert spent <= limit, (spent, limit)
    assert spent == gated.billed + fast.billed  # every billed call charged once
    print(
        f"\ncancel storm: limit ${limit}, held ${committed_before} by 10 calls in flight; the new runs spent "
        f"${fast.billed} of the ${limit - committed_before} left, {len(refused)}/10 refused; spent ${spent}"
    )
    assert Decimal(str(counter(aws, TENANT)["committed_usd"])) == spent  # nothing left reserved
    assert len(queue.releases) == 10
    assert all(store.get_run(key_of(r)).status is RunStatus.CANCELLED for r in first)  # type: ignore[union-attr]


def test_a_settlement_that_keeps_conflicting_is_retried_from_the_stored_answer(
    aws: Aws, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a hot counter item that loses every transaction of the first settlement
    from botocore.exceptions import ClientError

    from functions.agent.errors import StoreConflictError

    store = DynamoDBRunStore(TABLE, boto3.client("dynamodb"))
    run_id = submit(store, "hello")
    usage = Usage(input_tokens=300, output_tokens=30)
    model = PerRunModel(usage)
    real = store.client.transact_write_items
    conflicts = {"left": 4}

    def contended(**kwargs: Any) -> Any:
        if any("Put" in item for item in kwargs["TransactItems"]) and conflicts["left"]:
            conflicts["left"] -= 1
            reasons = [{"Code": "None"}, {"Code": "TransactionConflict"}] + [{"Code": "None"}] * 5
            error = {"Error": {"Code": "TransactionCanceledException", "Message": "x"}, "CancellationReasons": reasons}
            raise ClientError(error, "TransactWriteItems")  # type: ignore[arg-type]
        return real(**kwargs)

    monkeypatch.setattr(store.client, "transact_write_items", contended)

    def step() -> StepOutcome:
        return take_step(store, model, run_id)

    # When the step's settlement fails after the model answered (Step Functions retries the step)
    with pytest.raises(StoreConflictError):
        step()
    outcome = step()
    # Then the retry settled the stored answer without calling the model again, charged once
    assert model.calls == 1 and outcome.record is not None and outcome.decision.value == "tools"
    assert Decimal(str(counter(aws, TENANT)["spent_usd"])) == PRICES.cost("claude-haiku-4-5", usage)
    assert store.load_history(key_of(run_id)).pending == {}  # the stored answer was settled and removed


def test_per_model_counters_use_the_priced_id_not_the_dated_snapshot(aws: Aws) -> None:
    store = DynamoDBRunStore(TABLE, boto3.client("dynamodb"))
    run_id = submit(store, "hello")

    class Dated:
        provider = "scripted"

        def create(self, request: ModelRequest) -> ModelResponse:
            return text_response("hi").model_copy(update={"model": "claude-haiku-4-5-20251001"})

    take_step(store, Dated(), run_id)
    assert counter(aws, TENANT, "claude-haiku-4-5")["steps"] == 1
    assert counter(aws, TENANT, "claude-haiku-4-5-20251001") == {}


def test_moving_a_reservation_twice_is_applied_once(aws: Aws) -> None:
    # Given a run holding $0.50 for step 0, moved to a $0.10 fallback by two invocations of the same step
    from functions.agent.models import Reservation

    store = DynamoDBRunStore(TABLE, boto3.client("dynamodb"))
    run_id = submit(store, "hello")
    run = store.get_run(key_of(run_id))
    assert run is not None
    first = Reservation(step=0, amount_usd=Decimal("0.50"), day=DAY, model="claude-sonnet-5-5")
    moved = first.model_copy(update={"amount_usd": Decimal("0.10"), "model": "claude-haiku-4-5"})
    limits = BudgetLimits(tenant_daily_usd=Decimal(1))
    ledger.reserve(store, run, first, limits, now=NOW)
    results = [ledger.reserve(store, run, moved, limits, replacing=first, now=NOW) for _ in range(2)]
    # Then both invocations share the moved reservation, carved from the lease the first one took (the day counters
    # hold that lease once: a move within it writes the run alone)
    assert results == [moved, moved]
    assert Decimal(str(counter(aws, TENANT)["committed_usd"])) == Decimal("0.50")
    after = store.get_run(key_of(run_id))
    assert after is not None and after.held == moved and after.lease is not None and after.lease.usd == Decimal("0.50")
