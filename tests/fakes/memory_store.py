"""In-memory RunStore: applies the ledger's plans under one lock (atomic, like a DynamoDB transaction).

It decides nothing: conditions are evaluated with the ledger's own ``Condition.holds`` and runs change by
``RunChange.applied_to``. tests/functional/test_ledger_parity.py holds it to the DynamoDB adapter."""

from __future__ import annotations

import threading
from decimal import Decimal

from functions.agent.active import ActiveEntry, Listing, listing
from functions.agent.errors import RunAlreadyExistsError, RunNotFoundError
from functions.agent.ledger import Counter, CounterChange, Plan, Rejected
from functions.agent.models import ModelResponse, Run, RunKey, StepRecord, StepRef, ToolOutcome, Usage
from functions.agent.ports import RunHistory, RunStore
from functions.agent.spend import SpendRow, merged


class InMemoryRunStore(RunStore):
    def __init__(self) -> None:
        self.runs: dict[RunKey, Run] = {}
        self.steps: dict[tuple[RunKey, int], StepRecord] = {}
        self.tools: dict[tuple[RunKey, int, str], ToolOutcome] = {}
        self.pending: dict[tuple[RunKey, int], ModelResponse] = {}
        self.counters: dict[Counter, dict[str, Decimal]] = {}
        self.listed: dict[RunKey, Listing] = {}  # the index of active work, as the plans write it
        self.writes = 0
        self._lock = threading.RLock()

    # ------------------------------------------------------------------------------------------- runs

    def create_run(self, run: Run) -> None:
        with self._lock:
            if run.key in self.runs:
                raise RunAlreadyExistsError(run.run_id)
            self.runs[run.key] = run.model_copy(deep=True)
            if (listed := listing(run)) is not None:
                self.listed[run.key] = listed
            self.writes += 1

    def get_run(self, key: RunKey) -> Run | None:
        run = self.runs.get(key)
        return run.model_copy(deep=True) if run else None

    def get_step(self, key: RunKey, step: int) -> StepRecord | None:
        return self.steps.get((key, step))

    def load_history(self, key: RunKey) -> RunHistory:
        run = self.get_run(key)
        if run is None:
            raise RunNotFoundError(key.run_id)
        steps = sorted((r for (k, _), r in self.steps.items() if k == key), key=lambda r: r.step)
        tools = {(s, u): o for (k, s, u), o in self.tools.items() if k == key}
        pending = {s: r for (k, s), r in self.pending.items() if k == key}
        return RunHistory(run=run, steps=steps, tool_results=tools, pending=pending)

    # ------------------------------------------------------------------------------------------- the ledger

    def apply(self, plan: Plan) -> Rejected | None:
        key = plan.run.key
        with self._lock:
            if plan.record is not None and (key, plan.record.step) in self.steps:
                return plan.record
            stored = self.runs.get(key)
            if stored is None or not all(condition.holds(stored) for condition in plan.run.conditions):
                return plan.run
            for change in plan.counters:
                if change.limit is not None and not change.limit.holds(self.committed_on(change.counter)):
                    return change
            if plan.record is not None:
                self.steps[(key, plan.record.step)] = plan.record
                self.pending.pop((key, plan.record.step), None)
            self.runs[key] = plan.run.applied_to(stored)
            if plan.run.delists:
                self.listed.pop(key, None)
            elif plan.run.listing is not None:
                self.listed.setdefault(key, plan.run.listing)
            for change in plan.counters:
                self._add(change)
            self.writes += 1
            return None

    def _add(self, change: CounterChange) -> None:
        fields = self.counters.setdefault(change.counter, {})
        for name, delta in change.add.items():
            fields[name] = fields.get(name, Decimal(0)) + Decimal(delta)

    def committed_on(self, counter: Counter) -> Decimal:
        return self.counters.get(counter, {}).get("committed_usd", Decimal(0))

    def committed(self, tenant: str, day: str) -> tuple[Decimal, Decimal]:
        return self.committed_on(Counter(tenant, day)), self.committed_on(Counter(None, day))

    def save_pending(self, key: RunKey, step: int, response: ModelResponse) -> None:
        self.pending[(key, step)] = response

    # ------------------------------------------------------------------------------------------- active work

    def list_active(self, shard: int, *, tenant: str | None, limit: int, after: str | None) -> list[ActiveEntry]:
        with self._lock:
            chosen = sorted(
                (listed.key, key) for key, listed in self.listed.items()
                if listed.shard == shard and tenant in (None, key.tenant) and (after is None or listed.key > after)
            )[:limit]  # fmt: skip
            return [
                ActiveEntry.parse(sort, self.runs[key].status, self.runs[key].turn, self.runs[key].created_by)
                for sort, key in chosen
            ]

    # ------------------------------------------------------------------------------------------- spend

    def spend_rows(self, tenant: str, first_day: str, last_day: str) -> list[SpendRow]:
        rows = []
        for counter, fields in self.counters.items():
            if counter.tenant != tenant or not first_day <= counter.day <= last_day:
                continue
            usage = Usage(**{name: int(fields.get(name, 0)) for name in Usage.model_fields})
            rows.append(
                SpendRow(
                    counter.day,
                    fields.get("spent_usd", Decimal(0)),
                    int(fields.get("steps", 0)),
                    usage if counter.run_id is None else Usage(),
                    counter.model,
                    counter.run_id,
                )
            )
        return merged(rows)  # a day's shards (and its unsharded counter) as one row

    def day_stats(self, tenant: str | None, day: str) -> dict[str, Decimal]:
        """A day's counter, every shard added up (for tests)."""
        total: dict[str, Decimal] = {}
        for counter, fields in self.counters.items():
            if (counter.tenant, counter.day, counter.model, counter.run_id) == (tenant, day, None, None):
                for name, value in fields.items():
                    total[name] = total.get(name, Decimal(0)) + value
        return total

    # ------------------------------------------------------------------------------------------- tools

    def load_tool_context(
        self, ref: StepRef, tool_use_id: str
    ) -> tuple[Run | None, StepRecord | None, ToolOutcome | None]:
        return self.get_run(ref.key), self.get_step(ref.key, ref.step), self.tools.get((ref.key, ref.step, tool_use_id))

    def save_tool_result(self, ref: StepRef, outcome: ToolOutcome) -> ToolOutcome:
        with self._lock:
            key = (ref.key, ref.step, outcome.tool_use_id)
            if key not in self.tools or not self.tools[key].final:  # a provisional result is replaced
                self.tools[key] = outcome
                self.writes += 1
            return self.tools[key]

    def claim_tool(self, ref: StepRef, provisional: ToolOutcome) -> ToolOutcome | None:
        with self._lock:
            key = (ref.key, ref.step, provisional.tool_use_id)
            if key in self.tools:
                return self.tools[key]
            self.tools[key] = provisional
            self.writes += 1
            return None
