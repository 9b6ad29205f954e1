"""How a run ends: finalised by the workflow, failed by its Catch, ended outside it, or cancelled.

Every end first gives each tool call the ending turn left without a result its error result (``settle_calls``),
then writes the status over the run as it read it: a result that comes after the end is dropped, so nothing appears
in the events (functions/agent/sessions.py) behind a reader that has seen the end.

Every end is announced here, to the tenant's webhooks (functions/agent/webhooks.py), by whoever records it; the
workflow's own end (Finalize, MarkFailed, or an execution that timed out or failed before reaching them) announces
again an end the step recorded before it. An announcement is
one queue message, never awaited by a step and never an error of the run; one made twice is the same event (the
same ``webhook-id``), which receivers drop.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from functions.agent import ledger
from functions.agent.errors import RunConflictError, RunNotFoundError
from functions.agent.models import (
    Run,
    RunError,
    RunKey,
    RunStatus,
    StepDecision,
    StepRecord,
    StepRef,
    ToolCall,
    ToolError,
    ToolOutcome,
)
from functions.agent.ports import Clock, RunQueue, RunStore, Workflow

if TYPE_CHECKING:
    from functions.agent.webhooks import WebhookNotifier

MAX_STOP_REASON = 1000  # characters of a cancel's reason a retried stop carries


class Lifecycle:
    def __init__(
        self, *, store: RunStore, clock: Clock, queue: RunQueue | None = None, notifier: WebhookNotifier | None = None
    ) -> None:
        """``notifier``: announces ends to the tenant's webhooks (None: the deployment has no webhooks)."""
        self.store, self.clock, self.queue, self.notifier = store, clock, queue, notifier

    def end(
        self,
        key: RunKey,
        status: RunStatus,
        error: RunError | None,
        *,
        call_in_flight: bool = False,
        turn: int | None = None,
        workflow_end: bool = False,
    ) -> Run:
        """End the run with ``status`` (never overwriting an end already recorded) and return it. With ``turn``
        (an execution's end, reported late) a session that has moved on to another turn is left as it is. The
        tool calls the ending turn left without a result get their error result first (``settle_calls``).

        Without ``call_in_flight`` (Finalize, MarkFailed) no model call can be running: a reservation is
        released at once. With it (a timed-out or stopped execution) the release is scheduled for later,
        once the call can no longer be running (it may still settle the reservation itself).

        The end is announced when this call recorded it, or with ``workflow_end`` (Finalize, MarkFailed, an
        execution that timed out or failed: the step that ended the run recorded its end, and announces nothing)
        whoever recorded it."""
        ended = ledger.end_run(
            self.store, key, status, error=error, release=not call_in_flight, now=self._now(), turn=turn,
            before=lambda run: settle_calls(self.store, run, ended_how(run, status, error)),
        )  # fmt: skip
        # What the ended run holds now: the reservation the end was written over (an end retried when a step
        # reserved meanwhile holds that step's), unless its call has settled it since; once ended, nothing reserves
        run = self._read(key)
        held = run.held if run.status.terminal and (turn is None or run.turn == turn) else None
        if held is not None and call_in_flight:  # freed once its call can no longer be running (or it settles)
            self._queue().schedule_release(key, held.step)
        elif held is not None and not ended:  # ended meanwhile (a cancel): no call of this execution is in flight
            ledger.release(self.store, key, held.step)
            run = self._read(key)
        if ended or workflow_end:
            self._announce(run, turn)
        return run

    def fail(self, key: RunKey, error: str | None, cause: str | None, *, turn: int | None = None) -> Run:
        """The workflow's Catch: the run ends FAILED with the error and the last step it completed."""
        current = self.store.get_run(key)
        reason = failure_reason(error, cause)
        if current is not None:
            done = (
                f"after step {current.completed_steps - 1}"
                if current.completed_steps
                else "before its first step completed"
            )
            reason = reason.model_copy(update={"message": f"{reason.message} ({done})"})
        return self.end(key, RunStatus.FAILED, reason, turn=turn, workflow_end=True)

    def cancel(
        self, key: RunKey, workflow: Workflow, *, reason: str = "cancelled by request", turn: int | None = None
    ) -> Run:
        """Cancel a run. A reservation it holds may cover a model call still in flight: it stays until that
        call settles it, or until the delayed release (after the call can no longer be running) frees it.

        Raises:
            RunNotFoundError, RunConflictError (the run already ended, also while this was applied).
        """
        run = self.store.get_run(key)
        if run is None:
            raise RunNotFoundError(key.run_id)
        if run.status.terminal or (turn is not None and run.turn != turn):
            raise RunConflictError(f"run {key.run_id} already ended with status {run.status.value}")
        why = RunError(code="CANCELLED", message=reason)
        read: list[Run] = []

        def settle(current: Run) -> None:  # the run its end is written over (what it holds is released later)
            read[:] = [current]
            settle_calls(self.store, current, ended_how(current, RunStatus.CANCELLED, why))

        ended = ledger.end_run(
            self.store, key, RunStatus.CANCELLED, error=why, release=False, now=self._now(), turn=run.turn,
            before=settle,
        )  # fmt: skip
        if not ended:
            current = self.store.get_run(key)
            status = current.status.value if current else "unknown"
            raise RunConflictError(f"run {key.run_id} already ended with status {status}")
        try:
            workflow.stop(run.execution_name, reason)
        except Exception as exc:  # whatever the workflow's adapter raised (throttled, unavailable, denied)
            # The run is CANCELLED (what every reader sees, and what ends its execution at its next step); its
            # execution is stopped from the queue, retried until done (the queue's adapter logs why). Only if
            # that cannot be queued either does the caller get an error, and still the next step ends it.
            failure = f"{type(exc).__name__}: {exc}"
            self._queue().schedule_stop(key, run.execution_name, reason[:MAX_STOP_REASON], why=failure)
        finally:  # whatever stop did: the end is announced, and nothing else would free what the run holds
            self._announce(self.store.get_run(key), run.turn)
            if (held := read[-1].held) is not None:
                self._queue().schedule_release(key, held.step)
        return self._read(key)

    def _announce(self, run: Run | None, turn: int | None) -> None:
        """Tell the tenant's webhooks the run (its ``turn``, if given: not a later one) ended; never raises."""
        if self.notifier is not None and run is not None and (turn is None or run.turn == turn):
            self.notifier.ended(run)

    def _read(self, key: RunKey) -> Run:
        run = self.store.get_run(key)
        if run is None:
            raise RunNotFoundError(key.run_id)
        return run

    def _queue(self) -> RunQueue:
        if self.queue is None:
            raise RuntimeError("this function was not given the intake queue (STEPWISE_QUEUE_URL)")
        return self.queue

    def _now(self) -> str:
        return self.clock.now().isoformat(timespec="milliseconds")


