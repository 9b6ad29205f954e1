"""Whatever ends a turn (or a /runs run), and whenever its tool calls land around that end, an event never appears
behind one already shown: a stream (the ``Follower``, which sends only ids after its cursor) sends exactly what the
list shows once everything has landed, each event once. Every ordering of the calls' landings, the end at every
point between and during them, for every way a turn ends, on the in-memory store with the core's own use cases.
And what the model is given next has a result for every call, the one the events show."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import pytest
from pydantic import BaseModel

from functions.agent.conversation import build_conversation
from functions.agent.errors import RetryableModelError
from functions.agent.killswitch import KillSwitch
from functions.agent.lifecycle import Lifecycle
from functions.agent.models import (
    AgentConfig,
    Budget,
    CustomTool,
    LambdaTool,
    Run,
    RunError,
    RunKey,
    RunRequest,
    RunStatus,
    StepRef,
    ToolCall,
    ToolError,
    ToolOutcome,
    Turn,
    UserEvent,
)
from functions.agent.ports import RunHistory
from functions.agent.sessions import TurnInterrupts, event_id, run_events, session_events
from functions.agent.streams import IDLE, Follower, StreamLimits
from functions.agent.tool import ToolRunner
from functions.tools import Tool, ToolRegistry, builtin_registry
from tests.fakes import core
from tests.fakes.clock import FixedClock
from tests.fakes.memory_store import InMemoryRunStore
from tests.fakes.model import ScriptedModel, tool_response
from tests.fakes.services import RecordingQueue, RecordingWorkflow

T0 = "2026-11-21T12:00:00.000+00:00"
AGENT = AgentConfig(
    custom_tools=[CustomTool(name="get_weather", description="d", input_schema={"type": "object"})], ask=["book"]
)


class Nothing(BaseModel):
    pass


class Toolbox(ToolRegistry):
    """The deployment's tools; ``during[call id]`` runs while that call executes (the end, landing mid-call)."""

    def __init__(self) -> None:
        super().__init__([
            *builtin_registry().tools,
            Tool(name="book", description="side effects", input_model=Nothing, fn=lambda _: "booked",
                 idempotent=False),
            Tool(name="look", description="read-only", input_model=Nothing, fn=lambda _: "looked"),
        ])  # fmt: skip
        self.during: dict[str, Callable[[], None]] = {}

    def execute(self, call: ToolCall, allowed: Any) -> ToolOutcome:
        self.during.pop(call.id, lambda: None)()
        return super().execute(call, allowed)


class Store(InMemoryRunStore):
    """The in-memory run store with the user events a session keeps beside its run (what the DynamoDB session
    store writes for an interrupt), so an interrupt shows as it does on AWS."""

    def __init__(self) -> None:
        super().__init__()
        self.user_events: dict[str, UserEvent] = {}

    def load_history(self, key: RunKey) -> RunHistory:
        history = super().load_history(key)
        history.user_events = [event for _, event in sorted(self.user_events.items())]
        return history

    def save_interrupt(self, key: RunKey, event: UserEvent) -> bool:
        return self.user_events.setdefault(event.id, event) is event

    def delete_event(self, key: RunKey, event_id: str) -> None:
        self.user_events.pop(event_id, None)


@dataclass
class World:
    """One run or session whose turn is running its tool calls."""

    store: Store
    key: RunKey
    toolbox: Toolbox
    execution: str
    session: bool
    ran: list[str]  # the calls Stepwise runs (in any turn): each ends with one result event
    waits_for: list[str] = field(default_factory=list)  # calls the turn leaves to its client (not late)
    landings: list[tuple[str, str, Callable[[], Any]]] = field(default_factory=list)  # (call, how, the Map's task)
    queue: RecordingQueue = field(default_factory=RecordingQueue)  # what its ends schedule (delayed releases)

    def land(self, *calls: tuple[str, str]) -> World:
        self.landings = [(call, how, _land(self, call, how)) for call, how in calls]
        return self

    @property
    def turn(self) -> int | None:
        return self.store.runs[self.key].turn if self.session else None

    def events(self) -> list[dict[str, Any]]:
        return (session_events if self.session else run_events)(self.store, self.key)


