"""Model routing: named models, policies (plan / digest / escalate / final answer) and budget downgrades."""

from __future__ import annotations

from decimal import Decimal

import pytest

from functions.agent import ledger
from functions.agent.errors import RequestRejectedError
from functions.agent.ledger import BudgetLimits
from functions.agent.models import (
    RunError,
    RunKey,
    RunRequest,
    RunStatus,
    StepDecision,
    StepRecord,
    StepRef,
    ToolError,
    ToolOutcome,
    Usage,
)
from functions.agent.pricing import default_price_book
from functions.agent.routing import Route, RoutingConfig, choose, default_routing, supersedes
from functions.agent.step import StepOutcome
from tests.fakes import core
from tests.fakes.memory_store import InMemoryRunStore
from tests.fakes.model import ScriptedModel, text_response, tool_response

CONFIG = default_routing()
PRICES = default_price_book()


def record(step: int, *, tool: str | None = None, cheap: bool = False, superseded: bool = False) -> StepRecord:
    content = (
        [{"type": "tool_use", "id": f"t{step}", "name": tool, "input": {}}] if tool else [{"type": "text", "text": "x"}]
    )
    return StepRecord(
        run_id="run_x", step=step, model="m", provider="p", stop_reason="tool_use" if tool else "end_turn",
        content=content, usage=Usage(), cost_usd=Decimal(0), decision=StepDecision.TOOLS if tool else StepDecision.REDO,
        cheap=cheap, superseded=superseded, route_reason="r", started_at="t", finished_at="t", duration_ms=0,
    )  # fmt: skip


def route(
    steps: list[StepRecord], results: dict[tuple[int, str], ToolOutcome] | None = None, **percent: float
) -> Route:
    return choose(config=CONFIG, run_model="balanced", steps=steps, tool_results=results or {}, budget_percent=percent)


def test_the_routing_file_is_consistent_and_every_model_in_it_has_a_price() -> None:
    for name in CONFIG.policies:
        for model in CONFIG.models_of(name):
            assert PRICES.knows(model), (name, model)
    for source, target in CONFIG.downgrades.items():
        assert PRICES.price(target).output < PRICES.price(source).output  # a downgrade is cheaper


def test_a_named_model_is_used_as_is() -> None:
    chosen = choose(config=CONFIG, run_model="claude-sonnet-5-5", steps=[], tool_results={}, budget_percent={})
    assert chosen == Route("claude-sonnet-5-5", "model named by the run")


def test_a_policy_plans_with_the_strong_model_and_digests_tool_results_with_the_cheap_one() -> None:
    first = route([])
    digest = route([record(0, tool="calculator")])
    assert (first.model, first.cheap) == ("claude-sonnet-5-5", False) and "first step plans" in first.reason
    assert (digest.model, digest.cheap) == ("claude-haiku-4-5", True) and "digest tool results" in digest.reason


def test_a_superseded_cheap_step_escalates_to_the_strong_model() -> None:
    chosen = route([record(0, tool="calculator"), record(1, cheap=True, superseded=True)])
    assert chosen.model == "claude-sonnet-5-5" and "escalated after the cheap model's step 1" in chosen.reason


def test_invalid_tool_input_from_the_cheap_model_escalates() -> None:
    bad = {
        (1, "t1"): ToolOutcome(
            tool_use_id="t1", name="calculator", content="x", is_error=True, error_kind=ToolError.INVALID_INPUT
        )
    }
    chosen = route([record(0, tool="calculator"), record(1, tool="calculator", cheap=True)], bad)
    assert chosen.model == "claude-sonnet-5-5" and "invalid tool input for calculator at step 1" in chosen.reason
    # a tool that ran and failed on its own is not the model's fault
    failed = {
        (1, "t1"): ToolOutcome(
            tool_use_id="t1", name="calculator", content="x", is_error=True, error_kind=ToolError.REJECTED
        )
    }
    assert route([record(0, tool="calculator"), record(1, tool="calculator", cheap=True)], failed).cheap


