"""A session's turns are fenced: a Lambda, an execution or a watch of an earlier turn never writes into the next
one (the core's rules, applied by the in-memory store like DynamoDB applies them)."""

from __future__ import annotations

from functions.agent.models import AgentConfig, Budget, Run, RunKey, RunStatus, StepDecision, StepRef, Turn
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
