"""Several steps of a run in one invocation of the step function, with a checkpoint after each.

A step whose calls all ran in it (``StepOutcome.next`` is ``step``; or ``redo``, a superseded cheap answer) would
have the workflow's Route send the run straight back to its Step task: two state transitions and a new invocation
for nothing but a jump. Instead the same invocation takes the run's next step, through the same ``StepRunner.run``
(guard, route, reserve, call, settle, the fast tools it asked for), and so on. Each step is saved and settled on its
own exactly as a step the workflow started would be: its settlement is the checkpoint, and a step taken here is the
step the next Task would have taken (the same guard sees a cancel, an interrupt, a stale turn, a run's or turn's
limits; the same reservation, circuit, response-cache and near-cap rules apply).

The invocation stops, and the workflow goes on from the last step's state (``StepOutcome.state``), when:
- a step does not go straight on: calls left for the Tools map, a session's calls waiting for its client, the end of
  the run or turn (finished, failed, refused by a budget, cancelled or interrupted: its guard saw it), a
  retry-after wait (a Wait state waits, not a Lambda);
- it has taken ``StepLoop.max_steps`` steps, or ``StepLoop.max_seconds`` have passed since it began;
- the invocation's remaining time would not cover another step at its worst: a model call's timeout, the fast tool
  calls of a step (IN_STEP_SECONDS) and a margin for reading and settling.

Errors and retries. The Task's own step behaves as when an invocation took one step: its errors propagate, and Step
Functions retries it (``RetryableModelError``, ``StoreConflictError``; its retry count is the step's ``attempt``, which
orders its fallbacks) or catches it (``MarkFailed``). An invocation that dies (a timeout, out of memory) is retried
with its original input: the retry replays the steps saved since (no model call; a replayed step whose calls all have
their final result goes straight on, not through the Map), and the first step it takes afresh is the Task's own step
in that sense (it gets the retry count, its errors propagate). A retry stops after that step, so the steps after it
get a Task, and retries, of their own. A step after the Task's own that fails with an error the workflow retries ends
the loop instead: the state is the last completed step's, whose next step (the failed one) the next Task takes,
holding or reusing the reservation it made (``StepRunner._guard``) and settling an answer it stored; so Step
Functions never retries a completed step for it. Anything else a later step raises propagates as the first step's
would.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from functions.agent.errors import RETRIED_BY_WORKFLOW, NoTimeForCallError
from functions.agent.models import StepRef
from functions.agent.step import StepOutcome, StepRunner
from functions.agent.tool import IN_STEP_SECONDS

GOES_ON = frozenset({"step", "redo"})  # the ``next`` of a step after which Route would take the next step at once
# beyond a step's model call and fast tools: reading the run, the reservation, the settling transaction (each a few
# DynamoDB requests, retried in place), with room to spare
STEP_MARGIN_SECONDS = 15.0
SETTLE_SECONDS = 5.0  # of that margin, what settling a step takes after its call, at most (checked before the call)


@dataclass(frozen=True)
class StepLoop:
    """How many steps one invocation may take in a row (README "What a step costs"). ``max_steps`` 1: one step an
    invocation, as before the loop."""

    max_steps: int = 10
    max_seconds: float = 120.0  # no step starts after this long into the invocation
    call_seconds: float = 150.0  # a model call's timeout (the client's)

    def __post_init__(self) -> None:
        if self.max_steps < 1 or self.max_seconds <= 0 or self.call_seconds <= 0:
            raise ValueError(f"a step loop takes at least one step, for a positive time: {self}")

    @property
    def step_seconds(self) -> float:
        """The longest one step can take: what the invocation must have left to start another."""
        return worst_step_seconds(self.call_seconds)


def worst_step_seconds(call_seconds: float, margin: float = STEP_MARGIN_SECONDS) -> float:
    """The longest a step takes whose model call times out after ``call_seconds``, and then runs its fast tools;
    ``margin``: what it takes besides (after the call only: SETTLE_SECONDS)."""
    return call_seconds + IN_STEP_SECONDS + margin


@dataclass(frozen=True)
class LaterStepFailed:
    """A step after the invocation's first failed with an error the workflow retries: the loop ended at the step
    before it (``StepOutcome`` last yielded), and the workflow's next Task takes it again."""

    ref: StepRef
    error: Exception