def test_the_registry_marks_input_that_fails_the_schema_as_invalid_input_which_escalates() -> None:
    # Given the cheap model's tool call with input the calculator's schema rejects, run by the real registry
    from functions.agent.models import ToolCall
    from functions.tools import builtin_registry

    outcome = builtin_registry().execute(ToolCall(id="t1", name="calculator", input={"expr": "6*7"}), ["calculator"])
    # Then the result says so in a typed field (routing never parses the message), and routing escalates
    assert outcome.error_kind is ToolError.INVALID_INPUT and outcome.is_error
    chosen = route([record(0, tool="calculator"), record(1, tool="calculator", cheap=True)], {(1, "t1"): outcome})
    assert chosen.model == "claude-sonnet-5-5" and not chosen.cheap


@pytest.mark.parametrize(("budget", "percent"), [("TenantDaily", 80.0), ("GlobalDaily", 95.5), ("Run", 120.0)])
def test_a_budget_at_the_threshold_downgrades_every_call(budget: str, percent: float) -> None:
    named = choose(
        config=CONFIG, run_model="claude-opus-4-5", steps=[], tool_results={}, budget_percent={budget: percent}
    )
    planned = route([], **{budget: percent})
    assert named.model == "claude-sonnet-5-5" and f"{budget} budget at {percent:.0f}%" in named.reason
    assert planned.model == "claude-haiku-4-5" and "downgraded from claude-sonnet-5-5" in planned.reason
    below = choose(config=CONFIG, run_model="claude-opus-4-5", steps=[], tool_results={}, budget_percent={budget: 79.9})
    assert below.model == "claude-opus-4-5"


def test_the_cheapest_model_has_nothing_to_downgrade_to() -> None:
    chosen = choose(config=CONFIG, run_model="claude-haiku-4-5", steps=[], tool_results={}, budget_percent={"Run": 99})
    assert chosen.model == "claude-haiku-4-5"


def test_only_the_cheap_models_final_answers_and_failures_are_superseded() -> None:
    cheap, strong = Route("h", "r", cheap=True), Route("s", "r")
    final, tools = text_response("done"), tool_response(("t", "calculator", {"expression": "1"}))
    assert supersedes(cheap, final, None) == "final answer goes to the strong model"
    assert supersedes(cheap, final, RunError(code="REFUSAL", message="no")) == "cheap model output failed: REFUSAL"
    assert supersedes(cheap, tools, None) is None
    assert supersedes(strong, final, RunError(code="REFUSAL", message="no")) is None


def test_a_policy_run_end_to_end_through_the_core() -> None:
    # Given a run on the "balanced" policy and a model that asks for a tool, drafts an answer, then answers
    store = InMemoryRunStore()
    run_id = core.submitter(store).submit("t", RunRequest(input="6*7?", model="balanced")).run.run_id
    usage = Usage(input_tokens=1_000, output_tokens=100)
    model = ScriptedModel(
        tool_response(("t1", "calculator", {"expression": "6*7"}), usage=usage),
        text_response("draft: 42", usage=usage),
        text_response("6 * 7 = 42", usage=usage),
    )
    outcomes = []
    for step in range(3):
        outcomes.append(_step(store, model, run_id, step))
    # Then the models were strong (plan), cheap (digest, its final answer superseded), strong (final answer)
    assert [r.model for r in model.requests] == ["claude-sonnet-5-5", "claude-haiku-4-5", "claude-sonnet-5-5"]
    assert [o.decision for o in outcomes] == [StepDecision.TOOLS, StepDecision.REDO, StepDecision.FINISH]
    history = store.load_history(RunKey("t", run_id))
    assert [s.superseded for s in history.steps] == [False, True, False]
    assert "superseded: final answer goes to the strong model" in str(history.steps[1].route_reason)
    # And the strong model never saw the superseded draft
    assert "draft: 42" not in str(model.requests[2].messages)
    # And every call is charged at the price of the model that served it
    run = store.get_run(RunKey("t", run_id))
    assert run is not None and run.status is RunStatus.SUCCEEDED and run.output == "6 * 7 = 42"
    expected = 2 * PRICES.cost("claude-sonnet-5-5", usage) + PRICES.cost("claude-haiku-4-5", usage)
    assert run.cost_usd == expected


def test_a_policy_whose_model_has_no_price_is_refused_at_submit() -> None:
    config = RoutingConfig(
        version="t", downgrade_at_percent=80, policies={"odd": {"strong": "claude-sonnet-5-5", "cheap": "mystery-1"}}
    )  # type: ignore[dict-item]
    with pytest.raises(RequestRejectedError, match="routing policy 'odd' uses model 'mystery-1'"):
        core.submitter(InMemoryRunStore(), routing=config).submit("t", RunRequest(input="x", model="odd"))


