"""In-memory RunStore with the same conditional semantics as the DynamoDB adapter."""

from __future__ import annotations

from functions.agent.errors import RunAlreadyExistsError, RunNotActiveError, RunNotFoundError, StepAlreadySavedError
from functions.agent.models import Run, RunError, RunStatus, StepRecord, ToolOutcome
from functions.agent.ports import RunHistory, RunStore


class InMemoryRunStore(RunStore):
    def __init__(self) -> None:
        self.runs: dict[tuple[str, str], Run] = {}
        self.steps: dict[tuple[str, str, int], StepRecord] = {}
        self.tools: dict[tuple[str, str, int, str], ToolOutcome] = {}
        self.writes = 0

    def create_run(self, run: Run) -> None:
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
        return RunHistory(run=run, steps=steps, tool_results=tools)

    def get_step(self, tenant: str, run_id: str, step: int) -> StepRecord | None:
        return self.steps.get((tenant, run_id, step))

    def save_step(self, run: Run, record: StepRecord, output: str | None, *, require_active: bool = True) -> None:
        key = (run.tenant, run.run_id, record.step)
        if key in self.steps:
            raise StepAlreadySavedError(run.run_id)
        stored = self.runs[(run.tenant, run.run_id)]
        if stored.steps != record.step or (require_active and stored.status.terminal):
            raise RunNotActiveError(run.run_id)
        self.steps[key] = record
        update: dict[str, object] = {
            "steps": record.step + 1,
            "usage": stored.usage + record.usage,
            "cost_usd": stored.cost_usd + record.cost_usd,
            "updated_at": record.finished_at,
        }
        if require_active:
            update.update(status=RunStatus.RUNNING, output=output if output is not None else stored.output)
        self.runs[(run.tenant, run.run_id)] = stored.model_copy(update=update)
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
        key = (tenant, run_id, step, outcome.tool_use_id)
        if key not in self.tools:
            self.tools[key] = outcome
            self.writes += 1
        return self.tools[key]

    def finish_run(
        self, tenant: str, run_id: str, status: RunStatus, *, output: str | None = None, error: RunError | None = None
    ) -> bool:
        run = self.runs.get((tenant, run_id))
        if run is None or run.status.terminal:
            return False
        update: dict[str, object] = {"status": status}
        if output is not None:
            update["output"] = output
        if error is not None:
            update["error"] = error
        self.runs[(tenant, run_id)] = run.model_copy(update=update)
        self.writes += 1
        return True
