"""Budgets a run can use: near a cap a call's output allowance shrinks to what the tightest budget covers."""

from __future__ import annotations

from decimal import Decimal
from itertools import count

import pytest

from functions.agent import ledger
from functions.agent.errors import BudgetRefusedError
from functions.agent.ledger import MIN_CALL_OUTPUT_TOKENS, BudgetLimits, DayCommitted
from functions.agent.models import (
    Budget,
    ModelRequest,
    ModelResponse,
    Reservation,
    Run,
    RunKey,
    RunRequest,
    RunStatus,
    StepRef,
    Usage,
)
from functions.agent.pricing import CallPrice
from functions.agent.step import StepOutcome
from tests.fakes import core
from tests.fakes.core import PRICES
from tests.fakes.memory_store import InMemoryRunStore
from tests.fakes.model import billed, text_response, tool_response

TENANT = "acme"
DAY = "2026-11-21"  # FixedClock's day
NOW = "2026-11-21T12:00:00.000+00:00"
IDS = count(1)
HAIKU = "claude-haiku-4-5"  # USD/MTok: input 1, cache writes 1.25 (5m) and 2 (1h), output 5


class Verbose:
    """A model that asks for the calculator on every call, wanting ``output`` tokens of it, billed as a provider
    bills (``billed``: the whole prompt as input, cut off at the request's max_tokens)."""

    provider = "scripted"

    def __init__(self, output: int = 300) -> None:
        self.want = Usage(input_tokens=10**9, output_tokens=output)
        self.requests: list[ModelRequest] = []
        self.billed = Decimal(0)

    def create(self, request: ModelRequest) -> ModelResponse:
        self.requests.append(request)
        usage, cut = billed(self.want, request)
        self.billed += PRICES.cost(request.model, usage)
        if cut:
            return text_response("Let me add the next", usage=usage, stop_reason="max_tokens")
        call = (f"t{len(self.requests)}", "calculator", {"expression": f"{len(self.requests)}+1"})
        return tool_response(call, usage=usage)


@pytest.fixture
def store() -> InMemoryRunStore:
    return InMemoryRunStore()


def submit(store: InMemoryRunStore, budget: Budget) -> RunKey:
    submitter = core.submitter(store, new_id=lambda: f"run_{next(IDS):026d}")
    return submitter.submit(TENANT, RunRequest(input="Keep adding one.", budget=budget)).run.key


def test_a_run_with_a_one_cent_cap_spends_at_least_80_percent_of_it_and_never_more(store: InMemoryRunStore) -> None:
    # Given a run capped at $0.01 whose calls each want 300 output tokens (~$0.0025 a call with its prompt)
    model = Verbose()
    key = submit(store, Budget(max_usd=0.01, max_steps=50))
    # When it runs until a budget stops it
    outcome = core.drive(store, model, key)
    # Then it spent at least $0.008 of its $0.01, never more, exactly what the calls were billed
    run = store.get_run(key)
    assert run is not None and run.status is RunStatus.BUDGET_EXCEEDED
    assert outcome.error is not None and outcome.error.code == "MAX_USD"
    assert Decimal("0.008") <= run.cost_usd <= Decimal("0.01"), run.cost_usd
    assert run.cost_usd == model.billed
    # And the calls near the cap were sent with the allowance the budget had left, each within it
    allowances = [request.max_tokens for request in model.requests]
    assert allowances[0] == 1024 and min(allowances) < 1024, allowances
    assert all(request.max_tokens >= MIN_CALL_OUTPUT_TOKENS for request in model.requests)
    print(f"\n$0.01 cap: spent ${run.cost_usd} in {len(model.requests)} calls, allowances {allowances}")


def test_the_last_call_is_refused_when_the_budget_left_covers_less_than_the_smallest_call(
    store: InMemoryRunStore,
) -> None:
    # Given a run whose budget covers its prompt but not 64 output tokens after it
    key = submit(store, Budget(max_usd=0.0011))
    model = Verbose()
    # When its step is taken
    outcome = core.runner(store, model).run(StepRef(key, 0))
    # Then no call is made: the run ends BUDGET_EXCEEDED naming the budget and what the smallest call costs
    assert model.requests == [] and outcome.status is RunStatus.BUDGET_EXCEEDED
    assert outcome.error is not None and outcome.error.code == "MAX_USD"
    assert outcome.error.message.startswith("run budget max_usd=$0.0011: $0 spent, the next call may cost up to $0.00")


