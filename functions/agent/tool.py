"""One tool call of a step, run once: a retried invocation returns the stored result."""

from __future__ import annotations

from functions.agent.errors import RunNotFoundError, StepwiseError
from functions.agent.models import StepRef, ToolError, ToolOutcome
from functions.agent.ports import RunStore, Toolbox


def run_tool(
    store: RunStore, toolbox: Toolbox, ref: StepRef, tool_use_id: str, *, execution: str | None = None
) -> ToolOutcome:
    """With ``execution`` (the invoking execution's name), a call of a session turn that has ended is not run."""
    run, record, stored = store.load_tool_context(ref, tool_use_id)
    if stored is not None:
        return stored
    if run is None or record is None:
        raise RunNotFoundError(f"run {ref.key.run_id} step {ref.step} not found")
    call = next((c for c in record.tool_calls() if c.id == tool_use_id), None)
    if call is None:
        raise StepwiseError(f"step {ref.step} of run {ref.key.run_id} has no tool call {tool_use_id}")
    if execution is not None and execution != run.execution_name:  # an earlier turn's: nothing is stored
        return ToolOutcome(tool_use_id=call.id, name=call.name, content="the turn ended; tool not executed",
                           is_error=True, error_kind=ToolError.RUN_ENDED)  # fmt: skip
    if run.status.terminal:
        outcome = ToolOutcome(
            tool_use_id=call.id,
            name=call.name,
            content="run ended; tool not executed",
            is_error=True,
            error_kind=ToolError.RUN_ENDED,
        )
    else:
        outcome = toolbox.execute(call, run.tools)
    return store.save_tool_result(ref, outcome)
