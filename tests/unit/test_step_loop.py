"""Several steps in one step invocation (functions/agent/step_loop.py): while every call of a step ran in it, the same
invocation takes the next step, each one a whole StepRunner step (guard, route, reserve, call, settle, fast tools),
until a step needs the Map, the client, ends, waits, or the invocation's caps or remaining time stop it. Its failures:
the Task's own step's errors propagate as before; a later step's retryable error ends the loop at the step before
it; an invocation that died is retried from its first step, replaying what was saved without calling the model."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest

from functions.agent.errors import RetryableModelError, StoreConflictError
from functions.agent.models import (
    AgentConfig,
    Budget,
    ModelRequest,
    ModelResponse,
    Run,
    RunKey,
    RunRequest,
    RunStatus,
    StepDecision,
    StepRef,
    Turn,
)
from functions.agent.step import StepOutcome, StepRunner
from functions.agent.step_loop import STEP_MARGIN_SECONDS, LaterStepFailed, StepLoop, Steps, stop_reason
from functions.agent.tool import IN_STEP_SECONDS, ToolRunner
from functions.tools import ToolRegistry, builtin_registry
from tests.fakes import core
from tests.fakes.clock import FixedClock
from tests.fakes.memory_store import InMemoryRunStore
from tests.fakes.model import ScriptedModel, text_response, tool_response
from tests.fakes.services import RecordingQueue, RecordingWorkflow
from tests.unit.test_in_step_tools import Died, toolbox

TENANT = "acme"
LOOP = StepLoop(max_steps=10, max_seconds=240, call_seconds=150)
PLENTY = 900.0  # seconds an invocation has left


def calc(n: int) -> ModelResponse:
    return tool_response((f"t_{n}", "calculator", {"expression": f"{n}*7"}))


def script(tool_steps: int, answer: str = "done") -> list[ModelResponse | Exception]:
    """``tool_steps`` steps that each ask for one calculator call, then an answer."""
    return [*(calc(n) for n in range(tool_steps)), text_response(answer)]


class World:
    """A run, the StepRunner the step function would build, and its scripted model."""

    def __init__(
        self, *answers: ModelResponse | Exception, budget: Budget | None = None, tools: ToolRegistry | None = None,
        clock: FixedClock | None = None, store: InMemoryRunStore | None = None,
    ) -> None:  # fmt: skip
        self.store = store or InMemoryRunStore()
        self.tools = tools or toolbox({})
        self.model = ScriptedModel(*answers)
        self.clock = clock or FixedClock()
        request = RunRequest(input="go", tools=self.tools.names, **({"budget": budget} if budget else {}))
        self.key = core.submitter(self.store, toolbox=self.tools).submit(TENANT, request).run.key
        self.runner = self.new_runner()

    def new_runner(self) -> StepRunner:
        """A new invocation's (a container's state is in the store only)."""
        tools = ToolRunner(store=self.store, toolbox=self.tools, clock=FixedClock())
        return core.runner(self.store, self.model, toolbox=self.tools, tools=tools, clock=self.clock)

    def steps(self, step: int = 0, *, loop: StepLoop = LOOP, time_left: Callable[[], float] = lambda: PLENTY,
              **kwargs: Any) -> Steps:  # fmt: skip
        return Steps(self.new_runner(), StepRef(self.key, step), loop=loop, time_left=time_left, **kwargs)

    @property
    def run(self) -> Run:
        run = self.store.get_run(self.key)
        assert run is not None
        return run

    def saved_steps(self) -> list[int]:
        return sorted(step for (key, step) in self.store.steps if key == self.key)

    def charged_once(self) -> bool:
        """The run's cost is the sum of its saved steps' costs: no step charged twice, none uncharged."""
        costs = [self.store.steps[(self.key, n)].cost_usd for n in self.saved_steps()]
        return self.run.cost_usd == sum(costs, Decimal(0)) and self.run.completed_steps == len(costs)


def outcomes(steps: Steps) -> list[StepOutcome]:
    taken = list(steps)
    assert all(isinstance(t, StepOutcome) for t in taken)
    return [t for t in taken if isinstance(t, StepOutcome)]


# ------------------------------------------------------------------------------------------ stop conditions


def test_one_invocation_takes_every_step_whose_calls_ran_in_it_and_returns_the_last_ones_state() -> None:
    world = World(*script(4, "28 in all"))
    steps = world.steps()

    taken = outcomes(steps)

    # five model calls, each a step saved and settled on its own, each call run in its step
    assert [o.ref.step for o in taken] == [0, 1, 2, 3, 4] and len(world.model.requests) == 5
    assert [len(o.ran_in_step) for o in taken] == [1, 1, 1, 1, 0]
    assert world.saved_steps() == [0, 1, 2, 3, 4] and world.charged_once()
    assert (steps.taken, steps.stopped) == (5, "finish")
    state = taken[-1].state()
    assert (state["next"], state["status"], state["completed_step"]) == ("finish", "SUCCEEDED", 4)
    # each step's request carries the results its predecessors' calls stored
    last = world.model.requests[-1].messages
    results = [b for m in last if isinstance(m["content"], list) for b in m["content"] if b["type"] == "tool_result"]
    assert [r["content"] for r in results] == ["0", "7", "14", "21"]


def test_the_invocation_stops_after_max_steps_and_the_next_task_goes_on_from_there() -> None:
    world = World(*script(4))
    loop = StepLoop(max_steps=3, max_seconds=240, call_seconds=150)

    first = world.steps(loop=loop)
    taken = outcomes(first)

    assert [o.ref.step for o in taken] == [0, 1, 2] and first.stopped == "max_steps"
    state = taken[-1].state()
    assert (state["next"], state["step"], state["tool_calls"]) == ("step", 3, [])  # Route: the Step task again
    rest = outcomes(world.steps(state["step"], loop=loop))
    assert [o.ref.step for o in rest] == [3, 4] and rest[-1].status is RunStatus.SUCCEEDED and world.charged_once()


def test_the_invocation_starts_no_step_after_max_seconds() -> None:
    world = World(*script(4), clock=FixedClock(tick=timedelta(seconds=30)))  # every clock read: 30 s later
    steps = world.steps(loop=StepLoop(max_steps=10, max_seconds=100, call_seconds=150))

    taken = outcomes(steps)

    assert steps.stopped == "max_seconds" and 1 <= len(taken) < 5
    assert taken[-1].state()["next"] == "step" and world.run.completed_steps == len(taken)


def test_the_invocation_starts_no_step_its_remaining_time_cannot_cover() -> None:
    world = World(*script(4))
    # seconds: after step 0, before step 1's call, after step 1, before step 2's call, after step 2
    left = iter([400.0, 400.0, 300.0, 300.0, 175.0 + IN_STEP_SECONDS + STEP_MARGIN_SECONDS - 1])
    loop = StepLoop(max_steps=10, max_seconds=240, call_seconds=175)
    steps = world.steps(loop=loop, time_left=lambda: next(left))

    taken = outcomes(steps)

    # another step needs a model call's timeout, the in-step tools' time and a margin: 200 s here
    assert loop.step_seconds == 175 + IN_STEP_SECONDS + STEP_MARGIN_SECONDS == 200
    assert [o.ref.step for o in taken] == [0, 1, 2] and steps.stopped == "time_left"
    assert len(world.model.requests) == 3


def test_a_later_step_whose_reads_took_its_calls_time_makes_no_call_and_the_next_task_takes_it() -> None:
    # Given an invocation with time for one more step when step 0 ends, whose step-1 reads then take 30 s
    # (DynamoDB retrying under throttling)
    world = World(*script(3))
    left = {"s": LOOP.step_seconds + 1}
    runner = world.new_runner()
    load = runner.store.load_history

    def slow_load(key: Any) -> Any:
        if world.run.completed_steps == 1:
            left["s"] -= 30
        return load(key)

    runner.store.load_history = slow_load  # type: ignore[method-assign]
    steps = Steps(runner, StepRef(world.key, 0), loop=LOOP, time_left=lambda: left["s"])

    taken = outcomes(steps)

    # Then step 1 reserves nothing and calls nothing: the invocation returns step 0's state, "step" next
    assert [o.ref.step for o in taken] == [0] and steps.stopped == "time_left"
    assert len(world.model.requests) == 1 and world.run.held is None and world.run.completed_steps == 1
    assert taken[-1].state()["next"] == "step" and taken[-1].state()["step"] == 1
    # And the next Task takes it and the rest, each charged once
    rest = outcomes(world.steps(1))
    assert [o.ref.step for o in rest] == [1, 2, 3] and rest[-1].status is RunStatus.SUCCEEDED
    assert world.charged_once() and len(world.model.requests) == 4


def test_the_tasks_own_step_calls_whatever_time_is_left() -> None:
    world = World(*script(1))
    steps = world.steps(time_left=lambda: 1.0)  # Lambda's timeout bounds it: no step of the Task's own is skipped

    taken = outcomes(steps)

    assert [o.ref.step for o in taken] == [0] and steps.stopped == "time_left" and len(world.model.requests) == 1


def test_a_step_that_fell_back_or_changed_a_circuit_ends_the_invocation() -> None:
    # Given a run whose model's circuit is open (its fallback's closed)
    from functions.agent.breaker import Breaker
    from functions.agent.circuit import CircuitConfig
    from tests.unit.test_circuit import MemoryCircuits

    world = World(*script(3))
    breaker = Breaker(MemoryCircuits(), CircuitConfig(failure_threshold=1), now=lambda: 100.0)
    breaker.failed(f"anthropic:{world.run.model}")
    breaker.take_report()
    tools = ToolRunner(store=world.store, toolbox=world.tools, clock=FixedClock())
    runner = core.runner(world.store, world.model, toolbox=world.tools, tools=tools, breaker=breaker)
    steps = Steps(runner, StepRef(world.key, 0), loop=LOOP, time_left=lambda: PLENTY)

    taken = outcomes(steps)

    # Then the step that fell back is the invocation's last: the workflow's backoff paces the next one
    assert [o.ref.step for o in taken] == [0] and taken[0].fallback and steps.stopped == "provider_trouble"
    assert taken[0].state()["next"] == "step"


def test_a_step_with_calls_for_the_map_ends_the_invocation() -> None:
    world = World(calc(0), tool_response(("t_look", "look", {}), ("t_calc", "calculator", {"expression": "1+1"})))
    steps = world.steps()

    taken = outcomes(steps)

    assert [o.ref.step for o in taken] == [0, 1] and steps.stopped == "tools"
    state = taken[-1].state()
    assert [c["id"] for c in state["tool_calls"]] == ["t_look"] and state["completed_step"] == 1


def test_a_retry_after_wait_ends_the_invocation_in_a_wait_state() -> None:
    world = World(calc(0), RetryableModelError("slow down", kind="throttled", retry_after=3), text_response("ok"))
    steps = world.steps()

    taken = outcomes(steps)

    assert [o.decision for o in taken] == [StepDecision.TOOLS, StepDecision.WAIT] and steps.stopped == "wait"
    state = taken[-1].state()
    assert (state["next"], state["step"], state["wait_seconds"], state["waits"]) == ("wait", 1, 3, 1)
    # after the Wait state the Task takes step 1, as the wait's count
    done = outcomes(world.steps(1, waits=1))
    assert done[-1].status is RunStatus.SUCCEEDED and world.charged_once()


def test_a_run_limit_ends_the_invocation_as_it_ends_the_run() -> None:
    world = World(*script(5), budget=Budget(max_steps=3))
    steps = world.steps()

    taken = outcomes(steps)

    assert [o.ref.step for o in taken] == [0, 1, 2, 3] and len(world.model.requests) == 3
    assert taken[-1].status is RunStatus.BUDGET_EXCEEDED and taken[-1].error.code == "MAX_STEPS"  # type: ignore[union-attr]
    assert steps.stopped == "finish"


def test_one_step_an_invocation_is_the_workflow_as_before() -> None:
    world = World(*script(2))
    steps = world.steps(loop=StepLoop(max_steps=1))

    assert [o.ref.step for o in outcomes(steps)] == [0] and steps.stopped == "max_steps"


def test_without_in_step_an_executions_calls_all_go_to_the_map_and_nothing_loops() -> None:
    world = World(*script(2))  # an execution of a definition from before the fast calls ran in the step

    taken = outcomes(world.steps(in_step=False))

    assert len(taken) == 1 and taken[0].state()["next"] == "tools" and taken[0].ran_in_step == []


def test_the_stop_rules_in_order() -> None:
    world = World(calc(0))
    goes_on = outcomes(world.steps(loop=StepLoop(max_steps=1)))[0]
    assert goes_on.next == "step"
    assert stop_reason(LOOP, goes_on, 1, 0, PLENTY) is None
    assert stop_reason(LOOP, goes_on, 10, 0, PLENTY) == "max_steps"
    assert stop_reason(LOOP, goes_on, 2, 240, PLENTY) == "max_seconds"
    assert stop_reason(LOOP, goes_on, 2, 0, LOOP.step_seconds - 0.5) == "time_left"
    with pytest.raises(ValueError, match="at least one step"):
        StepLoop(max_steps=0)


# ------------------------------------------------------------------------------------------ cancels, turns


class Hook:
    """Runs ``action`` once, at the loop's ``when``-th question of the time left: it asks after each step (whether
    to take another) and again before each further step's model call (``Steps._may_call``), so ``when`` 3 is between
    the invocation's second and third steps."""

    def __init__(self, when: int, action: Callable[[], None]) -> None:
        self.when, self.action, self.asked = when, action, 0

    def __call__(self) -> float:
        self.asked += 1
        if self.asked == self.when:
            self.action()
        return PLENTY


