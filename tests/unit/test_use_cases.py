"""The agent core's use cases, driven with in-memory fakes (no AWS, no model, no sockets)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from functions.agent.errors import (
    EnqueueError,
    FatalModelError,
    IdempotencyConflictError,
    RequestRejectedError,
    RetryableModelError,
    RunConflictError,
    RunNotFoundError,
    UnknownToolError,
)
from functions.agent.ledger import Plan, Rejected
from functions.agent.lifecycle import failure_reason
from functions.agent.models import (
    Budget,
    ModelRequest,
    ModelResponse,
    Reservation,
    Run,
    RunKey,
    RunRequest,
    RunStatus,
    StepDecision,
    StepRef,
    Usage,
)
from functions.agent.step import MAX_WAITS, StepOutcome
from functions.agent.submit import Accepted
from functions.agent.tool import run_tool
from functions.tools import builtin_registry
from tests.fakes import core
from tests.fakes.clock import FixedClock
from tests.fakes.core import PRICES, run_tools
from tests.fakes.memory_store import InMemoryRunStore
from tests.fakes.model import ScriptedModel, text_response, tool_response
from tests.fakes.services import RecordingQueue, RecordingWorkflow

TENANT = "acme"


@pytest.fixture
def store() -> InMemoryRunStore:
    return InMemoryRunStore()


def submit(
    store: InMemoryRunStore, request: RunRequest, *, queue: RecordingQueue | None = None, key: str | None = None
) -> Accepted:
    return core.submitter(store, queue=queue).submit(TENANT, request, idempotency_key=key)


def key_of(run_id: str, tenant: str = TENANT) -> RunKey:
    return RunKey(tenant, run_id)


def step(store: InMemoryRunStore, model: ScriptedModel, run_id: str, n: int, **kwargs: int) -> StepOutcome:
    return core.runner(store, model).run(StepRef(key_of(run_id), n), **kwargs)


def cancel(
    store: InMemoryRunStore, run_id: str, workflow: RecordingWorkflow | None = None, tenant: str = TENANT
) -> Run:
    return core.lifecycle(store, RecordingQueue()).cancel(key_of(run_id, tenant), workflow or RecordingWorkflow())


# ------------------------------------------------------------------------------------------------ create


def test_create_run_persists_queued_run_and_enqueues_it(store: InMemoryRunStore) -> None:
    queue = RecordingQueue()
    accepted = submit(store, RunRequest(input="What is 2+2?"), queue=queue)
    assert accepted.run.status is RunStatus.QUEUED
    assert accepted.run.model == "claude-haiku-4-5"
    assert accepted.run.tools == ["calculator", "current_time"]
    assert queue.sent == [accepted.run.key]
    assert store.get_run(accepted.run.key) is not None


@pytest.mark.parametrize(
    ("request_", "error"),
    [
        (RunRequest(input="x", model="gpt-4o"), RequestRejectedError),
        (RunRequest(input="x", tools=["calculator", "shell"]), UnknownToolError),
    ],
)
def test_bad_model_or_tool_is_refused_before_anything_is_written(
    store: InMemoryRunStore, request_: RunRequest, error: type[Exception]
) -> None:
    queue = RecordingQueue()
    with pytest.raises(error):
        submit(store, request_, queue=queue)
    assert store.writes == 0
    assert queue.sent == []


def test_same_idempotency_key_returns_the_same_run(store: InMemoryRunStore) -> None:
    first = submit(store, RunRequest(input="hello"), key="k-1")
    again = submit(store, RunRequest(input="hello"), key="k-1")
    assert again.replayed and not first.replayed
    assert again.run.run_id == first.run.run_id
    assert len(store.runs) == 1


def test_idempotency_key_with_a_different_body_is_a_conflict(store: InMemoryRunStore) -> None:
    submit(store, RunRequest(input="hello"), key="k-1")
    with pytest.raises(IdempotencyConflictError):
        submit(store, RunRequest(input="something else"), key="k-1")


def test_enqueue_failure_marks_the_run_failed_instead_of_leaving_it_queued(store: InMemoryRunStore) -> None:
    with pytest.raises(EnqueueError) as raised:
        submit(store, RunRequest(input="hello"), queue=RecordingQueue(fail=ConnectionError("sqs down")))
    (run,) = store.runs.values()
    assert not raised.value.retry_with_key
    assert run.status is RunStatus.FAILED
    assert run.error is not None and run.error.code == "ENQUEUE_FAILED"


def test_enqueue_failure_with_an_idempotency_key_keeps_the_run_queued_for_the_retry(store: InMemoryRunStore) -> None:
    # Given a first attempt whose enqueue fails
    with pytest.raises(EnqueueError) as raised:
        submit(store, RunRequest(input="hello"), queue=RecordingQueue(fail=ConnectionError("sqs down")), key="k-9")
    assert raised.value.retry_with_key
    # When the client retries with the same key
    queue = RecordingQueue()
    again = submit(store, RunRequest(input="hello"), queue=queue, key="k-9")
    # Then the same run, still QUEUED, is enqueued this time
    assert again.replayed and again.run.status is RunStatus.QUEUED
    assert queue.sent == [again.run.key]
    # And a replay that meets the outage again says so the same way, leaving the run QUEUED
    with pytest.raises(EnqueueError):
        submit(store, RunRequest(input="hello"), queue=RecordingQueue(fail=ConnectionError("down")), key="k-9")
    assert store.get_run(again.run.key).status is RunStatus.QUEUED  # type: ignore[union-attr]


def test_a_model_without_a_price_fails_the_run_before_the_provider_is_called(store: InMemoryRunStore) -> None:
    run_id = submit(store, RunRequest(input="x")).run.run_id
    store.runs[key_of(run_id)] = store.runs[key_of(run_id)].model_copy(update={"model": "claude-unpriced-9"})
    model = ScriptedModel()
    outcome = step(store, model, run_id, 0)
    assert outcome.status is RunStatus.FAILED and outcome.error is not None and outcome.error.code == "UNKNOWN_MODEL"
    assert model.requests == []


def test_a_cancel_that_loses_the_race_with_the_end_of_the_run_is_a_conflict(store: InMemoryRunStore) -> None:
    run_id = submit(store, RunRequest(input="x")).run.run_id
    real_apply = store.apply

    def finalize_first(plan: Plan) -> Rejected | None:
        store.apply = real_apply  # type: ignore[method-assign]
        core.lifecycle(store).end(key_of(run_id), RunStatus.SUCCEEDED, None)  # Finalize lands between read and write
        return real_apply(plan)

    store.apply = finalize_first  # type: ignore[method-assign]
    workflow = RecordingWorkflow()
    with pytest.raises(RunConflictError, match="SUCCEEDED"):
        cancel(store, run_id, workflow)
    assert workflow.stopped == []


# ------------------------------------------------------------------------------------------------ steps


def test_multi_step_run_with_a_tool_call_succeeds_and_accounts_every_step(store: InMemoryRunStore) -> None:
    # Given a run and a model that asks for the calculator, then answers
    run_id = submit(store, RunRequest(input="What is 17*23?")).run.run_id
    model = ScriptedModel(
        tool_response(
            ("toolu_1", "calculator", {"expression": "17*23"}), usage=Usage(input_tokens=400, output_tokens=40)
        ),
        text_response("17*23 = 391", usage=Usage(input_tokens=500, output_tokens=10, cache_read_input_tokens=300)),
    )
    # When the workflow drives it: Step -> Tools -> Step
    first = step(store, model, run_id, 0)
    assert first.decision is StepDecision.TOOLS and [c.name for c in first.tool_calls] == ["calculator"]
    run_tools(store, first)
    second = step(store, model, run_id, 1)
    # Then the run has the answer, two steps and the summed usage and cost
    assert second.decision is StepDecision.FINISH and second.status is RunStatus.SUCCEEDED
    run = store.get_run(key_of(run_id))
    assert run is not None
    assert run.output == "17*23 = 391"
    assert run.completed_steps == 2
    assert run.usage == Usage(input_tokens=900, output_tokens=50, cache_read_input_tokens=300)
    expected = PRICES.cost("claude-haiku-4-5", Usage(input_tokens=400, output_tokens=40)) + PRICES.cost(
        "claude-haiku-4-5", Usage(input_tokens=500, output_tokens=10, cache_read_input_tokens=300)
    )
    assert run.cost_usd == expected
    # And the second call saw the tool result in the conversation, with the tool schemas
    sent = model.requests[1]
    assert sent.messages[-1]["content"][0] == {
        "type": "tool_result",
        "tool_use_id": "toolu_1",
        "content": "391",
        "is_error": False,
    }
    assert {t["name"] for t in sent.tools} == {"calculator", "current_time"}


def test_retried_step_after_the_answer_was_saved_does_not_call_the_model_again(store: InMemoryRunStore) -> None:
    run_id = submit(store, RunRequest(input="hi")).run.run_id
    model = ScriptedModel(text_response("hello"))
    first = step(store, model, run_id, 0)
    again = step(store, model, run_id, 0)  # Step Functions retried the Lambda after it had persisted
    assert len(model.requests) == 1
    assert again.replayed and again.status is first.status is RunStatus.SUCCEEDED
    run = store.get_run(key_of(run_id))
    assert run is not None and run.completed_steps == 1 and run.usage.input_tokens == 100


def test_tool_runs_once_even_when_its_lambda_is_retried(store: InMemoryRunStore) -> None:
    run_id = submit(store, RunRequest(input="x")).run.run_id
    step(store, ScriptedModel(tool_response(("t1", "calculator", {"expression": "1+1"}))), run_id, 0)
    results = [run_tool(store, builtin_registry(), StepRef(key_of(run_id), 0), "t1") for _ in range(2)]
    assert results[0] == results[1]
    assert len(store.tools) == 1


def test_invalid_tool_input_becomes_an_error_result_the_model_sees(store: InMemoryRunStore) -> None:
    run_id = submit(store, RunRequest(input="x")).run.run_id
    model = ScriptedModel(tool_response(("t1", "calculator", {"expr": "1+1"})), text_response("sorry"))
    run_tools(store, step(store, model, run_id, 0))
    step(store, model, run_id, 1)
    result = model.requests[1].messages[-1]["content"][0]
    assert result["is_error"] is True
    assert "invalid input for calculator" in result["content"]


@pytest.mark.parametrize(
    ("budget", "usage", "code"),
    [
        (Budget(max_steps=1), Usage(input_tokens=10), "MAX_STEPS"),
        (Budget(max_tokens=2500), Usage(input_tokens=2400, output_tokens=50), "MAX_TOKENS"),
        # $0.004 spent: the $0.0009 left does not cover the second prompt (~930 tokens at $1/MTok) and 64 tokens out
        (Budget(max_usd=0.0049), Usage(input_tokens=4000), "MAX_USD"),
    ],
)
def test_a_run_limit_ends_the_run_budget_exceeded_without_another_model_call(
    store: InMemoryRunStore, budget: Budget, usage: Usage, code: str
) -> None:
    run_id = submit(store, RunRequest(input="x", budget=budget)).run.run_id
    model = ScriptedModel(tool_response(("t1", "calculator", {"expression": "1+1"}), usage=usage))
    run_tools(store, step(store, model, run_id, 0))
    outcome = step(store, model, run_id, 1)
    assert len(model.requests) == 1
    assert outcome.status is RunStatus.BUDGET_EXCEEDED
    assert outcome.error is not None and outcome.error.code == code


@pytest.mark.parametrize(
    ("stop_reason", "code"),
    [("max_tokens", "MAX_TOKENS_PER_CALL"), ("refusal", "REFUSAL"), ("pause_turn", "UNEXPECTED_STOP")],
)
def test_unfinished_model_output_fails_the_run_with_a_reason(
    store: InMemoryRunStore, stop_reason: str, code: str
) -> None:
    run_id = submit(store, RunRequest(input="x")).run.run_id
    outcome = step(store, ScriptedModel(text_response("partial", stop_reason=stop_reason)), run_id, 0)
    assert outcome.status is RunStatus.FAILED
    assert outcome.error is not None and outcome.error.code == code


def test_fatal_model_error_fails_the_run_and_retryable_errors_propagate(store: InMemoryRunStore) -> None:
    run_id = submit(store, RunRequest(input="x")).run.run_id
    with pytest.raises(RetryableModelError):
        step(store, ScriptedModel(RetryableModelError("529 overloaded")), run_id, 0)
    outcome = step(store, ScriptedModel(FatalModelError("MODEL_401", "bad key")), run_id, 0)
    assert outcome.status is RunStatus.FAILED
    assert outcome.error is not None and outcome.error.code == "MODEL_401"


def test_cancelled_run_makes_no_more_model_calls(store: InMemoryRunStore) -> None:
    run_id = submit(store, RunRequest(input="x")).run.run_id
    workflow = RecordingWorkflow()
    cancelled = cancel(store, run_id, workflow)
    model = ScriptedModel()
    outcome = step(store, model, run_id, 0)
    assert cancelled.status is RunStatus.CANCELLED and workflow.stopped == [run_id]
    assert outcome.decision is StepDecision.FINISH and outcome.status is RunStatus.CANCELLED
    assert model.requests == []
    with pytest.raises(RunConflictError):
        cancel(store, run_id, workflow)


def test_finalize_never_overwrites_a_cancellation(store: InMemoryRunStore) -> None:
    run_id = submit(store, RunRequest(input="x")).run.run_id
    cancel(store, run_id)
    run = core.lifecycle(store).end(key_of(run_id), RunStatus.SUCCEEDED, None)
    assert run.status is RunStatus.CANCELLED


def test_intake_starts_a_queued_run_once_and_skips_others(store: InMemoryRunStore) -> None:
    run_id = submit(store, RunRequest(input="x")).run.run_id
    workflow = RecordingWorkflow()
    intake = core.intake(store, workflow)
    results = [intake.start(key_of(run_id)) for _ in range(2)]
    assert results == ["started", "duplicate"]
    assert workflow.started == [run_id]
    assert intake.start(key_of("run_missing")) == "missing"
    cancel(store, run_id, workflow)
    assert intake.start(key_of(run_id)) == "skipped:CANCELLED"


def test_other_tenants_cannot_see_a_run(store: InMemoryRunStore) -> None:
    run_id = submit(store, RunRequest(input="x")).run.run_id
    assert store.get_run(key_of(run_id, "other")) is None
    with pytest.raises(RunNotFoundError):
        cancel(store, run_id, tenant="other")


def test_failure_reason_reads_the_lambda_error_message_from_the_cause() -> None:
    cause = '{"errorType": "RetryableModelError", "errorMessage": "Anthropic API 529 overloaded_error: busy"}'
    error = failure_reason("RetryableModelError", cause)
    assert error.code == "RetryableModelError"
    assert error.message == "Anthropic API 529 overloaded_error: busy"
    assert failure_reason(None, None).message == "the workflow failed without a cause"


def test_step_outcome_state_is_small_and_names_the_next_step(store: InMemoryRunStore) -> None:
    run_id = submit(store, RunRequest(input="x" * 90_000)).run.run_id
    outcome = step(store, ScriptedModel(tool_response(("t1", "calculator", {"expression": "1+1"}))), run_id, 0)
    state = outcome.state()
    assert state["step"] == 1 and state["completed_step"] == 0 and state["next"] == "tools"
    assert state["tool_calls"] == [{"id": "t1", "name": "calculator", "kind": "stepwise"}]
    assert len(str(state)) < 1_000  # conversation never travels through Step Functions
    assert Decimal(0) < store.get_run(key_of(run_id)).cost_usd  # type: ignore[union-attr]


def test_a_call_answered_after_cancellation_is_recorded_and_charged_without_reviving_the_run(
    store: InMemoryRunStore,
) -> None:
    # Given a run cancelled while its first model call is in flight
    run_id = submit(store, RunRequest(input="x")).run.run_id
    late = text_response("late", usage=Usage(input_tokens=70, output_tokens=7))

    class CancelDuringCall(ScriptedModel):
        def create(self, request: ModelRequest) -> ModelResponse:
            cancel(store, run_id)
            return super().create(request)

    # When the step completes
    outcome = step(store, CancelDuringCall(late), run_id, 0)
    # Then the run stays cancelled with no output, but the billed usage is on it
    run = store.get_run(key_of(run_id))
    assert outcome.status is RunStatus.CANCELLED
    assert run is not None and run.status is RunStatus.CANCELLED and run.output is None
    assert run.completed_steps == 1 and run.usage == Usage(input_tokens=70, output_tokens=7)
    assert run.cost_usd == PRICES.cost("claude-haiku-4-5", Usage(input_tokens=70, output_tokens=7))


def test_a_retry_after_becomes_a_wait_of_the_same_step_until_the_cap(store: InMemoryRunStore) -> None:
    # Given a provider that throttles with retry-after 1.2 s
    run_id = submit(store, RunRequest(input="x")).run.run_id
    throttled = RetryableModelError("429 rate_limit_error", retry_after=1.2, kind="throttled")
    # When the step meets it
    waited = step(store, ScriptedModel(throttled), run_id, 0)
    assert waited.model_error == "throttled"  # what the step function counts (ModelErrors, kind)
    # Then the workflow is told to wait (rounded up) and take the same step again, with the reservation kept
    state = waited.state()
    assert (state["next"], state["step"], state["wait_seconds"], state["waits"]) == ("wait", 0, 2, 1)
    assert store.get_run(key_of(run_id)).held is not None  # type: ignore[union-attr]
    # And past the cap of consecutive waits the error goes to the workflow's Retry instead
    with pytest.raises(RetryableModelError):
        step(store, ScriptedModel(throttled), run_id, 0, waits=MAX_WAITS)


def test_a_model_past_its_end_of_life_is_refused_at_submit(store: InMemoryRunStore) -> None:
    from datetime import UTC, datetime

    # claude-sonnet-4-5 reaches end-of-life on 2026-11-30 (the anthropic SDK's deprecation list)
    request = RunRequest(input="x", model="claude-sonnet-4-5")
    before = core.submitter(store).submit(TENANT, request)
    assert before.run.model == "claude-sonnet-4-5"
    after_eol = core.submitter(store, clock=FixedClock(start=datetime(2026, 12, 1, tzinfo=UTC)))
    with pytest.raises(RequestRejectedError, match="reached end-of-life on 2026-11-30"):
        after_eol.submit(TENANT, request)
    # a retired model named as a fallback is refused too (it would be called when the first one fails)
    fallback = RunRequest(input="x", model="claude-haiku-4-5", fallbacks=["claude-sonnet-4-5"])
    with pytest.raises(RequestRejectedError, match="fallback model 'claude-sonnet-4-5' reached end-of-life"):
        after_eol.submit(TENANT, fallback)


def test_the_watchdog_keeps_watching_a_moving_run_and_ends_a_stuck_one(store: InMemoryRunStore) -> None:
    # Given a started run
    run_id = submit(store, RunRequest(input="x")).run.run_id
    workflow, queue = RecordingWorkflow(), RecordingQueue()
    intake = core.intake(store, workflow, queue)
    assert intake.start(key_of(run_id)) == "started"
    assert queue.watches == [key_of(run_id)]  # intake scheduled the first check
    # When its execution is running, the watchdog checks again later
    assert intake.watch(key_of(run_id)) == "running"
    assert len(queue.watches) == 2
    # When the execution timed out but the run never heard of it, the run ends TIMED_OUT with the reason
    workflow.statuses[run_id] = "TIMED_OUT"
    assert intake.watch(key_of(run_id)) == "stuck:TIMED_OUT"
    run = store.get_run(key_of(run_id))
    assert run is not None and run.status is RunStatus.TIMED_OUT
    assert run.error is not None and run.error.code == "STUCK" and "its execution ended TIMED_OUT" in run.error.message
    # And an ended run is no longer watched
    assert intake.watch(key_of(run_id)) == "ended"
    assert len(queue.watches) == 2


def test_the_watchdog_fails_a_started_run_that_has_no_execution(store: InMemoryRunStore) -> None:
    run_id = submit(store, RunRequest(input="x")).run.run_id
    outcome = core.intake(store).watch(key_of(run_id))
    run = store.get_run(key_of(run_id))
    assert outcome == "stuck:None" and run is not None and run.status is RunStatus.FAILED
    assert run.error is not None and "it has no execution" in run.error.message


class MovesTheReservation(ScriptedModel):
    """While answering, a duplicate invocation of the step moves its reservation to a fallback model."""

    MOVED = Reservation(step=0, amount_usd=Decimal("0.2"), day="2026-11-21", model="claude-sonnet-5-5")

    def __init__(self, store: InMemoryRunStore, key: RunKey, *script: ModelResponse) -> None:
        super().__init__(*script)
        self.store, self.key = store, key

    def create(self, request: ModelRequest) -> ModelResponse:
        from functions.agent import ledger

        run = self.store.get_run(self.key)
        assert run is not None and run.held is not None
        ledger.reserve(self.store, run, self.MOVED, ledger.BudgetLimits(), replacing=run.held, now="t")
        return super().create(request)


def test_a_step_whose_reservation_a_duplicate_moved_settles_against_what_the_run_holds_now(
    store: InMemoryRunStore,
) -> None:
    # Given an invocation of step 0 whose call is in flight, and a duplicate invocation that meanwhile moved
    # the step's reservation to a fallback model (before either settled)

    run_id = submit(store, RunRequest(input="x")).run.run_id
    key = key_of(run_id)

    # When the first invocation's answer settles
    outcome = step(store, MovesTheReservation(store, key, text_response("done")), run_id, 0)
    # Then it is saved and ends the run as usual, charged against the moved reservation (nothing left held)
    run = store.get_run(key)
    assert outcome.status is RunStatus.SUCCEEDED and not outcome.replayed
    assert run is not None and run.status is RunStatus.SUCCEEDED and run.output == "done"
    assert run.held is None and run.completed_steps == 1
    assert store.committed(TENANT, "2026-11-21")[0] == run.cost_usd


def test_a_run_only_ends_with_a_terminal_status(store: InMemoryRunStore) -> None:
    run_id = submit(store, RunRequest(input="x")).run.run_id
    with pytest.raises(ValueError, match="terminal status, not RUNNING"):
        core.lifecycle(store).end(key_of(run_id), RunStatus.RUNNING, None)
    assert store.get_run(key_of(run_id)).status is RunStatus.QUEUED  # type: ignore[union-attr]


def test_a_moved_reservation_whose_run_ends_before_the_step_settles_is_still_charged(
    store: InMemoryRunStore,
) -> None:
    # Given a step whose reservation a duplicate moved during the call, and a cancel that lands just before the
    # step settles against the moved reservation
    from functions.agent import ledger

    run_id = submit(store, RunRequest(input="x")).run.run_id
    key = key_of(run_id)
    real_apply, settlements = store.apply, []

    def cancel_before_the_second_settlement(plan: Plan) -> Rejected | None:
        if plan.record is not None:
            settlements.append(plan)
            if len(settlements) == 2:  # the re-planned settlement against the moved reservation
                ledger.end_run(store, key, RunStatus.CANCELLED, release=False, now="t")
        return real_apply(plan)

    store.apply = cancel_before_the_second_settlement  # type: ignore[method-assign]
    outcome = step(
        store,
        MovesTheReservation(store, key, text_response("late", usage=Usage(input_tokens=70, output_tokens=7))),
        run_id,
        0,
    )
    # Then the billed call is recorded and charged against the reservation the run still holds, and the run stays
    # cancelled
    run = store.get_run(key)
    assert outcome.status is RunStatus.CANCELLED
    assert run is not None and run.status is RunStatus.CANCELLED and run.completed_steps == 1
    assert run.cost_usd == PRICES.cost("claude-haiku-4-5", Usage(input_tokens=70, output_tokens=7))
    assert run.held is None and store.committed(TENANT, "2026-11-21")[0] == run.cost_usd


def test_a_reservation_refused_by_a_change_that_reverted_is_retried_not_a_budget_refusal(
    store: InMemoryRunStore,
) -> None:
    # Given a run with room in its max_usd, and a store that refuses the reservation once although nothing is
    # different when the run is read again (it changed and changed back)
    from functions.agent import ledger
    from functions.agent.errors import StoreConflictError
    from functions.agent.models import Reservation

    run = submit(store, RunRequest(input="x", budget=Budget(max_usd=5))).run
    real_apply = store.apply
    store.apply = lambda plan: plan.run  # type: ignore[method-assign]
    wanted = Reservation(step=0, amount_usd=Decimal("0.01"), day="2026-11-21", model="claude-haiku-4-5")
    # Then it is a conflict for the invoker to retry, not MAX_USD
    with pytest.raises(StoreConflictError):
        ledger.reserve(store, run, wanted, ledger.BudgetLimits(), now="t")
    store.apply = real_apply  # type: ignore[method-assign]
    assert ledger.reserve(store, run, wanted, ledger.BudgetLimits(), now="t") == wanted
