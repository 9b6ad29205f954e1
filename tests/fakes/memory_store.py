"""In-memory RunStore with the same conditional semantics as the DynamoDB adapter (one lock = atomic writes)."""

from __future__ import annotations

import threading
from collections import defaultdict
from decimal import Decimal

from functions.agent.budgets import BudgetLimits, usd
from functions.agent.errors import (
    BudgetRefusedError,
    RunAlreadyExistsError,
    RunNotActiveError,
    RunNotFoundError,
    StepAlreadySavedError,
)
from functions.agent.models import ModelResponse, Reservation, Run, RunError, RunStatus, StepRecord, ToolOutcome, Usage
from functions.agent.ports import RunHistory, RunStore
from functions.agent.spend import SpendRow

Counter = dict[str, Decimal]


class InMemoryRunStore(RunStore):
    def __init__(self) -> None:
        self.runs: dict[tuple[str, str], Run] = {}
        self.steps: dict[tuple[str, str, int], StepRecord] = {}
        self.tools: dict[tuple[str, str, int, str], ToolOutcome] = {}
        self.pending: dict[tuple[str, str, int], ModelResponse] = {}
        # (tenant or None for global, day, model / "R#run_id" / None for the day) -> counter fields
        self.counters: dict[tuple[str | None, str, str | None], Counter] = defaultdict(lambda: defaultdict(Decimal))
        self.writes = 0
        self._lock = threading.RLock()

    def create_run(self, run: Run) -> None:
        with self._lock:
            key = (run.tenant, run.run_id)
            if key in self.runs:
                raise RunAlreadyExistsError(run.run_id)
            self.runs[key] = run.model_copy(deep=True)
            self.writes += 1

    def get_run(self, tenant: str, run_id: str) -> Run | None:
        run = self.runs.get((tenant, run_id))
        return run.model_copy(deep=True) if run else None

    def load_history(self, tenant: str, run_id: str) -> RunHistory:
        run = self.get_run(tenant, run_id)
        if run is None:
            raise RunNotFoundError(run_id)
        steps = sorted((r for (t, i, _), r in self.steps.items() if (t, i) == (tenant, run_id)), key=lambda r: r.step)
        tools = {(s, u): o for (t, i, s, u), o in self.tools.items() if (t, i) == (tenant, run_id)}
        pending = {s: r for (t, i, s), r in self.pending.items() if (t, i) == (tenant, run_id)}
        return RunHistory(run=run, steps=steps, tool_results=tools, pending=pending)

    def get_step(self, tenant: str, run_id: str, step: int) -> StepRecord | None:
        return self.steps.get((tenant, run_id, step))

    def _commit(self, tenant: str, day: str, amount: Decimal) -> None:
        for t in (tenant, None):
            self.counters[(t, day, None)]["committed_usd"] += amount

    def reserve(
        self, run: Run, reservation: Reservation, limits: BudgetLimits, *, replacing: Reservation | None = None
    ) -> Reservation:
        with self._lock:
            stored = self.runs[(run.tenant, run.run_id)]
            if stored.status.terminal or stored.steps != reservation.step:
                raise RunNotActiveError(run.run_id)
            if stored.reservation is not None and stored.reservation != replacing:
                if stored.reservation.step == reservation.step:
                    return stored.reservation  # a duplicate invocation reserved for this step first
                raise RunNotActiveError(run.run_id)
            if replacing is not None and stored.reservation is None:
                raise RunNotActiveError(run.run_id)
            amount = reservation.amount_usd - (replacing.amount_usd if replacing else Decimal(0))
            day = reservation.day
            if run.budget.max_usd is not None and stored.cost_usd + reservation.amount_usd > Decimal(
                str(run.budget.max_usd)
            ):
                raise BudgetRefusedError(
                    "MAX_USD", f"run budget max_usd={run.budget.max_usd}: {usd(stored.cost_usd)} spent"
                )
            for tenant, limit, code in (
                (run.tenant, limits.tenant_daily_usd, "TENANT_DAILY_BUDGET"),
                (None, limits.global_daily_usd, "GLOBAL_DAILY_BUDGET"),
            ):
                committed = self.counters[(tenant, day, None)]["committed_usd"]
                if limit is not None and amount > 0 and committed + amount > limit:
                    raise BudgetRefusedError(code, f"{code.lower()} {usd(limit)} for {day}: {usd(committed)} committed")
            self._commit(run.tenant, day, amount)
            self.runs[(run.tenant, run.run_id)] = stored.model_copy(update={"reservation": reservation})
            return reservation

    def save_pending(self, run: Run, step: int, response: ModelResponse) -> None:
        self.pending[(run.tenant, run.run_id, step)] = response

    def release_reservation(self, tenant: str, run_id: str, step: int) -> bool:
        with self._lock:
            run = self.runs.get((tenant, run_id))
            if run is None or not run.status.terminal or run.reservation is None or run.reservation.step != step:
                return False
            self._commit(tenant, run.reservation.day, -run.reservation.amount_usd)
            self.runs[(tenant, run_id)] = run.model_copy(update={"reservation": None})
            return True

    def committed_today(self, tenant: str, day: str) -> tuple[Decimal, Decimal]:
        return self.counters[(tenant, day, None)]["committed_usd"], self.counters[(None, day, None)]["committed_usd"]

    def spend_rows(self, tenant: str, first_day: str, last_day: str) -> list[SpendRow]:
        rows = []
        for (t, day, which), counter in self.counters.items():
            if t != tenant or not first_day <= day <= last_day or not counter.get("steps"):
                continue
            run_id = which[2:] if which and which.startswith("R#") else None
            model = which if which and not run_id else None
            usage = Usage(**{name: int(counter.get(name, 0)) for name in Usage.model_fields}) if not run_id else Usage()
            rows.append(SpendRow(day, counter["spent_usd"], int(counter["steps"]), usage, model, run_id))
        return rows

    def save_step(self, run: Run, record: StepRecord, output: str | None, *, require_active: bool = True) -> None:
        with self._lock:
            key = (run.tenant, run.run_id, record.step)
            if key in self.steps:
                raise StepAlreadySavedError(run.run_id)
            stored = self.runs[(run.tenant, run.run_id)]
            if stored.steps != record.step or (require_active and stored.status.terminal):
                raise RunNotActiveError(run.run_id)
            mine = run.reservation is not None and run.reservation.step == record.step
            held = stored.reservation if stored.reservation and stored.reservation.step == record.step else None
            if mine != (held is not None):  # the caller's view of the reservation is stale
                raise RunNotActiveError(run.run_id)
            day = held.day if held else record.finished_at[:10]
            self.steps[key] = record
            update: dict[str, object] = {
                "steps": record.step + 1,
                "usage": stored.usage + record.usage,
                "cost_usd": stored.cost_usd + record.cost_usd,
                "updated_at": record.finished_at,
            }
            if held:
                update["reservation"] = None
            if require_active:
                update.update(status=RunStatus.RUNNING, output=output if output is not None else stored.output)
            self.runs[(run.tenant, run.run_id)] = stored.model_copy(update=update)
            self.pending.pop(key, None)
            run_counter = self.counters[(run.tenant, day, f"R#{run.run_id}")]
            run_counter["spent_usd"] += record.cost_usd
            run_counter["steps"] += 1
            priced = record.requested_model or record.model
            for counter_key in ((run.tenant, day, None), (run.tenant, day, priced), (None, day, None)):
                counter = self.counters[counter_key]
                counter["spent_usd"] += record.cost_usd
                counter["steps"] += 1
                for name, count in record.usage.model_dump().items():
                    counter[name] += count
                if counter_key[2] is None:
                    counter["committed_usd"] += record.cost_usd - (held.amount_usd if held else Decimal(0))
            self.writes += 1

    def load_tool_context(
        self, tenant: str, run_id: str, step: int, tool_use_id: str
    ) -> tuple[Run | None, StepRecord | None, ToolOutcome | None]:
        return (
            self.get_run(tenant, run_id),
            self.get_step(tenant, run_id, step),
            self.tools.get((tenant, run_id, step, tool_use_id)),
        )

    def save_tool_result(self, tenant: str, run_id: str, step: int, outcome: ToolOutcome) -> ToolOutcome:
        with self._lock:
            key = (tenant, run_id, step, outcome.tool_use_id)
            if key not in self.tools:
                self.tools[key] = outcome
                self.writes += 1
            return self.tools[key]

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
        with self._lock:
            run = self.runs.get((tenant, run_id))
            if run is None or run.status.terminal:
                return False
            update: dict[str, object] = {"status": status}
            if run.reservation and release:
                self._commit(tenant, run.reservation.day, -run.reservation.amount_usd)
                update["reservation"] = None
            if output is not None:
                update["output"] = output
            if error is not None:
                update["error"] = error
            self.runs[(tenant, run_id)] = run.model_copy(update=update)
            self.writes += 1
            return True