def test_a_cancel_between_steps_is_seen_by_the_next_steps_guard_which_calls_no_model() -> None:
    world = World(*script(6))
    cancel = Hook(3, lambda: core.lifecycle(world.store).cancel(world.key, RecordingWorkflow()))
    steps = world.steps(time_left=cancel)

    taken = outcomes(steps)

    assert [o.ref.step for o in taken] == [0, 1, 2] and len(world.model.requests) == 2
    assert taken[-1].status is RunStatus.CANCELLED and steps.stopped == "finish"
    assert world.run.status is RunStatus.CANCELLED and world.charged_once()


class CancellingModel(ScriptedModel):
    """Cancels the run while it answers call ``at`` (the cancel lands while the model works)."""

    def __init__(self, store: InMemoryRunStore, key: Callable[[], RunKey], at: int, *script: Any) -> None:
        super().__init__(*script)
        self.store, self.key, self.at = store, key, at

    def create(self, request: ModelRequest) -> ModelResponse:
        if len(self.requests) == self.at:
            core.lifecycle(self.store, RecordingQueue()).cancel(self.key(), RecordingWorkflow())
        return super().create(request)


def test_a_cancel_while_the_model_answers_settles_that_call_and_takes_no_further_step() -> None:
    world = World()
    world.model = CancellingModel(world.store, lambda: world.key, 2, *script(6))
    steps = world.steps()

    taken = outcomes(steps)

    # the call in flight is billed and recorded (its calls never run), and the invocation ends there
    assert len(world.model.requests) == 3 and taken[-1].status is RunStatus.CANCELLED and steps.stopped == "finish"
    assert world.saved_steps() == [0, 1, 2] and world.charged_once() and world.run.held is None
    assert (world.key, 2, "t_2") in world.store.tools  # the end's error result, not a run
    assert world.store.tools[(world.key, 2, "t_2")].is_error