def ended_how(run: Run, status: RunStatus, error: RunError | None) -> str:
    """How the run (a session's turn) ended, as a call left without a result is told: "the turn <how> before ..."."""
    if status is RunStatus.CANCELLED:
        if error is None or error.code != "CANCELLED":  # its execution was stopped outside Stepwise
            return "was stopped"
        return "was interrupted" if run.turns else "was cancelled"  # a session's turn is cancelled by an interrupt
    return {RunStatus.TIMED_OUT: "timed out", RunStatus.FAILED: "failed",
            RunStatus.BUDGET_EXCEEDED: "reached its budget"}.get(status, "ended")  # fmt: skip


def turn_calls(run: Run, record: StepRecord) -> list[ToolCall]:
    """The calls of ``record`` (the run's last step) that the run's current turn runs itself: the calls of its own
    step that the deployment runs (a session's client answers the others: they wait for it, they are not left
    running), and the calls a person approved that the turn began with (they are the turn's events)."""
    if record.decision not in (StepDecision.TOOLS, StepDecision.ACTION):
        return []
    began_with = {
        str(call["id"]) for call in (run.turns[-1].tools if run.turns else []) if int(call["step"]) == record.step
    }
    own = record.step >= run.turn_first_step
    return [
        call for call in record.tool_calls()
        if call.id in began_with or (own and not (run.agent is not None and run.agent.needs_client(call.name)))
    ]  # fmt: skip


def settle_calls(store: RunStore, run: Run, how: str, record: StepRecord | None = None) -> None:
    """Give each call the run's current turn runs at its last step (``record``, read if not given) and that has no
    final result the end's error result, before the end is written. A result is written only where none is: one
    that landed first stays, and a call that has not started finds this one and does not run. A call with side
    effects that had started (its provisional result) is of unknown outcome, and so is a Lambda tool's with side
    effects (``_invoked_unseen``). A final result is never replaced, so whatever a call reports after the end is
    dropped: the events a reader saw at the end are all there will be.

    Raises whatever the store raises (the end is then not written; its invoker retries)."""
    if record is None:
        record = store.get_step(run.key, run.completed_steps - 1) if run.completed_steps else None
    if record is None:
        return
    what = "the turn" if run.turns else "the run"
    ref = StepRef(run.key, record.step)
    for call in turn_calls(run, record):
        ended = ToolOutcome(
            tool_use_id=call.id, name=call.name, is_error=True, error_kind=ToolError.RUN_ENDED,
            content=f"{what} {how} before this call returned: it did not run, or (if it was already running) its "
                    "outcome is unknown; it is not run again",
        )  # fmt: skip
        if _invoked_unseen(run, call):
            unseen = (f"{what} {how} before this call returned: its outcome is unknown (its function may have been "
                      "invoked, and had its effect), and it is not run again")  # fmt: skip
            ended = ended.model_copy(update={"content": unseen, "error_kind": ToolError.UNKNOWN_OUTCOME})
        stored = store.claim_tool(ref, ended)
        if stored is not None and not stored.final:
            unknown = (f"{what} {how} while this call ran: its outcome is unknown (it may have had its effect), and it "
                       "is not run again")  # fmt: skip
            store.save_tool_result(ref, ended.model_copy(update={"content": unknown,
                                                                 "error_kind": ToolError.UNKNOWN_OUTCOME}))  # fmt: skip


def _invoked_unseen(run: Run, call: ToolCall) -> bool:
    """Whether the call is of a Lambda tool with side effects: the workflow's Map invokes its function itself, with
    nothing stored first (a Python or MCP tool's provisional result), and may do so until its execution has stopped,
    after the end: that it did not run is never known."""
    tool = run.agent.lambda_tool(call.name) if run.agent is not None else None
    return tool is not None and not tool.idempotent


def failure_reason(error: str | None, cause: str | None) -> RunError:
    """Turn a Step Functions Catch (Error, Cause) into a run error a person can read."""
    message = cause or ""
    try:
        parsed = json.loads(message)
        if isinstance(parsed, dict):
            message = str(parsed.get("errorMessage") or parsed.get("Cause") or message)
    except (TypeError, ValueError):
        pass
    return RunError(code=error or "UNKNOWN", message=(message or "the workflow failed without a cause")[:1000])