def test_an_answer_cut_off_at_a_shrunk_allowance_ends_the_run_as_that_budgets_refusal(store: InMemoryRunStore) -> None:
    # Given a run whose budget covers about 100 output tokens after its prompt, and a model that wants 300
    key = submit(store, Budget(max_usd=0.0015))
    model = Verbose()
    # When its step is taken
    outcome = core.runner(store, model).run(StepRef(key, 0))
    # Then the call was sent with what the budget covers, cut off there, and the run ended BUDGET_EXCEEDED
    (request,) = model.requests
    assert MIN_CALL_OUTPUT_TOKENS <= request.max_tokens < 300
    assert outcome.status is RunStatus.BUDGET_EXCEEDED and outcome.error is not None
    assert outcome.error.code == "MAX_USD"
    assert outcome.error.message.startswith(
        f"the model's output was cut off at max_tokens={request.max_tokens}, all that the run budget max_usd=$0.0015"
    )
    run = store.get_run(key)
    assert run is not None and Decimal(0) < run.cost_usd <= Decimal("0.0015") and run.held is None


def test_a_retried_step_is_sent_with_the_allowance_its_reservation_covers(store: InMemoryRunStore) -> None:
    # Given a step that reserved a shrunk allowance, then failed before its answer was stored
    key = submit(store, Budget(max_usd=0.004))

    class FailsOnce(Verbose):
        def create(self, request: ModelRequest) -> ModelResponse:
            self.requests.append(request)
            if len(self.requests) == 1:
                raise TimeoutError("the Lambda timed out")
            return tool_response(("t1", "calculator", {"expression": "1+1"}), usage=Usage(output_tokens=10))

    model = FailsOnce()
    with pytest.raises(TimeoutError):
        core.runner(store, model).run(StepRef(key, 0))
    run = store.get_run(key)
    assert run is not None and run.held is not None
    # When Step Functions retries it (the budget is unchanged: the reservation is held, the run spent nothing)
    core.runner(store, model).run(StepRef(key, 0))
    # Then the retry asked for the same allowance, which the held reservation covers
    first, retry = model.requests
    assert first.max_tokens == retry.max_tokens < 1024
    price = PRICES.call_price(HAIKU, ledger.estimate_prompt_tokens(retry), cache_ttls=())
    assert price.worst_case(retry.max_tokens) <= run.held.amount_usd < price.worst_case(retry.max_tokens + 1)


def test_a_daily_budget_shrinks_the_call_to_what_the_other_runs_left(store: InMemoryRunStore) -> None:
    # Given a tenant budget of $0.01 of which another run holds $0.0075
    limits = BudgetLimits(tenant_daily_usd=Decimal("0.01"))
    other = store.get_run(submit(store, Budget()))
    assert other is not None
    ledger.reserve(store, other, Reservation(step=0, amount_usd=Decimal("0.0075"), day=DAY, model=HAIKU), limits,
                   now=NOW)  # fmt: skip
    key = submit(store, Budget())
    model = Verbose(output=600)
    # When a run's step wants a full 1,024-token allowance (~$0.006 with its prompt), its model 600 of them
    outcome: StepOutcome = core.runner(store, model, limits=limits).run(StepRef(key, 0))
    # Then its first reservation was refused by the tenant's counter, and the call went out sized to the $0.0025 left
    (request,) = model.requests
    assert MIN_CALL_OUTPUT_TOKENS <= request.max_tokens < 1024
    assert store.committed(TENANT, DAY)[0] <= Decimal("0.01")
    assert outcome.status is RunStatus.BUDGET_EXCEEDED and outcome.error is not None  # the answer was cut off there
    assert outcome.error.code == "TENANT_DAILY_BUDGET" and "tenant acme daily budget $0.01" in outcome.error.message


# ------------------------------------------------------------------------------------- the sizing rule


def run_with(budget: Budget, cost: str = "0", tokens: int = 0) -> Run:
    return (
        core.submitter(InMemoryRunStore())
        .submit(TENANT, RunRequest(input="x", budget=budget))
        .run.model_copy(update={"cost_usd": Decimal(cost), "usage": Usage(input_tokens=tokens)})
    )


CALL = CallPrice(prompt_usd=Decimal("0.001"), output_usd=Decimal("0.000005"))  # 1,000 tokens in, haiku out