SESSION = RunKey(TENANT, "sesn_0000000000000000000000000a")
T0 = "2026-11-21T12:00:00.000+00:00"


def session(store: InMemoryRunStore, turn: int, first_step: int, max_steps: int) -> None:
    store.runs[SESSION] = Run(
        run_id=SESSION.run_id, tenant=TENANT, status=RunStatus.RUNNING, input="", model="claude-haiku-4-5",
        tools=["calculator"], budget=Budget(max_steps=max_steps), agent=AgentConfig(), session={"rev": turn},
        turns=[Turn(first_step=first_step, started_at=T0) for _ in range(turn)], created_at=T0, updated_at=T0,
        completed_steps=first_step,
    )  # fmt: skip


def session_steps(store: InMemoryRunStore, model: ScriptedModel, step: int, turn: int, time_left: Any) -> Steps:
    tools = ToolRunner(store=store, toolbox=builtin_registry(), clock=FixedClock())
    runner = core.runner(store, model, toolbox=builtin_registry(), tools=tools)
    return Steps(runner, StepRef(SESSION, step), loop=LOOP, time_left=time_left, execution=f"{SESSION.run_id}_t{turn}")


def test_a_sessions_turn_loops_within_its_own_step_limit() -> None:
    store = InMemoryRunStore()
    session(store, turn=2, first_step=0, max_steps=3)
    model = ScriptedModel(*script(5))

    taken = outcomes(session_steps(store, model, 0, 2, lambda: PLENTY))

    # the turn's limit (3 steps) refuses the fourth step, as a Task of its own would have been refused
    assert [o.ref.step for o in taken] == [0, 1, 2, 3] and len(model.requests) == 3
    assert taken[-1].status is RunStatus.BUDGET_EXCEEDED