def _land(world: World, call_id: str, how: str) -> Callable[[], Any]:
    runner = ToolRunner(store=world.store, toolbox=world.toolbox)
    ref = StepRef(world.key, world.store.runs[world.key].completed_steps - 1)
    if how == "failed":  # the Map caught its invocation's failure (RecordToolFailure)
        failure = {"Error": "States.Timeout", "Cause": "the tool function timed out"}
        return lambda: runner.record_failure(ref, call_id, failure, execution=world.execution)
    return lambda: runner.run(ref, call_id, execution=world.execution)  # RunTool


def a_run() -> World:
    """A /runs run whose step 0 asked for three calls: read-only, with side effects, and one whose invocation fails."""
    store, toolbox = Store(), Toolbox()
    run = core.submitter(store, toolbox=toolbox).submit("acme", RunRequest(input="go", tools=["look", "book"])).run
    model = ScriptedModel(tool_response(("t_look", "look", {}), ("t_book", "book", {}), ("t_fail", "look", {})))
    core.runner(store, model, toolbox=toolbox).run(StepRef(run.key, 0))
    world = World(store, run.key, toolbox, run.run_id, session=False, ran=["t_book", "t_fail", "t_look"])
    return world.land(("t_look", "run"), ("t_book", "run"), ("t_fail", "failed"))


def _session(
    store: Store, *, turns: list[Turn], steps: int = 0, status: RunStatus = RunStatus.QUEUED, agent: AgentConfig = AGENT
) -> Run:
    run = Run(
        run_id="sesn_0000000000000000000000000a", tenant="acme", status=status, input="", model="claude-haiku-4-5",
        tools=["look", "book"], budget=Budget(max_steps=25), agent=agent, session={"rev": len(turns), "approved": []},
        turns=turns, completed_steps=steps, created_at=T0, updated_at=T0,
    )  # fmt: skip
    store.create_run(run)
    return run


def a_session_turn() -> World:
    """A session's first turn whose step asked for calls the deployment runs, one a person must confirm and one the
    client runs: it runs the first ones, then waits for its client."""
    store, toolbox = Store(), Toolbox()
    run = _session(store, turns=[Turn(first_step=0, started_at=T0)])
    calls = (("t_look", "look", {}), ("t_book2", "book", {}), ("t_weather", "get_weather", {}), ("t_fail", "look", {}))
    model = ScriptedModel(tool_response(*calls))
    core.runner(store, model, toolbox=toolbox).run(StepRef(run.key, 0), execution=run.execution_name)
    world = World(store, run.key, toolbox, run.execution_name, session=True, ran=["t_fail", "t_look"],
                  waits_for=["t_book2", "t_weather"])  # fmt: skip
    return world.land(("t_look", "run"), ("t_fail", "failed"))


def a_turn_that_begins_with_approved_calls() -> World:
    """A session's second turn, begun with the two calls a person allowed (of the first turn's last step)."""
    store, toolbox = Store(), Toolbox()
    first = _session(store, turns=[Turn(first_step=0, started_at=T0)])
    model = ScriptedModel(tool_response(("t_look", "look", {}), ("t_book", "book", {}), ("t_book2", "book", {})))
    core.runner(store, model, toolbox=toolbox).run(StepRef(first.key, 0), execution=first.execution_name)
    ToolRunner(store=store, toolbox=toolbox).run(StepRef(first.key, 0), "t_look", execution=first.execution_name)
    core.lifecycle(store).end(first.key, RunStatus.IDLE, None, turn=1, workflow_end=True)  # requires_action
    approved = [{"id": call, "name": "book", "step": 0} for call in ("t_book", "t_book2")]
    idle = store.runs[first.key]
    turns = [idle.turns[0].model_copy(update={"ended_status": RunStatus.IDLE, "ended_at": T0}),
             Turn(first_step=1, started_at=T0, tools=approved)]  # fmt: skip
    store.runs[first.key] = idle.model_copy(update={"turns": turns, "status": RunStatus.RUNNING})
    for index, call in enumerate(("t_book", "t_book2")):
        store.user_events[event_id(2, 0, 2, index)] = UserEvent(
            id=event_id(2, 0, 2, index), type="user.tool_confirmation", turn=2, processed_at=T0,
            body={"tool_use_id": call, "result": "allow"},
        )  # fmt: skip
    world = World(store, first.key, toolbox, store.runs[first.key].execution_name, session=True,
                  ran=["t_book", "t_book2", "t_look"])  # fmt: skip
    return world.land(("t_book", "run"), ("t_book2", "failed"))


