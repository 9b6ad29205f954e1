"""No hot spend items: the daily counters on shards, each reservation held on one and checked against its slice."""

from __future__ import annotations

from decimal import Decimal
from itertools import count

import pytest

from functions.agent import ledger
from functions.agent.errors import BudgetRefusedError
from functions.agent.ledger import MAX_SPEND_SHARDS, BudgetLimits, Counter
from functions.agent.models import Budget, Reservation, Run, RunRequest, StepDecision, StepRecord, Usage
from functions.agent.pricing import CallPrice
from tests.fakes import core
from tests.fakes.memory_store import InMemoryRunStore

TENANT = "acme"
DAY = "2026-11-21"
NOW = "2026-11-21T12:00:00.000+00:00"
HAIKU = "claude-haiku-4-5"
CALL = CallPrice(prompt_usd=Decimal("0.01"), output_usd=Decimal("0.000005"))  # a 10,000-token prompt, haiku out
TEN = BudgetLimits(tenant_daily_usd=Decimal(10))  # two shards of $5


IDS = count(1)


def new_run(store: InMemoryRunStore) -> Run:
    submitter = core.submitter(store, new_id=lambda: f"run_{next(IDS):026d}")
    return submitter.submit(TENANT, RunRequest(input="x", budget=Budget())).run


def step_record(run: Run, cost: str) -> StepRecord:
    """Step 0 of ``run``, a tool call that cost ``cost`` for 10 input tokens."""
    return StepRecord(run_id=run.run_id, step=0, model=HAIKU, provider="scripted", stop_reason="tool_use",
                      content=[{"type": "text", "text": "x"}], usage=Usage(input_tokens=10), cost_usd=Decimal(cost),
                      decision=StepDecision.TOOLS, started_at=NOW, finished_at=NOW, duration_ms=1)  # fmt: skip


def fill(store: InMemoryRunStore, shard: int, usd: str) -> None:
    """Commit ``usd`` on one shard of the tenant's day, as other runs' reservations would."""
    store.counters[Counter(TENANT, DAY, shard=shard)] = {"committed_usd": Decimal(usd)}


def wanted(step: int = 0) -> Reservation:
    return Reservation(step=step, amount_usd=Decimal(0), day=DAY, model=HAIKU)


@pytest.mark.parametrize(
    ("limit", "shards"),
    [(None, 16), ("0.01", 1), ("9.99", 1), ("10", 2), ("33.33", 6), ("79.99", 15), ("80", 16), ("5000", 16)],
)
def test_a_counter_has_a_shard_per_five_dollars_of_its_limit_up_to_sixteen(limit: str | None, shards: int) -> None:
    assert ledger.spend_shards(Decimal(limit) if limit else None) == shards
    if limit is not None:  # and the slices never add up past the limit
        assert ledger.shard_slice(Decimal(limit)) * shards <= Decimal(limit)


def test_reservations_are_spread_over_the_shards_and_the_readers_add_them_up() -> None:
    # Given 40 runs reserving $0.10 each without limits
    store = InMemoryRunStore()
    runs = [new_run(store) for _ in range(40)]
    held = [ledger.reserve(store, run, wanted().model_copy(update={"amount_usd": Decimal("0.1")}), BudgetLimits(),
                           now=NOW) for run in runs]  # fmt: skip
    # Then they were held on many shards, each reservation where its step's home slot says
    assert len({h.shards for h in held}) > 8
    assert all(
        h.shards == ledger.slot_shards(ledger.home_slot(r, 0), BudgetLimits()) for h, r in zip(held, runs, strict=True)
    )
    # And what is committed is their sum, the tenant's and everyone's
    assert store.committed(TENANT, DAY) == (Decimal("4.0"), Decimal("4.0"))
    # And once each step settles at $0.02, the spend report adds the shards into one row per counter
    for run, hold in zip(runs, held, strict=True):
        current = store.get_run(run.key)
        assert current is not None and current.reservation == hold
        record = step_record(current, "0.02")
        ledger.settle(store, current, record, None)
    rows = store.spend_rows(TENANT, DAY, DAY)
    (day,) = [row for row in rows if row.model is None and row.run_id is None]
    (per_model,) = [row for row in rows if row.model == HAIKU]
    assert (day.cost_usd, day.steps, day.usage.input_tokens) == (Decimal("0.80"), 40, 400)
    assert (per_model.cost_usd, per_model.steps) == (Decimal("0.80"), 40)
    assert store.committed(TENANT, DAY) == (Decimal("0.80"), Decimal("0.80"))