def test_once_the_session_moved_on_to_its_next_turn_the_old_turns_loop_ends_without_a_call() -> None:
    store = InMemoryRunStore()
    session(store, turn=2, first_step=0, max_steps=25)
    model = ScriptedModel(*script(5))

    def next_turn() -> None:  # interrupted, and the client's next message started turn 3
        run = store.runs[SESSION]
        turns = [*run.turns, Turn(first_step=run.completed_steps, started_at=T0)]
        store.runs[SESSION] = run.model_copy(update={"turns": turns, "session": {"rev": 3}})

    taken = outcomes(session_steps(store, model, 0, 2, Hook(3, next_turn)))

    assert [o.ref.step for o in taken] == [0, 1, 2] and len(model.requests) == 2
    assert taken[-1].error is not None and taken[-1].error.code == "TURN_ENDED"
    assert store.get_step(SESSION, 2) is None


# ------------------------------------------------------------------------------------------ failures


def test_the_tasks_own_step_raises_a_retryable_error_for_step_functions_to_retry() -> None:
    world = World(RetryableModelError("overloaded", kind="overloaded"), *script(1))

    with pytest.raises(RetryableModelError):
        list(world.steps())

    retried = world.steps(attempt=1)  # Step Functions' retry of the Task
    assert [o.ref.step for o in outcomes(retried)] == [0] and retried.stopped == "retried"
    assert world.run.completed_steps == 1 and world.charged_once()