# ------------------------------------------------------------------------------------------- the endings


def _lifecycle(world: World) -> Lifecycle:
    return core.lifecycle(world.store, world.queue)


def _finalize(world: World) -> None:  # the workflow's Finalize: the turn waits for its client, or it is done
    status = RunStatus.IDLE if world.waits_for else RunStatus.SUCCEEDED
    _lifecycle(world).end(world.key, status, None, turn=world.turn, workflow_end=True)


def _budget(world: World) -> None:  # the next step's guard refused it (Finalize records it)
    error = RunError(code="MAX_STEPS", message="max_steps=1 reached")
    _lifecycle(world).end(world.key, RunStatus.BUDGET_EXCEEDED, error, turn=world.turn, workflow_end=True)


def _mark_failed(world: World) -> None:  # the Catch: the Tools map or a step failed (retries exhausted)
    _lifecycle(world).fail(world.key, "States.Runtime", "the Tools map failed", turn=world.turn)


def _timed_out(world: World) -> None:  # workflow_ended: the execution timed out
    error = RunError(code="RUN_TIMEOUT", message="the run exceeded the workflow's timeout")
    _lifecycle(world).end(world.key, RunStatus.TIMED_OUT, error, call_in_flight=True, turn=world.turn,
                          workflow_end=True)  # fmt: skip


def _execution_failed(world: World) -> None:  # workflow_ended: the execution failed outside the Catch
    error = RunError(code="WORKFLOW_FAILED", message="the workflow execution failed")
    _lifecycle(world).end(world.key, RunStatus.FAILED, error, turn=world.turn, workflow_end=True)


def _stopped_outside(world: World) -> None:  # workflow_ended: someone stopped the execution in the console
    error = RunError(code="EXECUTION_STOPPED", message="the workflow execution was stopped")
    _lifecycle(world).end(world.key, RunStatus.CANCELLED, error, call_in_flight=True, turn=world.turn)


def _watchdog(world: World) -> None:  # the run watchdog finds no execution: STUCK
    core.intake(world.store, RecordingWorkflow(), world.queue).watch(world.key, turn=world.turn or 0)


def _kill(world: World) -> None:  # the kill switch: a run is cancelled, a session's turn interrupted
    lifecycle, workflow = _lifecycle(world), RecordingWorkflow()
    interrupts = TurnInterrupts(store=world.store, sessions=world.store, lifecycle=lifecycle, workflow=workflow)  # type: ignore[arg-type]
    kill = KillSwitch(store=world.store, interrupts=interrupts, lifecycle=lifecycle, workflow=workflow,
                      clock=FixedClock())  # fmt: skip
    assert kill.stop(world.key, reason="stopped by the operator").outcome == "stopped"


def _interrupt(world: World) -> None:  # the client's user.interrupt (a /runs run: POST /runs/{id}/cancel)
    lifecycle, workflow = _lifecycle(world), RecordingWorkflow()
    if not world.session:
        lifecycle.cancel(world.key, workflow)
        return
    interrupts = TurnInterrupts(store=world.store, sessions=world.store, lifecycle=lifecycle, workflow=workflow)  # type: ignore[arg-type]
    interrupts.interrupt(world.store.load_history(world.key), T0)


ENDINGS: dict[str, Callable[[World], None]] = {
    "end_turn or requires_action (Finalize)": _finalize,
    "budget_reached": _budget,
    "retries_exhausted (MarkFailed)": _mark_failed,
    "TIMED_OUT": _timed_out,
    "the execution FAILED": _execution_failed,
    "the execution stopped outside Stepwise": _stopped_outside,
    "STUCK (the watchdog)": _watchdog,
    "the kill switch": _kill,
    "an interrupt or a cancel": _interrupt,
}
WORLDS: dict[str, Callable[[], World]] = {
    "a /runs run": a_run,
    "a session's turn": a_session_turn,
    "a turn begun with approved calls": a_turn_that_begins_with_approved_calls,
}


