"""Intake: start each run's execution once, watch that it keeps moving, release what ended runs hold."""

from __future__ import annotations

from typing import Any

from functions.agent import ledger
from functions.agent.lifecycle import Lifecycle
from functions.agent.models import Run, RunError, RunKey, RunStatus, ToolCall
from functions.agent.ports import RunQueue, RunStore, Workflow
from functions.agent.tool import workflow_calls

ENDED_BY_EXECUTION = {"TIMED_OUT": RunStatus.TIMED_OUT, "ABORTED": RunStatus.CANCELLED}


def start_state(run: Run) -> dict[str, Any]:
    """The input of the run's execution: its first step, or for a session's turn that begins with the calls a
    person approved, those calls first (of the step that asked for them, the last one)."""
    state: dict[str, Any] = {
        "tenant": run.tenant, "run_id": run.run_id, "step": run.completed_steps, "waits": 0, "next": "step",
    }  # fmt: skip
    if run.turns:
        state["turn"] = run.turn
        approved = run.turns[-1].tools
        if approved:
            calls = [ToolCall(id=call["id"], name=call["name"], input=call.get("input") or {}) for call in approved]
            state.update(
                next="tools", tool_calls=workflow_calls(calls, run.agent), completed_step=run.completed_steps - 1
            )
    return state


class Intake:
    def __init__(self, *, store: RunStore, workflow: Workflow, queue: RunQueue, lifecycle: Lifecycle) -> None:
        self.store, self.workflow, self.queue, self.lifecycle = store, workflow, queue, lifecycle

    def start(self, key: RunKey, *, last_attempt: bool = False) -> str:
        """Start the run's execution once. Returns what happened, for the log.

        On the last delivery before the dead-letter queue a failure to start also ends the run, with the
        reason, so no run waits in QUEUED for a workflow that will never come."""
        run = self.store.get_run(key)
        if run is None:
            return "missing"
        if run.status is not RunStatus.QUEUED:
            return f"skipped:{run.status.value}"
        try:
            started = self.workflow.start(key, name=run.execution_name, state=start_state(run))
        except Exception as exc:
            if last_attempt:
                reason = RunError(code="INTAKE_FAILED", message=f"the workflow could not be started: {exc}"[:1000])
                self.lifecycle.end(key, RunStatus.FAILED, reason)
            raise
        self.queue.schedule_watch(key, turn=run.turn)  # a watchdog for the run: it must keep moving or end
        return "started" if started else "duplicate"

    def watch(self, key: RunKey, *, turn: int = 0) -> str:
        """Stuck-run detection. A run that has not ended must have a running execution; if its execution is
        gone or ended without ending the run (a lost event, a failed finaliser), the run ends here with why.
        A session's watch is of one turn: once the session has moved on, it is over."""
        run = self.store.get_run(key)
        if run is None or run.status.terminal or run.turn != turn:
            return "ended"
        execution = self.workflow.status(run.execution_name)
        if execution == "RUNNING":
            self.queue.schedule_watch(key, turn=turn)
            return "running"
        status = ENDED_BY_EXECUTION.get(execution or "", RunStatus.FAILED)
        what = f"its execution ended {execution}" if execution else "it has no execution"
        reason = RunError(code="STUCK", message=f"the run was {run.status.value} but {what}; ended by the run watchdog")
        self.lifecycle.end(key, status, reason, call_in_flight=True, turn=turn if run.turns else None)
        return f"stuck:{execution}"

    def stop(self, execution: str, reason: str) -> str:
        """A cancelled run's execution, stopped again (the cancel's own StopExecution failed); raises to be retried."""
        self.workflow.stop(execution, reason)
        return "stopped"

    def release(self, key: RunKey, step: int) -> str:
        """The delayed release of an ended run's reservation (its call, if any, can no longer be running)."""
        return "released" if ledger.release(self.store, key, step) else "nothing held"