@pytest.mark.parametrize("error", [RetryableModelError("overloaded", kind="overloaded"),
                                   StoreConflictError("the run kept changing")])  # fmt: skip
def test_a_later_steps_retryable_error_ends_the_loop_at_the_step_before_it(error: Exception) -> None:
    world = World(calc(0), calc(1), error, calc(2), text_response("done"))
    if isinstance(error, StoreConflictError):  # it is the settlement that fails, after the model answered
        world.model = ScriptedModel(calc(0), calc(1), calc(2), text_response("done"))
        world.store = ConflictOnce(world.store, step=2)
    steps = world.steps()

    taken = list(steps)

    # steps 0 and 1 are completed; the failure of step 2 is reported, not raised: Step Functions retries nothing
    assert [t.ref.step for t in taken] == [0, 1, 2] and isinstance(taken[-1], LaterStepFailed)
    assert type(taken[-1].error) is type(error)
    last = taken[-2]
    assert isinstance(last, StepOutcome) and steps.stopped == "failed"
    assert (last.state()["next"], last.state()["step"], last.state()["completed_step"]) == ("step", 2, 1)
    held = world.run.held
    assert held is not None and held.step == 2  # the failed step's reservation, kept for the next Task
    # the next Task takes step 2: it holds that reservation (not reserved again), or settles the stored answer
    rest = outcomes(world.steps(2))
    assert [o.ref.step for o in rest] == [2, 3] and rest[-1].status is RunStatus.SUCCEEDED
    assert world.charged_once() and world.run.held is None
    assert len(world.model.requests) == 4 + isinstance(error, RetryableModelError)


