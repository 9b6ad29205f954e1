"""Keep what moto's Step Functions remembers of finished executions bounded, on a local stack that runs for days.

moto keeps every execution it ran, whole: its record (name, status, input, output, dates) and its interpreter's
environment, whose event history is most of it (a 2-step run's: 25 events, ~30 KB in memory; a history grows by
about ten events a step). Step Functions keeps histories for 90 days; a local stack that ran thousands of runs
would keep them all in its one process.

Here every execution's record is kept (DescribeExecution, ListExecutions and a StartExecution under a used name
answer as before: the intake's exactly-once start relies on the last), and so are the event histories of the last
``keep`` finished executions (and of every running one). An older finished execution's history is pruned: a
GetExecutionHistory of it fails with the error code ``ExecutionHistoryPruned``, whose message says how many are
kept and how to keep more. It never answers with an empty or partial history.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

DEFAULT_HISTORIES = 100  # finished executions whose event histories are kept (`stepwise local --histories`)
SETTLED = timedelta(seconds=1)  # an execution stopped this long ago has published its last event
_PRUNED = "_stepwise_history_pruned"


def is_pruned(execution: Any) -> bool:
    return hasattr(execution, _PRUNED)


def pruned_message(keep: int) -> str:
    return (
        f"the local stack keeps the event histories of the last {keep} finished executions and this one's was "
        "pruned (its status, input and output remain: DescribeExecution); keep more with "
        "`stepwise local --histories N`"
    )


def install() -> None:
    """A pruned execution's GetExecutionHistory fails with ExecutionHistoryPruned (idempotent)."""
    from moto.core.exceptions import AWSError
    from moto.stepfunctions.parser.backend.execution import Execution

    if getattr(Execution.to_history_output, "_stepwise", False):
        return
    original = Execution.to_history_output

    class ExecutionHistoryPruned(AWSError):
        TYPE = "ExecutionHistoryPruned"
        STATUS = 400

    def to_history_output(self: Any) -> Any:
        keep = getattr(self, _PRUNED, None)
        answer = original(self) if keep is None else None
        keep = getattr(self, _PRUNED, None)  # checked again: pruned while it was read
        if keep is not None:
            raise ExecutionHistoryPruned(pruned_message(keep))
        return answer

    to_history_output._stepwise = True  # type: ignore[attr-defined]
    Execution.to_history_output = to_history_output  # type: ignore[method-assign]


def prune(keep: int, now: datetime | None = None) -> int:
    """Drop the event histories of the finished executions older than the last ``keep`` (in every account and
    region moto serves); returns how many were pruned by this call."""
    from moto.stepfunctions.parser.models import stepfunctions_parser_backends

    now = now or datetime.now(UTC)
    finished: list[Any] = []
    for account in list(stepfunctions_parser_backends.values()):
        for backend in list(account.values()):
            for machine in list(backend.state_machines):
                finished.extend(
                    e for e in list(machine.executions)
                    if e.stop_date is not None and not is_pruned(e) and now - e.stop_date >= SETTLED
                )  # fmt: skip
    finished.sort(key=lambda execution: execution.stop_date)
    # the executions already pruned all stopped before any kept one: the kept ones are the latest `keep`
    dropped = finished[: max(len(finished) - keep, 0)]
    for execution in dropped:
        setattr(execution, _PRUNED, keep)  # first: a reader that sees the history emptied sees the mark too
        worker = execution.exec_worker
        env = getattr(worker, "env", None)
        if env is not None:
            events = env.event_manager
            with events._mutex:
                events._history_event_list = []
    return len(dropped)
