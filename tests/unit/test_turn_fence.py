"""A session's turns are fenced: a Lambda, an execution or a watch of an earlier turn never writes into the next
one (the core's rules, applied by the in-memory store like DynamoDB applies them)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from functions.agent import ledger
from functions.agent.errors import RunNotActiveError
from functions.agent.lifecycle import settle_calls
from functions.agent.models import (
    AgentConfig,
    Budget,
    Reservation,
    Run,
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
from functions.agent.tool import run_tool
from functions.tools import builtin_registry
from tests.fakes import core
from tests.fakes.memory_store import InMemoryRunStore
from tests.fakes.model import ScriptedModel, text_response
from tests.fakes.services import RecordingQueue, RecordingWorkflow

KEY = RunKey("acme", "sesn_0000000000000000000000000a")
T0 = "2026-11-21T12:00:00.000+00:00"


def session_in_turn(store: InMemoryRunStore, turn: int, status: RunStatus = RunStatus.QUEUED) -> Run:
    run = Run(
        run_id=KEY.run_id, tenant=KEY.tenant, status=status, input="", model="claude-haiku-4-5", tools=[],
        budget=Budget(max_steps=25), agent=AgentConfig(), session={"rev": turn},
        turns=[Turn(first_step=0, started_at=T0) for _ in range(turn)], created_at=T0, updated_at=T0,
    )  # fmt: skip
    store.runs[KEY] = run
    return run


def test_a_step_of_an_earlier_turns_execution_ends_without_calling_the_model_or_writing() -> None:
    store = InMemoryRunStore()
    session_in_turn(store, 2)
    model = ScriptedModel(text_response("an answer to the old question"))
    # When the execution of turn 1 (stopped by an interrupt, its Lambda still running) takes step 0
    outcome = core.runner(store, model).run(StepRef(KEY, 0), execution=f"{KEY.run_id}_t1")
    # Then it ends there: no model call, no step saved, the session still waits for turn 2's execution
    assert outcome.decision is StepDecision.FINISH and model.requests == []
    assert store.get_run(KEY).status is RunStatus.QUEUED and store.get_step(KEY, 0) is None  # type: ignore[union-attr]
    # And turn 2's own execution takes the step
    done = core.runner(store, model).run(StepRef(KEY, 0), execution=f"{KEY.run_id}_t2")
    assert done.record is not None and store.get_run(KEY).status is RunStatus.SUCCEEDED  # type: ignore[union-attr]


def test_the_end_of_an_earlier_turns_execution_does_not_end_the_next_turn() -> None:
    store = InMemoryRunStore()
    session_in_turn(store, 3, RunStatus.RUNNING)
    lifecycle = core.lifecycle(store, RecordingQueue())
    # A late Finalize, MarkFailed or execution-ended event of turn 2
    lifecycle.end(KEY, RunStatus.FAILED, None, turn=2)
    lifecycle.fail(KEY, "States.Timeout", None, turn=2)
    lifecycle.end(KEY, RunStatus.TIMED_OUT, None, call_in_flight=True, turn=2)
    assert store.get_run(KEY).status is RunStatus.RUNNING  # type: ignore[union-attr]
    # Turn 3's own end is recorded
    assert lifecycle.end(KEY, RunStatus.IDLE, None, turn=3).status is RunStatus.IDLE


def test_the_watch_of_an_earlier_turn_is_over_once_the_session_moved_on() -> None:
    store = InMemoryRunStore()
    session_in_turn(store, 2)  # turn 2 queued, its execution not started yet
    workflow, queue = RecordingWorkflow(), RecordingQueue()
    intake = core.intake(store, workflow, queue)
    assert intake.watch(KEY, turn=1) == "ended"
    assert store.get_run(KEY).status is RunStatus.QUEUED  # type: ignore[union-attr]
    # while turn 2's own watch finds it without an execution and ends it with why
    assert intake.watch(KEY, turn=2) == "stuck:None"
    assert store.get_run(KEY).error.code == "STUCK"  # type: ignore[union-attr]


def test_a_turns_execution_is_started_once_under_its_own_name_and_watched_for_that_turn() -> None:
    store = InMemoryRunStore()
    session_in_turn(store, 2)
    workflow, queue = RecordingWorkflow(), RecordingQueue()
    intake = core.intake(store, workflow, queue)
    assert [intake.start(KEY), intake.start(KEY)] == ["started", "duplicate"]
    assert workflow.started == [f"{KEY.run_id}_t2"] and queue.watched_turns == [2, 2]
    assert workflow.states[f"{KEY.run_id}_t2"]["turn"] == 2


def test_a_step_of_an_earlier_turn_never_shares_the_next_turns_reservation() -> None:

    store = InMemoryRunStore()
    read = session_in_turn(store, 1, RunStatus.RUNNING)  # what turn 1's step read
    held = Reservation(step=0, amount_usd=Decimal("0.01"), day="2026-11-21", model="claude-haiku-4-5")
    store.runs[KEY] = session_in_turn(store, 2, RunStatus.RUNNING).model_copy(update={"reservation": held})
    with pytest.raises(RunNotActiveError):
        ledger.reserve(store, read, held, ledger.BudgetLimits(), now=T0)


def test_a_cancel_frees_what_the_run_holds_even_when_stopping_the_execution_fails() -> None:

    class Unreachable(RecordingWorkflow):
        def stop(self, name: str, reason: str) -> None:
            raise ConnectionError("throttled")

    store = InMemoryRunStore()
    held = Reservation(step=0, amount_usd=Decimal("0.01"), day="2026-11-21", model="claude-haiku-4-5")
    store.runs[KEY] = session_in_turn(store, 1, RunStatus.RUNNING).model_copy(update={"reservation": held})
    queue = RecordingQueue()
    cancelled = core.lifecycle(store, queue).cancel(KEY, Unreachable(), turn=1)
    assert cancelled.status is RunStatus.CANCELLED  # what is true, whatever the stop did
    assert queue.releases == [(KEY, 0)]
    assert queue.stops == [(KEY, cancelled.execution_name)]  # and the stop is retried from the queue


def test_the_end_of_a_turn_frees_a_reservation_a_cancel_left_when_no_call_can_be_in_flight() -> None:

    store = InMemoryRunStore()
    held = Reservation(step=0, amount_usd=Decimal("0.01"), day="2026-11-21", model="claude-haiku-4-5")
    store.runs[KEY] = session_in_turn(store, 1, RunStatus.CANCELLED).model_copy(update={"reservation": held})
    core.lifecycle(store, RecordingQueue()).end(KEY, RunStatus.SUCCEEDED, None, turn=1)  # Finalize, same turn
    assert store.get_run(KEY).held is None  # type: ignore[union-attr]
    assert store.get_run(KEY).status is RunStatus.CANCELLED  # type: ignore[union-attr]


def test_an_interrupt_settles_the_calls_still_running_so_a_late_result_loses() -> None:

    store = InMemoryRunStore()
    session_in_turn(store, 1, RunStatus.RUNNING)
    store.runs[KEY] = store.runs[KEY].model_copy(update={"tools": ["calculator"], "completed_steps": 1})
    record = StepRecord(
        run_id=KEY.run_id, step=0, model="m", provider="p", stop_reason="tool_use", usage=Usage(),
        content=[{"type": "tool_use", "id": "toolu_a", "name": "calculator", "input": {"expression": "1+1"}}],
        cost_usd=Decimal(0), decision=StepDecision.TOOLS, started_at=T0, finished_at=T0, duration_ms=0,
    )  # fmt: skip
    store.steps[(KEY, 0)] = record
    settle_calls(store, store.get_run(KEY), "was interrupted")  # type: ignore[arg-type]
    late = run_tool(store, builtin_registry(), StepRef(KEY, 0), "toolu_a")  # the RunTool that had not started
    assert late.error_kind is ToolError.RUN_ENDED and "interrupted" in late.content


def test_an_interrupt_leaves_a_result_that_landed_first_and_marks_a_started_side_effect_unknown() -> None:
    store = InMemoryRunStore()
    session_in_turn(store, 1, RunStatus.RUNNING)
    store.runs[KEY] = store.runs[KEY].model_copy(update={"completed_steps": 1})
    calls = [{"type": "tool_use", "id": f"toolu_{n}", "name": "calculator", "input": {}} for n in "abc"]
    store.steps[(KEY, 0)] = StepRecord(
        run_id=KEY.run_id, step=0, model="m", provider="p", stop_reason="tool_use", usage=Usage(), content=calls,
        cost_usd=Decimal(0), decision=StepDecision.TOOLS, started_at=T0, finished_at=T0, duration_ms=0,
    )  # fmt: skip
    ref = StepRef(KEY, 0)
    done = ToolOutcome(tool_use_id="toolu_a", name="calculator", content="2")
    store.save_tool_result(ref, done)  # a result that landed before the interrupt
    started = ToolOutcome(tool_use_id="toolu_b", name="calculator", content="?", is_error=True, final=False)
    history = store.load_history(KEY)  # the interrupt reads the history ...
    store.claim_tool(ref, started)  # ... then a call with side effects starts (its provisional result)

    settle_calls(store, history.run, "was interrupted")

    assert store.tools[(KEY, 0, "toolu_a")] == done
    assert store.tools[(KEY, 0, "toolu_b")].error_kind is ToolError.UNKNOWN_OUTCOME
    assert store.tools[(KEY, 0, "toolu_b")].final
    assert store.tools[(KEY, 0, "toolu_c")].error_kind is ToolError.RUN_ENDED
    # the started call's real result, when it lands, is dropped: the model was told the outcome is unknown
    late = store.save_tool_result(ref, ToolOutcome(tool_use_id="toolu_b", name="calculator", content="booked"))
    assert late.error_kind is ToolError.UNKNOWN_OUTCOME