def test_a_refused_shard_moves_the_call_to_the_shard_with_room() -> None:
    # Given a $10 tenant budget (two $5 shards) whose run's home shard is full, the other empty
    store = InMemoryRunStore()
    run = new_run(store)
    home, _ = ledger.slot_shards(ledger.home_slot(run, 0), TEN)
    fill(store, home, "5")
    # When the run reserves its next call
    held = ledger.reserve_call(store, run, wanted(), TEN, CALL, prompt_tokens=10_000, max_tokens=1024, now=NOW)
    # Then it is held on the other shard, with its whole allowance
    assert held.shards is not None and held.shards[0] == 1 - home
    assert held.amount_usd == CALL.worst_case(1024)
    assert store.committed_on(Counter(TENANT, DAY, shard=1 - home)) == held.amount_usd


def test_near_the_cap_the_call_is_sized_to_the_roomiest_slice_and_refused_when_none_has_room() -> None:
    # Given a $10 budget whose shards have $4.9999 and $4.985 committed
    store = InMemoryRunStore()
    run = new_run(store)
    fill(store, 0, "4.9999")
    fill(store, 1, "4.985")
    # Then a call ($0.01 of prompt) goes to shard 1, its output shrunk to fit the $0.015 its slice has left
    held = ledger.reserve_call(store, run, wanted(), TEN, CALL, prompt_tokens=10_000, max_tokens=1024, now=NOW)
    assert held.shards is not None and held.shards[0] == 1
    assert Decimal("0.01") < held.amount_usd <= Decimal("0.015")
    assert held.amount_usd == CALL.worst_case(ledger.tokens_held(CALL, held, 1024)) < CALL.worst_case(1024)
    assert store.committed(TENANT, DAY)[0] <= Decimal(10)
    # And the next run's call, which neither slice can take, is refused naming the tenant's budget
    with pytest.raises(BudgetRefusedError) as refused:
        ledger.reserve_call(store, new_run(store), wanted(), TEN, CALL, prompt_tokens=10_000, max_tokens=1024, now=NOW)
    assert refused.value.code == "TENANT_DAILY_BUDGET"
    assert "tenant acme daily budget $10" in refused.value.message
    assert store.committed(TENANT, DAY)[0] <= Decimal(10)


def test_a_reservation_made_before_sharding_settles_and_is_released_on_the_unsharded_counters() -> None:
    # Given a run holding a reservation made by the previous release (no shards), on the unsharded counters
    store = InMemoryRunStore()
    run = new_run(store)
    legacy = wanted().model_copy(update={"amount_usd": Decimal("0.05")})
    assert ledger.reserve_plan(run, legacy, TEN, replacing=None, now=NOW).run.reserve == legacy.model_copy(
        update={"shards": ledger.slot_shards(ledger.home_slot(run, 0), TEN)}
    )  # fmt: skip  (new ones are placed)
    store.runs[run.key] = run.model_copy(update={"reservation": legacy})
    for counter in (Counter(TENANT, DAY), Counter(None, DAY)):
        store.counters[counter] = {"committed_usd": Decimal("0.05")}
    # When its step settles at $0.01
    current = store.get_run(run.key)
    assert current is not None
    record = step_record(current, "0.01")
    ledger.settle(store, current, record, None)
    # Then the unsharded counters it was held on were settled, and no shard was written
    assert store.committed_on(Counter(TENANT, DAY)) == store.committed_on(Counter(None, DAY)) == Decimal("0.01")
    assert not any(counter.shard is not None and counter.run_id is None for counter in store.counters)
    assert store.committed(TENANT, DAY) == (Decimal("0.01"), Decimal("0.01"))
    # And a re-routed reservation made before sharding stays on the unsharded counters
    again = store.get_run(run.key)
    assert again is not None
    moved = ledger.reserve_plan(again, wanted(1), TEN, replacing=legacy.model_copy(update={"step": 1}), now=NOW)
    assert all(change.counter.shard is None for change in moved.counters)


def test_every_shard_is_read_whatever_the_limits() -> None:
    store = InMemoryRunStore()
    for k in range(MAX_SPEND_SHARDS):
        store.counters[Counter(TENANT, DAY, shard=k)] = {"committed_usd": Decimal("0.5")}
    store.counters[Counter(TENANT, DAY)] = {"committed_usd": Decimal("1")}
    committed = store.day_committed(TENANT, DAY)
    assert committed.tenant_usd == Decimal(9) and committed.global_usd == 0