class ConflictOnce(InMemoryRunStore):
    """The settlement of ``step`` keeps losing its race (the adapter's retries spent): StoreConflictError once."""

    def __init__(self, inner: InMemoryRunStore, *, step: int) -> None:
        super().__init__()
        self.__dict__.update(inner.__dict__)
        self.step, self.failed = step, False

    def apply(self, plan: Any) -> Any:
        if plan.record is not None and plan.record.step == self.step and not self.failed:
            self.failed = True
            raise StoreConflictError("the run kept changing")
        return super().apply(plan)


class DyingStore(InMemoryRunStore):
    """The invocation dies once: after step ``step``'s answer is stored (``after_answer``) or as it is settled."""

    def __init__(self, inner: InMemoryRunStore, *, step: int, where: str) -> None:
        super().__init__()
        self.__dict__.update(inner.__dict__)
        self.step, self.where, self.died = step, where, False

    def _die(self, step: int, where: str) -> None:
        if step == self.step and where == self.where and not self.died:
            self.died = True
            raise Died(f"died at step {step}, {where}")

    def save_pending(self, key: RunKey, step: int, response: ModelResponse) -> None:
        self._die(step, "before_answer")
        super().save_pending(key, step, response)
        self._die(step, "after_answer")


@pytest.mark.parametrize("where", ["before_answer", "after_answer"])
def test_an_invocation_that_died_mid_loop_is_retried_from_its_first_step_replaying_what_was_saved(where: str) -> None:
    world = World(*script(5))
    world.store = DyingStore(world.store, step=3, where=where)

    with pytest.raises(Died):  # steps 0-2 saved, step 3's call made
        list(world.steps())
    assert world.saved_steps() == [0, 1, 2] and len(world.model.requests) == 4
    if where == "before_answer":  # the answer was lost: the retry calls the model again (the provider billed both)
        world.model.script.insert(0, calc(3))

    retried = world.steps(attempt=1)  # Step Functions retries the Task with its original input: step 0
    taken = outcomes(retried)

    # steps 0-2 replayed (no model call, their calls' results stored: no Map), step 3 taken, then a Task of its own
    assert [(o.ref.step, o.replayed) for o in taken] == [(0, True), (1, True), (2, True), (3, False)]
    assert all(o.state()["tool_calls"] == [] and o.ran_in_step == [] for o in taken[:3])
    assert retried.stopped == "retried" and taken[-1].state()["step"] == 4
    assert len(world.model.requests) == (5 if where == "before_answer" else 4)
    assert world.saved_steps() == [0, 1, 2, 3] and world.charged_once()
    rest = outcomes(world.steps(4))
    assert rest[-1].status is RunStatus.SUCCEEDED and world.charged_once()


