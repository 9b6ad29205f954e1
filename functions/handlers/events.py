"""Payloads the workflow passes between states: ids and decisions only, never conversation."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from functions.agent.lifecycle import MAX_STOP_REASON
from functions.agent.models import RunError, RunKey, RunStatus, StepRef, turn_of


class RunRef(BaseModel):
    model_config = ConfigDict(defer_build=True)
    tenant: str = Field(min_length=1)
    run_id: str = Field(min_length=1)
    execution: str | None = None  # $$.Execution.Name: which turn of a session the task belongs to

    @property
    def key(self) -> RunKey:
        return RunKey(self.tenant, self.run_id)

    @property
    def execution_turn(self) -> int | None:
        """The session turn of the task's execution (None: the payload did not say)."""
        return turn_of(self.execution) if self.execution else None


class IntakeMessage(RunRef):
    """A run to start, or (with ``release_step``) a reservation to release once its call cannot be running."""

    release_step: int | None = Field(default=None, ge=0)
    watch: bool = False  # a watchdog check of a started run
    turn: int = Field(default=0, ge=0)  # the session turn it watches
    stop_execution: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_-]{1,80}$")  # a cancel's stop, retried
    reason: str = Field(default="", max_length=MAX_STOP_REASON)


class StepEvent(RunRef):
    step: int = Field(ge=0)
    attempt: int = Field(default=0, ge=0)  # Step Functions' retry count of this step ($$.State.RetryCount)
    waits: int = Field(default=0, ge=0)  # consecutive retry-after waits of this step
    # the workflow goes on without its Tools map when the step ran every call itself (infra/constructs/workflow.py
    # sets it; an execution of an earlier definition does not, and gets every call in the Map)
    in_step: bool = False

    @property
    def ref(self) -> StepRef:
        return StepRef(self.key, self.step)


class Failure(BaseModel):
    model_config = ConfigDict(defer_build=True)
    Error: str | None = None
    Cause: str | None = None


class ToolEvent(StepEvent):
    """A call to run; or (from a Lambda tool's branch of the Tools map) what the function returned, or the failure
    the map caught (its function died, a Lambda tool raised, the tool function itself kept failing)."""

    tool_use_id: str = Field(min_length=1)
    result: Any = None
    ran: bool = False  # a Lambda tool ran: ``result`` is its payload
    started: datetime | None = None  # when the map began invoking it
    failure: Failure | None = None


class FinalizeEvent(RunRef):
    status: RunStatus
    error: RunError | None = None


class MarkFailedEvent(RunRef):
    failure: Failure = Field(default_factory=Failure)