def _policy_run(store: InMemoryRunStore, *, max_steps: int = 10) -> str:
    from functions.agent.models import Budget

    request = RunRequest(input="6*7?", model="balanced", budget=Budget(max_steps=max_steps))
    return core.submitter(store, new_id=lambda: f"run_{len(store.runs):026d}").submit("t", request).run.run_id


def _step(store: InMemoryRunStore, model: ScriptedModel, run_id: str, step: int, **config: object) -> StepOutcome:
    outcome = core.runner(store, model, **config).run(StepRef(RunKey("t", run_id), step))
    core.run_tools(store, outcome)
    return outcome


def test_the_cheap_models_answer_on_the_last_allowed_step_is_kept() -> None:
    # Given a policy run allowed two steps: plan (strong) and one more
    store = InMemoryRunStore()
    run_id = _policy_run(store, max_steps=2)
    model = ScriptedModel(tool_response(("t1", "calculator", {"expression": "6*7"})), text_response("42"))
    _step(store, model, run_id, 0)
    last = _step(store, model, run_id, 1)
    # Then the cheap answer is the answer: there is no step left to redo it
    assert last.status is RunStatus.SUCCEEDED and last.decision is StepDecision.FINISH
    assert not store.load_history(RunKey("t", run_id)).steps[1].superseded


def test_no_redo_when_the_escalation_would_be_the_same_model() -> None:
    # Given a budget past the downgrade threshold: the strong model would be downgraded to the cheap one
    from functions.agent.models import Budget

    store = InMemoryRunStore()
    run_id = _policy_run(store)
    store.runs[RunKey("t", run_id)] = store.runs[RunKey("t", run_id)].model_copy(
        update={"budget": Budget(max_usd=1.0), "cost_usd": Decimal("0.85")}
    )
    model = ScriptedModel(tool_response(("t1", "calculator", {"expression": "6*7"})), text_response("42"))
    _step(store, model, run_id, 0, limits=BudgetLimits())
    last = _step(store, model, run_id, 1, limits=BudgetLimits())
    # Then the cheap answer stands instead of paying the same model twice
    assert [r.model for r in model.requests] == ["claude-haiku-4-5", "claude-haiku-4-5"]
    assert last.status is RunStatus.SUCCEEDED


def test_a_retried_step_calls_the_model_it_reserved_for() -> None:
    # Given a step that reserved for the cheap model, then failed with a retryable error
    from functions.agent.models import Reservation

    store = InMemoryRunStore()
    run_id = _policy_run(store)
    pinned = Reservation(
        step=0, amount_usd=Decimal("0.01"), day="2026-11-21", model="claude-haiku-4-5", cheap=True, reason="pinned"
    )
    store.runs[RunKey("t", run_id)] = store.runs[RunKey("t", run_id)].model_copy(update={"reservation": pinned})
    model = ScriptedModel(text_response("draft"))
    # When the retry runs (routing alone would pick the strong model for a first step)
    _step(store, model, run_id, 0)
    # Then it calls the reserved model, settles that reservation, and records why
    assert model.requests[0].model == "claude-haiku-4-5"
    record = store.load_history(RunKey("t", run_id)).steps[0]
    assert (
        record.requested_model == "claude-haiku-4-5"
        and record.route_reason is not None
        and record.route_reason.startswith("pinned")
    )
    assert store.get_run(RunKey("t", run_id)).held is None  # type: ignore[union-attr]


def test_a_duplicate_invocation_shares_the_reservation_its_twin_made() -> None:
    from functions.agent.models import Reservation

    store = InMemoryRunStore()
    run_id = _policy_run(store)
    run = store.get_run(RunKey("t", run_id))
    assert run is not None
    first = Reservation(step=0, amount_usd=Decimal("0.01"), day="2026-11-21", model="claude-sonnet-5-5")
    twin = first.model_copy(update={"amount_usd": Decimal("0.02")})
    now = "2026-11-21T12:00:00.000+00:00"
    assert ledger.reserve(store, run, first, BudgetLimits(), now=now) == first
    assert ledger.reserve(store, run, twin, BudgetLimits(), now=now) == first  # not a second hold, not a failure
    assert store.committed("t", "2026-11-21")[0] == Decimal("0.01")