def schedules(world: World, end: Callable[[], None]) -> list[tuple[str, list[Callable[[], Any]]]]:
    """Every order of the landings, with the end before each, during each that executes a tool, or after all."""
    found = []
    for order in itertools.permutations(world.landings):
        calls, actions = [call for call, _, _ in order], [land for _, _, land in order]
        for at in range(len(order) + 1):
            found.append((f"{calls}, the end before #{at}", [*actions[:at], end, *actions[at:]]))
            if at < len(order) and order[at][1] == "run":
                found.append((f"{calls}, the end during #{at}", [*actions[:at], _arm(world, calls[at], end),
                                                                  *actions[at:]]))  # fmt: skip
    return found


def _arm(world: World, call: str, end: Callable[[], None]) -> Callable[[], None]:
    """The end happens while ``call`` executes (its invocation is running when the turn ends)."""
    return lambda: world.toolbox.during.__setitem__(call, end)


def follow(world: World, actions: list[Callable[[], Any]]) -> list[dict[str, Any]]:
    """What a stream opened now sends while ``actions`` happen, one between each of its polls, until it ends (at a
    run's idle) or every action has happened; the actions it did not wait for happen after it ended."""
    clock, left = [0.0], list(actions)

    def sleep(seconds: float) -> None:
        if left:
            left.pop(0)()
        clock[0] += seconds if left else 1_000_000  # then past its time limit

    limits = StreamLimits(poll_seconds=1, ping_seconds=1e9, max_seconds=1e5, idle_seconds=1e9)
    ends_at_idle = not world.session  # a run's idle ends its stream: nothing can follow it
    follower = Follower(world.events, after=None, limits=limits, monotonic=lambda: clock[0], sleep=sleep,
                        last=lambda event: ends_at_idle and event["type"] == IDLE)  # fmt: skip
    sent = [frame.event for frame in follower.frames() if frame.event is not None]
    for action in left:
        action()
    return sent


@pytest.mark.parametrize("ending", ENDINGS)
@pytest.mark.parametrize("subject", WORLDS)
def test_no_event_appears_behind_one_already_shown_however_the_turn_ends(subject: str, ending: str) -> None:
    count = len(schedules(WORLDS[subject](), lambda: None))
    assert count > len(WORLDS[subject]().landings) + 1  # every order of the landings, the end before, during, after
    for index in range(count):
        # Given a fresh run or session, and a stream opened while its turn runs its calls
        world = WORLDS[subject]()
        name, actions = schedules(world, lambda world=world: ENDINGS[ending](world))[index]
        where = f"{subject}, {ending}: {name}"
        opened_at = world.events()[-1]["id"]
        # When the calls land and the turn ends in this order (the landings after the end are late)
        sent = follow(world, actions)
        # Then the stream sent, once each and in order, exactly what the list shows once everything has landed
        listed = world.events()
        assert sent == [event for event in listed if event["id"] > opened_at], where
        # And the turn ended: every call Stepwise ran has one result event, the calls left to the client none
        history = world.store.load_history(world.key)
        assert history.run.status.terminal and history.run.held is None and listed[-1]["type"] == IDLE, where
        uses = {e["id"]: e["tool_use_id"] for e in listed if e["type"] in ("agent.tool_use", "agent.custom_tool_use")}
        results = [uses[e["tool_use_id"]] for e in listed if e["type"] == "agent.tool_result"]
        assert sorted(results) == world.ran, where
        assert all((0, call) not in history.tool_results for call in world.waits_for), where
        if listed[-1]["stop_reason"]["type"] == "requires_action":
            waited = listed[-1]["stop_reason"]["event_ids"]
            assert sorted(uses[event_id] for event_id in waited) == world.waits_for, where
        # And the conversation the next turn sends has a result for every call: the one the events show
        _same_results_as_the_model_sees(history, listed, uses)


def _same_results_as_the_model_sees(history: RunHistory, listed: list[dict[str, Any]], uses: dict[str, str]) -> None:
    sent_results = {
        block["tool_use_id"]: block["content"]
        for message in build_conversation(history)
        if message["role"] == "user" and isinstance(message["content"], list)
        for block in message["content"]
        if block["type"] == "tool_result"
    }
    assert sorted(sent_results) == sorted(uses.values())
    for event in listed:
        if event["type"] == "agent.tool_result":
            assert event["content"][0]["text"] == sent_results[uses[event["tool_use_id"]]]


