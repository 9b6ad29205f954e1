"""Budget leases (functions/agent/ledger.py): which shared items a run's steps write, and what its end gives back."""

from __future__ import annotations

from decimal import Decimal
from itertools import count

from functions.agent import ledger
from functions.agent.ledger import BudgetLimits, Counter, Plan, Rejected
from functions.agent.models import Budget, RunKey, RunRequest, RunStatus, StepRef
from tests.fakes import core
from tests.fakes.memory_store import InMemoryRunStore
from tests.unit.test_budget_sizing import Verbose

TENANT = "acme"
DAY = "2026-11-21"  # FixedClock's day
IDS = count(1)


class CountingStore(InMemoryRunStore):
    """Records the counters each applied plan wrote, by the step the plan is for."""

    def __init__(self) -> None:
        super().__init__()
        self.written: list[tuple[Counter, ...]] = []

    def apply(self, plan: Plan) -> Rejected | None:
        rejected = super().apply(plan)
        if rejected is None:
            self.written.append(tuple(change.counter for change in plan.counters))
        return rejected


def submit(store: InMemoryRunStore, budget: Budget) -> RunKey:
    submitter = core.submitter(store, new_id=lambda: f"run_{next(IDS):026d}")
    return submitter.submit(TENANT, RunRequest(input="Keep adding one.", budget=budget)).run.key


def test_a_long_run_writes_the_day_counters_once_per_lease_and_spreads_its_statistics() -> None:
    # Given a run of 40 model calls under a tenant and a global daily budget far from their limits
    store = CountingStore()
    limits = BudgetLimits(tenant_daily_usd=Decimal(100), global_daily_usd=Decimal(1000))
    key = submit(store, Budget(max_steps=40))
    # When it runs to its max_steps
    outcome = core.drive(store, Verbose(output=50), key, limits=limits)
    assert outcome.status is RunStatus.BUDGET_EXCEEDED and outcome.error is not None
    assert outcome.error.code == "MAX_STEPS"
    # Then the budgets' counters were written when a lease was taken (as many worst-case calls as the run made, 8
    # at most: at steps 0, 1, 2, 4, 8, 16, 24 and 32 at most, fewer as these calls cost less than their worst
    # case) and at the end
    budget_items = [Counter(TENANT, DAY), Counter(None, DAY)]
    writes = [n for n, counters in enumerate(store.written) if any(c in budget_items for c in counters)]
    assert 2 <= len(writes) <= len([0, 1, 2, 4, 8, 16, 24, 32]) + 1, writes
    assert writes[-1] == len(store.written) - 1  # the last: the end gave back what the run did not spend
    # And no statistics item took every step: 40 steps over the 16 shards, each shard a fraction of them
    stats = [c for counters in store.written for c in counters if c.tenant is None and c.shard is not None]
    assert len(stats) == 40
    assert max(stats.count(shard) for shard in set(stats)) < 40 // 4
    # And the day adds up: committed (nothing leased any more) = spent = the run's cost, over every shard
    run = store.get_run(key)
    assert run is not None and run.lease is None and run.held is None
    assert store.committed(TENANT, DAY) == (run.cost_usd, run.cost_usd)
    assert store.day_stats(TENANT, DAY)["spent_usd"] == run.cost_usd == store.day_stats(None, DAY)["spent_usd"]
    (day,) = [row for row in store.spend_rows(TENANT, DAY, DAY) if row.model is None and row.run_id is None]
    assert (day.cost_usd, day.steps) == (run.cost_usd, 40)


def test_a_call_reserved_under_a_lease_writes_the_run_alone() -> None:
    # Given a run that took its first leases (steps 0 to 2, their calls costing less than their worst case)
    store = CountingStore()
    key = submit(store, Budget())
    limits = BudgetLimits(tenant_daily_usd=Decimal(1))
    runner = core.runner(store, Verbose(output=50), limits=limits)
    budget = {Counter(TENANT, DAY), Counter(None, DAY)}
    first = runner.run(StepRef(key, 0))
    core.run_tools(store, first)
    assert not budget & set(store.written[-1])  # the settlement of step 0 wrote no budget counter (statistics only)
    for step in (1, 2):  # step 2 takes a lease of 2 worst-case calls
        core.run_tools(store, runner.run(StepRef(key, step)))
    run = store.get_run(key)
    assert run is not None and run.lease is not None and run.held is None
    store.written.clear()
    # When step 3 is taken: its call fits in what is left of that lease
    core.run_tools(store, runner.run(StepRef(key, 3)))
    # Then neither its reservation nor its settlement wrote a budget counter (its settlement: the statistics only)
    assert len(store.written) == 2 and not any(budget & set(counters) for counters in store.written)
    assert ledger.usable_lease(store.get_run(key), DAY, limits) is not None  # type: ignore[arg-type]