class Steps:
    """The steps one invocation takes: iterate to take them. Step ``ref`` first, then each next step while the last
    goes straight on, each as ``runner.run`` takes it; each outcome is yielded once settled (its metrics and logs
    are the caller's), then at most one ``LaterStepFailed``. The last ``StepOutcome`` yielded is the workflow's next
    state. When an outcome is yielded, ``stopped`` says whether another step follows (None) or why none does (see
    ``stop_reason``; ``retried``: see below; ``failed``: a later step failed).

    ``time_left``: the seconds the invocation has left (Lambda's ``get_remaining_time_in_millis`` / 1000).
    ``attempt`` and ``waits`` are the first step's (Step Functions' retry count and retry-after waits of the step
    the Task was given); ``in_step``: the workflow goes on without its Tools map (``StepRunner.run``)."""

    def __init__(
        self,
        runner: StepRunner,
        ref: StepRef,
        *,
        loop: StepLoop,
        time_left: Callable[[], float],
        attempt: int = 0,
        waits: int = 0,
        execution: str | None = None,
        in_step: bool = True,
    ) -> None:
        self.runner, self.ref, self.loop, self.time_left = runner, ref, loop, time_left
        self.attempt, self.waits, self.execution, self.in_step = attempt, waits, execution, in_step
        self.taken = 0
        self.stopped: str | None = None

    def __iter__(self) -> Iterator[StepOutcome | LaterStepFailed]:
        runner, ref = self.runner, self.ref
        began = runner.clock.now()
        fresh = False  # a step not replayed has been taken: the one the Task's retry count and waits are of
        while True:
            try:  # until then, every step is given them (a replayed step ignores them)
                outcome = runner.run(ref, attempt=0 if fresh else self.attempt, waits=0 if fresh else self.waits,
                                     execution=self.execution, in_step=self.in_step,
                                     may_call=self._may_call if fresh else None)  # fmt: skip
            except NoTimeForCallError:  # reading and routing the step took what its call needed: the next Task's
                self.stopped = "time_left"
                return
            except RETRIED_BY_WORKFLOW as exc:
                if not fresh:  # the Task's own step: Step Functions retries it
                    raise
                self.stopped = "failed"
                yield LaterStepFailed(ref, exc)
                return
            fresh = fresh or not outcome.replayed
            self.taken += 1
            elapsed = (runner.clock.now() - began).total_seconds()
            changed = bool(runner.breaker and runner.breaker.transitions)
            self.stopped = stop_reason(self.loop, outcome, self.taken, elapsed, self.time_left(), changed)
            if self.stopped is None and self.attempt and fresh:  # a retry takes the step it is for, then leaves
                self.stopped = "retried"  # the steps after it to a Task of their own, with retries of their own
            yield outcome  # (``stopped`` says by then whether another step follows)
            if self.stopped is not None:
                return
            ref = StepRef(ref.key, outcome.next_step)

    def _may_call(self) -> bool:
        """A later step still has time for its model call and fast tools once it has read and routed (which may
        have taken long: DynamoDB retries), with room left to settle."""
        return self.time_left() >= worst_step_seconds(self.loop.call_seconds, margin=SETTLE_SECONDS)


def stop_reason(
    loop: StepLoop, outcome: StepOutcome, taken: int, elapsed: float, left: float, circuits_changed: bool = False
) -> str | None:
    """Why the invocation takes no step after ``outcome`` (its ``taken``-th, ``elapsed`` seconds after it began,
    with ``left`` seconds to live, ``circuits_changed`` if a circuit changed state in it); None: it takes the next."""
    if outcome.next not in GOES_ON:
        return outcome.next  # the Map, the client, the end, a wait: the workflow's
    if outcome.fallback or circuits_changed:  # a provider is failing: the workflow's backoff paces the next step
        return "provider_trouble"
    if taken >= loop.max_steps:
        return "max_steps"
    if elapsed >= loop.max_seconds:
        return "max_seconds"
    if left < loop.step_seconds:
        return "time_left"
    return None