def test_what_a_call_left_running_is_told_names_how_the_turn_ended() -> None:
    # Given a /runs run's step whose read-only call is running and whose call with side effects has started
    world = a_run()
    started = ToolOutcome(tool_use_id="t_book", name="book", content="?", is_error=True, final=False)
    world.store.claim_tool(StepRef(world.key, 0), started)
    # When the execution times out
    _timed_out(world)
    # Then the one that had not returned did not run or is of unknown outcome, the started one is of unknown outcome
    results = world.store.load_history(world.key).tool_results
    assert (results[(0, "t_look")].error_kind, results[(0, "t_look")].content) == (
        ToolError.RUN_ENDED,
        "the run timed out before this call returned: it did not run, or (if it was already running) its outcome "
        "is unknown; it is not run again",
    )
    assert results[(0, "t_book")].error_kind is ToolError.UNKNOWN_OUTCOME and results[(0, "t_book")].final
    assert results[(0, "t_book")].content.startswith("the run timed out while this call ran: its outcome is unknown")
    # And what they report later is dropped: the caller gets what the model was told
    late = ToolRunner(store=world.store, toolbox=world.toolbox).run(StepRef(world.key, 0), "t_look")
    assert late == results[(0, "t_look")]


def test_a_step_the_model_answered_after_its_turn_ended_comes_with_its_calls_results() -> None:
    # Given a session's turn whose model call is in flight (holding its reservation) when the turn is interrupted
    store, toolbox = Store(), Toolbox()
    run = _session(store, turns=[Turn(first_step=0, started_at=T0)])
    world = World(store, run.key, toolbox, run.execution_name, session=True, ran=["t_look"])

    class AnswersAfterTheInterrupt(ScriptedModel):
        def create(self, request: Any) -> Any:
            _interrupt(world)
            return super().create(request)

    model = AnswersAfterTheInterrupt(tool_response(("t_look", "look", {}), ("t_weather", "get_weather", {})))
    runner = core.runner(store, model, toolbox=toolbox)
    opened_at = world.events()[-1]["id"]
    # When the answer is settled late, and the delayed release comes
    sent = follow(world, [lambda: runner.run(StepRef(run.key, 0), execution=run.execution_name),
                          lambda: core.intake(store).release(run.key, 0)])  # fmt: skip
    # Then a stream that saw the idle saw the step, its call's interrupted result, then the interrupt and the idle
    listed = world.events()
    assert sent == [event for event in listed if event["id"] > opened_at]
    types = [event["type"] for event in sent]
    assert types[-2:] == ["user.interrupt", IDLE] and "agent.tool_result" in types
    (result,) = [event for event in sent if event["type"] == "agent.tool_result"]
    assert result["content"][0]["text"].startswith("the turn was interrupted before this call returned")
    # And the model's next conversation has that result, and a placeholder for the client's call nobody asked for
    history = store.load_history(run.key)
    assert store.get_run(run.key).held is None  # type: ignore[union-attr]
    assert history.tool_results[(0, "t_look")].error_kind is ToolError.RUN_ENDED
    assert (0, "t_weather") not in history.tool_results
    assert Decimal(history.run.cost_usd) > 0  # the billed call is charged


def test_an_end_a_step_settled_under_is_read_again_and_settles_that_steps_calls_too() -> None:
    # Given a run whose first calls have landed, and whose next step settles (asking for another call) just after a
    # cancel read the run, before the cancel's end is written
    world = a_run()
    for _, _, land in world.landings:
        land()
    runner = core.runner(world.store, ScriptedModel(tool_response(("t_next", "look", {}))), toolbox=world.toolbox)
    get_step, settled = world.store.get_step, []

    def step_settles_first(key: RunKey, step: int) -> Any:
        if not settled:  # the cancel's end has read the run (1 step) and settles the calls of its last step
            settled.append(runner.run(StepRef(key, 1)))
        return get_step(key, step)

    world.store.get_step = step_settles_first  # type: ignore[method-assign]
    opened_at = world.events()[-1]["id"]
    # When the run is cancelled, then the Tools map (not yet stopped) runs the new step's call
    late = ToolRunner(store=world.store, toolbox=world.toolbox)
    sent = follow(world, [lambda: _interrupt(world), lambda: late.run(StepRef(world.key, 1), "t_next")])
    # Then the end was written over the run as it was then (2 steps), with the new call's result
    assert settled[0].decision.value == "tools" and world.store.runs[world.key].completed_steps == 2
    assert world.store.runs[world.key].status is RunStatus.CANCELLED
    result = world.store.tools[(world.key, 1, "t_next")]
    assert result.error_kind is ToolError.RUN_ENDED and result.content.startswith("the run was cancelled before")
    # And the stream saw all of it, the new step and its result before the idle
    listed = world.events()
    assert sent == [event for event in listed if event["id"] > opened_at]
    assert [event["type"] for event in sent] == [
        "span.model_request_start", "agent.tool_use", "span.model_request_end", "agent.tool_result", IDLE,
    ]  # fmt: skip


