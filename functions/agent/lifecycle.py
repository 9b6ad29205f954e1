"""How a run ends: finalised by the workflow, failed by its Catch, ended outside it, or cancelled."""

from __future__ import annotations

import json

from functions.agent import ledger
from functions.agent.errors import RunConflictError, RunNotFoundError
from functions.agent.models import Run, RunError, RunKey, RunStatus
from functions.agent.ports import Clock, RunQueue, RunStore, Workflow

MAX_STOP_REASON = 1000  # characters of a cancel's reason a retried stop carries


class Lifecycle:
    def __init__(self, *, store: RunStore, clock: Clock, queue: RunQueue | None = None) -> None:
        self.store, self.clock, self.queue = store, clock, queue

    def end(
        self,
        key: RunKey,
        status: RunStatus,
        error: RunError | None,
        *,
        call_in_flight: bool = False,
        turn: int | None = None,
    ) -> Run:
        """End the run with ``status`` (never overwriting an end already recorded) and return it. With ``turn``
        (an execution's end, reported late) a session that has moved on to another turn is left as it is.

        Without ``call_in_flight`` (Finalize, MarkFailed) no model call can be running: a reservation is
        released at once. With it (a timed-out or stopped execution) the release is scheduled for later,
        once the call can no longer be running (it may still settle the reservation itself)."""
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
        return self._read(key)

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
        return self.end(key, RunStatus.FAILED, reason, turn=turn)

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
        finally:  # whatever stop did: nothing else would free what the run holds
            if run.reservation is not None:
                self._queue().schedule_release(key, run.reservation.step)
        return self._read(key)

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
