"""How a run ends: finalised by the workflow, failed by its Catch, ended outside it, or cancelled.

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
from functions.agent.models import Run, RunError, RunKey, RunStatus
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
        (an execution's end, reported late) a session that has moved on to another turn is left as it is.

        Without ``call_in_flight`` (Finalize, MarkFailed) no model call can be running: a reservation is
        released at once. With it (a timed-out or stopped execution) the release is scheduled for later,
        once the call can no longer be running (it may still settle the reservation itself).

        The end is announced when this call recorded it, or with ``workflow_end`` (Finalize, MarkFailed, an
        execution that timed out or failed: the step that ended the run recorded its end, and announces nothing)
        whoever recorded it."""
        held = self.store.get_run(key) if call_in_flight else None
        ended = ledger.end_run(
            self.store, key, status, error=error, release=not call_in_flight, now=self._now(), turn=turn
        )
        if not ended and not call_in_flight:  # ended meanwhile (a cancel): no call of this execution is in flight
            current = self.store.get_run(key)
            if current is not None and current.reservation is not None and (turn is None or current.turn == turn):
                ledger.release(self.store, key, current.reservation.step)
        if held is not None and held.reservation is not None and (turn is None or held.turn == turn):
            self._queue().schedule_release(key, held.reservation.step)
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
        ended = ledger.end_run(
            self.store, key, RunStatus.CANCELLED, error=why, release=False, now=self._now(), turn=run.turn
        )
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
            if run.reservation is not None:
                self._queue().schedule_release(key, run.reservation.step)
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