@pytest.mark.parametrize("ending", ["TIMED_OUT", "the execution stopped outside Stepwise", "STUCK (the watchdog)"])
def test_an_end_that_leaves_a_call_in_flight_releases_the_reservation_it_was_written_over(ending: str) -> None:
    # Given a run whose first calls have landed, and whose next step reserves just after an end that may leave a
    # model call in flight (its execution timed out or was stopped, or the watchdog found none) read the run; the
    # step's call then fails retryably, and nothing retries it: its execution has ended
    world = a_run()
    for _, _, land in world.landings:
        land()
    overloaded = ScriptedModel(RetryableModelError("overloaded", kind="overloaded"))
    runner = core.runner(world.store, overloaded, toolbox=world.toolbox)
    get_step, reserved = world.store.get_step, []

    def step_reserves_first(key: RunKey, step: int) -> Any:
        if not reserved:  # the end has read the run (holding nothing) and settles the calls of its last step
            reserved.append(step)
            with pytest.raises(RetryableModelError):
                runner.run(StepRef(key, 1))
        return get_step(key, step)

    world.store.get_step = step_reserves_first  # type: ignore[method-assign]
    # When the run ends (written over the run as read again: holding step 1's reservation), and the delayed
    # releases it scheduled come
    ENDINGS[ending](world)
    ended = world.store.runs[world.key]
    assert reserved and ended.status.terminal and ended.held is not None and ended.held.step == 1
    for key, step in world.queue.releases:
        core.intake(world.store).release(key, step)
    # Then what step 1 reserved was released: the run holds nothing, and nothing stays committed beyond its spend
    assert world.store.runs[world.key].held is None
    assert world.store.committed(ended.tenant, ended.held.day) == (ended.cost_usd, ended.cost_usd)


def test_a_lambda_tool_with_side_effects_that_an_end_leaves_without_a_result_is_of_unknown_outcome() -> None:
    # Given a session's turn whose step asked for two Lambda tools, one with side effects: the workflow's Map invokes
    # their functions itself, and nothing is stored before it does (a Python tool's provisional result)
    store, toolbox = Store(), Toolbox()
    lambdas = [
        LambdaTool(name="refund", description="d", input_schema={}, function="refund-order"),
        LambdaTool(name="rate", description="d", input_schema={}, function="rates", idempotent=True),
    ]
    run = _session(
        store, turns=[Turn(first_step=0, started_at=T0)], agent=AGENT.model_copy(update={"lambda_tools": lambdas})
    )
    model = ScriptedModel(tool_response(("t_refund", "refund", {}), ("t_rate", "rate", {})))
    core.runner(store, model, toolbox=toolbox).run(StepRef(run.key, 0), execution=run.execution_name)
    world = World(store, run.key, toolbox, run.execution_name, session=True, ran=["t_rate", "t_refund"])
    # When the turn is interrupted, then the Map (its execution not stopped yet) reports what the refund returned
    _interrupt(world)
    late = ToolRunner(store=store, toolbox=toolbox).record_lambda_result(
        StepRef(run.key, 0), "t_refund", {"refund_id": "RF-1"}, execution=run.execution_name
    )
    # Then the model is told the refund's outcome is unknown (it may have been invoked), never that it did not run
    results = store.load_history(run.key).tool_results
    assert (results[(0, "t_refund")].error_kind, results[(0, "t_refund")].content) == (
        ToolError.UNKNOWN_OUTCOME,
        "the turn was interrupted before this call returned: its outcome is unknown (its function may have been "
        "invoked, and had its effect), and it is not run again",
    )
    assert late == results[(0, "t_refund")]  # what it returned after the end is dropped
    # And the idempotent one, which may simply be asked for again, is told it did not run or is of unknown outcome
    assert results[(0, "t_rate")].error_kind is ToolError.RUN_ENDED