def test_a_replayed_step_whose_call_has_no_result_leaves_it_to_the_map_which_does_not_run_it_twice() -> None:
    counts: dict[str, int] = {}
    dying = {"stamp"}
    world = World(calc(0), tool_response(("t_stamp", "stamp", {})), text_response("done"),
                  tools=toolbox(counts, dying))  # fmt: skip

    with pytest.raises(Died):  # step 1's fast call with side effects did its work, then the invocation died
        list(world.steps())

    retried = world.steps(attempt=1)
    taken = outcomes(retried)

    assert [(o.ref.step, o.replayed) for o in taken] == [(0, True), (1, True)] and retried.stopped == "tools"
    state = taken[-1].state()
    assert [c["id"] for c in state["tool_calls"]] == ["t_stamp"] and state["completed_step"] == 1
    stamp = ToolRunner(store=world.store, toolbox=world.tools).run(StepRef(world.key, 1), "t_stamp")
    assert stamp.error_kind is not None and counts == {"stamp": 1}  # outcome unknown: never run again
    assert len(world.model.requests) == 2


def test_a_replayed_step_whose_calls_all_have_final_results_goes_straight_on() -> None:
    world = World(tool_response(("t_a", "calculator", {"expression": "1+1"}), ("t_b", "calculator",
                                                                                {"expression": "2+2"})))  # fmt: skip
    first = outcomes(world.steps(loop=StepLoop(max_steps=1)))[0]
    assert first.state()["next"] == "step" and len(first.ran_in_step) == 2

    again = world.new_runner().run(StepRef(world.key, 0), in_step=True)  # a duplicate invocation of step 0

    assert again.replayed and again.state()["next"] == "step" and again.state()["tool_calls"] == []


def test_after_a_retrys_replays_the_first_step_it_takes_afresh_is_the_tasks_own_and_its_errors_propagate() -> None:
    world = World(*script(3))
    world.store = DyingStore(world.store, step=2, where="before_answer")
    with pytest.raises(Died):
        list(world.steps())
    world.model.script.insert(0, RetryableModelError("overloaded", kind="overloaded"))

    # the retry replays steps 0 and 1, then step 2's call fails: Step Functions retries the Task (with backoff)
    with pytest.raises(RetryableModelError):
        list(world.steps(attempt=1))
    world.model.script.insert(0, calc(2))
    taken = outcomes(world.steps(attempt=2))

    assert [(o.ref.step, o.replayed) for o in taken] == [(0, True), (1, True), (2, False)]
    assert world.run.held is None and world.saved_steps() == [0, 1, 2] and world.charged_once()


def test_a_superseded_cheap_answer_is_redone_in_the_same_invocation() -> None:
    # Given a run on the "balanced" policy: the strong model plans, the cheap one drafts an answer (superseded)
    store = InMemoryRunStore()
    request = RunRequest(input="6*7?", model="balanced", tools=["calculator"])
    key = core.submitter(store).submit(TENANT, request).run.key
    model = ScriptedModel(calc(6), text_response("draft: 42"), text_response("6 * 7 = 42"))
    tools = ToolRunner(store=store, toolbox=builtin_registry(), clock=FixedClock())
    steps = Steps(core.runner(store, model, tools=tools), StepRef(key, 0), loop=LOOP, time_left=lambda: PLENTY)

    taken = outcomes(steps)

    # Then the redo (Route: "redo" -> Step) is the invocation's next step, as "step" is
    assert [o.decision for o in taken] == [StepDecision.TOOLS, StepDecision.REDO, StepDecision.FINISH]
    assert [o.next for o in taken] == ["step", "redo", "finish"] and steps.stopped == "finish"
    assert [r.model for r in model.requests] == ["claude-sonnet-5-5", "claude-haiku-4-5", "claude-sonnet-5-5"]
