"""Ports: what the core needs from the outside world. Adapters implement them."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Protocol

from functions.agent.budgets import BudgetLimits
from functions.agent.circuit import Circuit
from functions.agent.models import (
    ModelRequest,
    ModelResponse,
    Reservation,
    Run,
    RunError,
    RunStatus,
    StepRecord,
    ToolOutcome,
)
from functions.agent.spend import SpendRow


class ModelClient(Protocol):
    """One Messages API call.

    Raises:
        RetryableModelError: throttling, overload, 5xx, timeouts.
        FatalModelError: bad request, auth, spend limit.
    """

    provider: str

    def create(self, request: ModelRequest) -> ModelResponse: ...


class Clock(Protocol):
    def now(self) -> datetime: ...


@dataclass
class RunHistory:
    """Everything persisted about one run: the run item, its steps in order and its tool results."""

    run: Run
    steps: list[StepRecord] = field(default_factory=list)
    tool_results: dict[tuple[int, str], ToolOutcome] = field(default_factory=dict)
    # model answers stored before their step was settled (a settlement that must be retried)
    pending: dict[int, ModelResponse] = field(default_factory=dict)


class RunStore(ABC):
    """Persistence of runs, steps and tool results. Every key is tenant-scoped."""

    @abstractmethod
    def create_run(self, run: Run) -> None:
        """Raises RunAlreadyExistsError if the run id is taken."""

    @abstractmethod
    def get_run(self, tenant: str, run_id: str) -> Run | None: ...

    @abstractmethod
    def load_history(self, tenant: str, run_id: str) -> RunHistory:
        """Raises RunNotFoundError."""

    @abstractmethod
    def get_step(self, tenant: str, run_id: str, step: int) -> StepRecord | None: ...

    @abstractmethod
    def reserve(
        self, run: Run, reservation: Reservation, limits: BudgetLimits, *, replacing: Reservation | None = None
    ) -> Reservation:
        """Hold ``reservation`` against the run's ``max_usd`` and the tenant's and global daily budgets, atomically.
        Returns the reservation held for the step (a duplicate invocation's, if it got there first). With
        ``replacing`` the run's held reservation becomes this one and only the difference is charged to the
        budgets (the step was re-routed to a fallback model).

        Raises:
            BudgetRefusedError: a budget cannot take it (code MAX_USD, TENANT_DAILY_BUDGET or GLOBAL_DAILY_BUDGET).
            RunNotActiveError: the run ended or moved on.
        """

    @abstractmethod
    def save_pending(self, run: Run, step: int, response: ModelResponse) -> None:
        """Store the model's answer before settling it, so a failed settlement never loses a billed call."""

    @abstractmethod
    def release_reservation(self, tenant: str, run_id: str, step: int) -> bool:
        """Release the reservation of ``step`` if the run ended and still holds it. Returns whether it did."""

    @abstractmethod
    def save_step(self, run: Run, record: StepRecord, output: str | None, *, require_active: bool = True) -> None:
        """Persist the step and settle its cost, atomically: the step record, the run's totals, the tenant's
        day and day-by-model totals and the global day total; the run's reservation becomes the real cost.

        With ``require_active=False`` the step is recorded and charged on a run that already ended (a call the
        provider billed after a cancellation, whose reservation was released) without touching its status.

        Raises:
            StepAlreadySavedError: the step was saved before (a retried or duplicated invocation).
            RunNotActiveError: the run is in a terminal status (only with ``require_active``).
        """

    @abstractmethod
    def spend_rows(self, tenant: str, first_day: str, last_day: str) -> list[SpendRow]:
        """The tenant's spend counters for the days in [first_day, last_day]: day, day x model, day x run."""

    @abstractmethod
    def committed_today(self, tenant: str, day: str) -> tuple[Decimal, Decimal]:
        """Spent plus reserved USD on ``day``: (the tenant's, everyone's)."""

    @abstractmethod
    def load_tool_context(
        self, tenant: str, run_id: str, step: int, tool_use_id: str
    ) -> tuple[Run | None, StepRecord | None, ToolOutcome | None]:
        """The run, the step that asked for the tool and the stored result if any, in one read."""

    @abstractmethod
    def save_tool_result(self, tenant: str, run_id: str, step: int, outcome: ToolOutcome) -> ToolOutcome:
        """Store a tool result once; returns the stored one if it already existed."""

    @abstractmethod
    def finish_run(
        self,
        tenant: str,
        run_id: str,
        status: RunStatus,
        *,
        output: str | None = None,
        error: RunError | None = None,
        release: bool = True,
    ) -> bool:
        """Move a non-terminal run to ``status``, atomically. With ``release`` (no model call can be in flight)
        also release a reservation it holds; otherwise the reservation stays for the in-flight call to settle or
        for a delayed ``release_reservation``. Returns False if the run was already terminal."""


class ResponseCache(Protocol):
    """Answers stored by the exact-match key of their request (tenant-scoped, expiring)."""

    def get(self, tenant: str, key: str) -> ModelResponse | None: ...

    def put(self, tenant: str, key: str, response: ModelResponse) -> None: ...


class RunQueue(Protocol):
    """The intake queue between the API and the workflow."""

    def enqueue(self, tenant: str, run_id: str) -> None: ...

    def schedule_release(self, tenant: str, run_id: str, step: int) -> None:
        """Release the step's reservation later, once its model call cannot still be in flight."""
        ...

    def schedule_watch(self, tenant: str, run_id: str) -> None:
        """Check the run again later: it must be moving (its execution running) or have ended."""
        ...


class Workflow(Protocol):
    """The durable workflow that drives a run, one execution per run named by the run id."""

    def start(self, tenant: str, run_id: str) -> bool:
        """Start the execution; False if one with this name already exists (duplicate delivery)."""
        ...

    def stop(self, run_id: str, reason: str) -> None:
        """Stop the execution if it exists and is running."""
        ...

    def status(self, run_id: str) -> str | None:
        """The execution's status (RUNNING, SUCCEEDED, FAILED, TIMED_OUT, ABORTED), or None if there is none."""
        ...


class CircuitStore(Protocol):
    """Circuit states shared by every Lambda."""

    def load(self, key: str) -> Circuit:
        """The stored circuit, or a closed one with version 0."""
        ...

    def save(self, circuit: Circuit) -> bool:
        """Store ``circuit`` (version + 1) if the stored version is still ``circuit.version``; False otherwise."""
        ...