@pytest.mark.parametrize(
    ("budget", "spent", "limits", "committed", "expected"),
    [
        (Budget(), "0", BudgetLimits(), None, 1024),  # nothing binds: the run's max_tokens_per_call
        (Budget(max_usd=0.004), "0.002", BudgetLimits(), None, 200),  # ($0.002 - $0.001) / $0.000005
        (Budget(max_tokens=2000), "0", BudgetLimits(), None, 2000 - 500 - 1000),  # 500 used, 1,000 prompt
        (Budget(), "0", BudgetLimits(tenant_daily_usd=Decimal("1")), DayCommitted(DAY, Decimal("0.998"), Decimal(0)),
         200),
        (Budget(), "0", BudgetLimits(global_daily_usd=Decimal("1")), DayCommitted(DAY, Decimal(0), Decimal("0.9985")),
         100),
        (Budget(max_usd=0.004), "0.001", BudgetLimits(tenant_daily_usd=Decimal("1")),
         DayCommitted(DAY, Decimal("0.9985"), Decimal(0)), 100),  # the tightest wins
    ],
)  # fmt: skip
def test_the_allowance_is_the_largest_every_budget_covers(
    budget: Budget, spent: str, limits: BudgetLimits, committed: DayCommitted | None, expected: int
) -> None:
    run = run_with(budget, spent, tokens=500)
    tokens = ledger.call_allowance(run, limits, CALL, prompt_tokens=1000, max_tokens=1024, committed=committed)
    assert tokens == expected
    assert CALL.worst_case(tokens) <= CALL.worst_case(1024)


@pytest.mark.parametrize(
    ("budget", "limits", "committed", "code"),
    [
        (Budget(max_usd=0.00131), BudgetLimits(), None, "MAX_USD"),  # 62 tokens after the prompt
        (Budget(max_tokens=1500 + 63), BudgetLimits(), None, "MAX_TOKENS"),  # 500 used, 1,000 prompt
        (Budget(), BudgetLimits(tenant_daily_usd=Decimal("1")), DayCommitted(DAY, Decimal("0.9987"), Decimal(0)),
         "TENANT_DAILY_BUDGET"),
        (Budget(), BudgetLimits(global_daily_usd=Decimal("1")), DayCommitted(DAY, Decimal(0), Decimal("0.9987")),
         "GLOBAL_DAILY_BUDGET"),
    ],
)  # fmt: skip
def test_below_the_smallest_call_the_tightest_budget_refuses(
    budget: Budget, limits: BudgetLimits, committed: DayCommitted | None, code: str
) -> None:
    run = run_with(budget, tokens=500)
    with pytest.raises(BudgetRefusedError) as refused:
        ledger.call_allowance(run, limits, CALL, prompt_tokens=1000, max_tokens=1024, committed=committed)
    assert refused.value.code == code


def test_a_run_allowed_fewer_tokens_per_call_than_the_floor_is_held_to_its_own() -> None:
    run = run_with(Budget(max_usd=0.0011))  # $0.0001 after the prompt: 20 tokens
    assert ledger.call_allowance(run, BudgetLimits(), CALL, prompt_tokens=1000, max_tokens=16, committed=None) == 16


def test_a_replaced_reservation_counts_as_left_for_the_daily_budgets() -> None:
    run = run_with(Budget())
    held = Reservation(step=0, amount_usd=Decimal("0.002"), day=DAY, model=HAIKU)
    committed = DayCommitted(DAY, Decimal("1.0"), Decimal(0))  # the tenant's whole day, this run's $0.002 in it
    limits = BudgetLimits(tenant_daily_usd=Decimal("1"))
    tokens = ledger.call_allowance(run, limits, CALL, prompt_tokens=1000, max_tokens=1024, committed=committed,
                                   replacing=held)  # fmt: skip
    assert tokens == 200


@pytest.mark.parametrize(("ttls", "rate"), [((), "1"), (("5m",), "1.25"), (("5m", "1h"), "2"), (None, "2")])
def test_a_prompt_is_priced_at_the_dearest_rate_its_cache_breakpoints_allow(
    ttls: tuple[str, ...] | None, rate: str
) -> None:
    price = PRICES.call_price(HAIKU, 1_000_000, cache_ttls=ttls)
    assert price.prompt_usd == Decimal(rate) and price.output_usd == Decimal("0.000005")
    assert price.tokens_covered(Decimal(rate) + Decimal("0.0001")) == 20
