"""One tool call of a step, run once: a retried invocation returns the stored result.

Where a call runs: the deployment's fast Python tools (``fast=True``: the built-ins, and the deployer's tools so
marked) inside the step that asked for them (``run_in_step``), right after the model answered; the other Python
tools and MCP tools in the tool function; a Lambda tool by the workflow itself (its Map invokes the function
directly, then records the result here, ``record_lambda_result``). The same ``run`` runs a call in either function.
A tool with side effects runs at most once: a provisional "outcome unknown"
result is stored before it starts, so an invocation that dies mid-call leaves that, and a retry does not run it
again. A result too large for the table is kept in the result store and the model sees a view (results.py)."""

from __future__ import annotations

import json
import time
from datetime import datetime
from typing import Any

from functions.agent.errors import RunNotFoundError, StepwiseError, ToolServerError
from functions.agent.models import AgentConfig, Run, StepRecord, StepRef, ToolCall, ToolError, ToolOutcome
from functions.agent.ports import Clock, McpCaller, ResultStore, RunStore, Toolbox
from functions.agent.results import bounded

MCP_TIMEOUT_SECONDS = 30.0
# what the calls one step runs itself may take in all (the sum of their tools' timeouts): the step function's timeout
# covers the model call's and this (infra/functions.py); the calls that would not fit go to the workflow's Map
IN_STEP_SECONDS = 10.0
MAX_FAILURE_CHARS = 1_000
UNKNOWN_OUTCOME = (
    "the tool's invocation stopped after it started (its function crashed or timed out): the outcome is unknown, "
    "it may have had its effect, and it is not run again"
)


def workflow_calls(calls: list[ToolCall], agent: AgentConfig | None) -> list[dict[str, Any]]:
    """The calls as the workflow's Tools map gets them: a Lambda tool's with what the map invokes it with."""
    items: list[dict[str, Any]] = []
    for call in calls:
        lambda_tool = agent.lambda_tool(call.name) if agent else None
        if lambda_tool is None:
            items.append({"id": call.id, "name": call.name, "kind": "stepwise"})
        else:
            items.append(
                {
                    "id": call.id,
                    "name": call.name,
                    "kind": "lambda_once" if not lambda_tool.idempotent else "lambda",
                    "function": lambda_tool.function,
                    "input": call.input,
                    "timeout_seconds": lambda_tool.timeout_seconds,
                }
            )
    return items


def runs_in_step(call: ToolCall, agent: AgentConfig | None, toolbox: Toolbox) -> bool:
    """Whether a call may run inside its step: a fast tool of the deployment's, not one the session's agent defines
    (a custom or approval-gated call waits for the client; MCP and Lambda tools run in the Map)."""
    name = call.name
    if agent is not None and (agent.needs_client(name) or agent.mcp_tool(name) or agent.lambda_tool(name)):
        return False
    return toolbox.in_step_seconds(call.name) is not None


def full_result_path(run: Run, tool_use_id: str) -> str:
    if run.session is not None:
        return f"GET /v1/sessions/{run.run_id}/tool_results/{tool_use_id}"
    return f"GET /runs/{run.run_id}/tool_results/{tool_use_id}"


class ToolRunner:
    """Runs the calls the tool function is given, and records what the workflow's Lambda tools returned."""

    def __init__(
        self,
        *,
        store: RunStore,
        toolbox: Toolbox,
        mcp: McpCaller | None = None,
        results: ResultStore | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.store, self.toolbox, self.mcp, self.results, self.clock = store, toolbox, mcp, results, clock

    def run(self, ref: StepRef, tool_use_id: str, *, execution: str | None = None) -> ToolOutcome:
        """A call of a run (with ``execution``, the invoking execution's name: a session's turn) that has ended is
        not run, and nothing is stored for it (see ``_ended``)."""
        context = self._context(ref, tool_use_id, execution)
        if isinstance(context, ToolOutcome):
            return context
        run, call = context
        if not self._idempotent(run, call):
            claimed = self.store.claim_tool(ref, self._unknown(call, final=False))
            if claimed is not None and claimed.final:  # recorded meanwhile (another invocation, an interrupt)
                return claimed
            if claimed is not None:  # started before, by an invocation that died (or is still running)
                return self._save(ref, run, claimed.model_copy(update={"final": True}))
        return self._save(ref, run, self._execute(run, call))

    def run_in_step(
        self, ref: StepRef, calls: list[ToolCall], agent: AgentConfig | None, *, execution: str | None
    ) -> tuple[list[ToolOutcome], list[ToolCall]]:
        """Run a step's fast calls here, in order, each as ``run`` runs it (at most once, stored, bounded), while
        their timeouts fit in IN_STEP_SECONDS. Returns what ran and the calls left for the workflow's Map: the
        others, those that did not fit, and any whose run raised (the Map runs it again, which finds what this one
        stored: a call with side effects that started is never run twice, and a failure gets its error result)."""
        ran: list[ToolOutcome] = []
        left: list[ToolCall] = []
        started = self.clock.now() if self.clock else None
        for call in calls:
            seconds = self.toolbox.in_step_seconds(call.name) if runs_in_step(call, agent, self.toolbox) else None
            spent = (self.clock.now() - started).total_seconds() if self.clock and started else 0.0
            if seconds is None or spent + seconds > IN_STEP_SECONDS:
                left.append(call)
                continue
            try:
                ran.append(self.run(ref, call.id, execution=execution))
            except Exception:  # the Map's RunTool runs it again, and records its failure
                left.append(call)
        return ran, left

    def record_lambda_result(
        self, ref: StepRef, tool_use_id: str, payload: Any, *, execution: str | None, started: datetime | None = None
    ) -> ToolOutcome:
        """What a Lambda tool returned (text, or any JSON value as JSON text); ``started``: when its invocation
        began (the call's duration runs to now)."""
        context = self._context(ref, tool_use_id, execution)
        if isinstance(context, ToolOutcome):
            return context
        run, call = context
        content = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False, default=str)
        took = max(int((self.clock.now() - started).total_seconds() * 1000), 0) if started and self.clock else 0
        return self._save(ref, run, ToolOutcome(tool_use_id=call.id, name=call.name, content=content, duration_ms=took))

    def record_failure(
        self, ref: StepRef, tool_use_id: str, failure: dict[str, Any], *, execution: str | None, ran: bool = False
    ) -> ToolOutcome:
        """The workflow caught a call's failure (its function died, a Lambda tool raised, the tool function itself
        kept failing): an error result, never a failed session. ``ran``: a Lambda tool's function returned but its
        result could not be recorded. A call with side effects that may have run is reported of unknown outcome."""
        context = self._context(ref, tool_use_id, execution)
        if isinstance(context, ToolOutcome):
            return context
        run, call = context
        error, cause = str(failure.get("Error", "unknown")), _cause(failure.get("Cause"))
        lambda_tool = run.agent.lambda_tool(call.name) if run.agent else None
        if ran:
            content = (f"{call.name} ran, but its result could not be recorded ({error}): the outcome is unknown, and "
                       "it is not run again")  # fmt: skip
            outcome = ToolOutcome(tool_use_id=call.id, name=call.name, content=content, is_error=True,
                                  error_kind=ToolError.UNKNOWN_OUTCOME)  # fmt: skip
        elif lambda_tool is not None and not lambda_tool.idempotent and _may_have_run(error):
            outcome = self._unknown(call, final=True)
        else:
            kind = ToolError.TIMED_OUT if error == "States.Timeout" else ToolError.FAILED
            outcome = ToolOutcome(tool_use_id=call.id, name=call.name, content=f"{call.name} failed ({error}): {cause}",
                                  is_error=True, error_kind=kind)  # fmt: skip
        return self._save(ref, run, outcome)

    # ------------------------------------------------------------------------------------------- helpers

    def _context(self, ref: StepRef, tool_use_id: str, execution: str | None) -> tuple[Run, ToolCall] | ToolOutcome:
        """The run and the call, or the result to return instead of running it (the one stored, or an ended turn's
        refusal)."""
        run, record, stored = self.store.load_tool_context(ref, tool_use_id)
        if stored is not None and stored.final:
            return stored
        if run is None or record is None:
            raise RunNotFoundError(f"run {ref.key.run_id} step {ref.step} not found")
        call = _call_of(record, ref, tool_use_id)
        if ended := _ended(run, call, execution):
            return ended
        if stored is not None:  # provisional: the call started before and its invocation died
            return self._save(ref, run, stored.model_copy(update={"final": True}))
        return run, call

    def _idempotent(self, run: Run, call: ToolCall) -> bool:
        mcp_tool = run.agent.mcp_tool(call.name) if run.agent else None
        return mcp_tool.idempotent if mcp_tool is not None else self.toolbox.idempotent(call.name)

    def _execute(self, run: Run, call: ToolCall) -> ToolOutcome:
        mcp_tool = run.agent.mcp_tool(call.name) if run.agent else None
        if mcp_tool is None:
            return self.toolbox.execute(call, run.tools)
        started = time.perf_counter()
        url = run.agent.mcp_servers.get(mcp_tool.server) if run.agent else None
        try:
            if self.mcp is None or url is None:
                raise ToolServerError(f"MCP server {mcp_tool.server!r} is not configured in this deployment",
                                      before_sending=True)  # fmt: skip
            text, is_error = self.mcp.call(url, call.name, call.input, timeout=MCP_TIMEOUT_SECONDS)
            kind = ToolError.FAILED if is_error else None
        except ToolServerError as exc:
            # a call with side effects that may have reached the server: what it did is unknown; it is not retried
            unknown = not mcp_tool.idempotent and not exc.before_sending
            effect = " (the outcome is unknown; not run again)" if unknown else ""
            text, is_error = f"MCP server {mcp_tool.server!r}: {exc}{effect}", True
            kind = ToolError.TIMED_OUT if exc.timed_out else ToolError.UNKNOWN_OUTCOME if unknown else ToolError.FAILED
        return ToolOutcome(tool_use_id=call.id, name=call.name, content=text, is_error=is_error, error_kind=kind,
                           duration_ms=int((time.perf_counter() - started) * 1000))  # fmt: skip

    def _unknown(self, call: ToolCall, *, final: bool) -> ToolOutcome:
        return ToolOutcome(tool_use_id=call.id, name=call.name, content=UNKNOWN_OUTCOME, is_error=True,
                           error_kind=ToolError.UNKNOWN_OUTCOME, final=final)  # fmt: skip

    def _save(self, ref: StepRef, run: Run | None, outcome: ToolOutcome) -> ToolOutcome:
        where = full_result_path(run, outcome.tool_use_id) if run is not None else "the run's tool result"
        return self.store.save_tool_result(ref, bounded(outcome, ref, self.results, where))


def _ended(run: Run, call: ToolCall, execution: str | None) -> ToolOutcome | None:
    """What a call of a turn that has ended gets, never stored: its end gave every call it left without a result
    its error result before the status was written (functions/agent/lifecycle.py ``settle_calls``), and one written
    after the end would appear behind a reader that has seen it. None while the turn runs."""
    if execution is not None and execution != run.execution_name:  # an earlier turn's execution
        return ToolOutcome(tool_use_id=call.id, name=call.name, content="the turn ended; tool not executed",
                           is_error=True, error_kind=ToolError.RUN_ENDED)  # fmt: skip
    if run.status.terminal:
        return ToolOutcome(tool_use_id=call.id, name=call.name, content="the run ended; tool not executed",
                           is_error=True, error_kind=ToolError.RUN_ENDED)  # fmt: skip
    return None


# Errors of a Lambda invoke refused before the function ran (after their retries): nothing happened
REFUSED_BEFORE_RUNNING = frozenset({
    "Lambda.TooManyRequestsException", "Lambda.ResourceNotFoundException", "Lambda.AccessDeniedException",
    "Lambda.InvalidParameterValueException", "Lambda.RequestTooLargeException", "States.Permissions",
})  # fmt: skip


def _may_have_run(error: str) -> bool:
    """Whether a Lambda tool's invocation that failed with ``error`` may have done its work: it died (a timeout, out
    of memory, a crash), hung, or the Lambda service failed around it. An error the function raised is its answer."""
    if error in REFUSED_BEFORE_RUNNING:
        return False
    return error.startswith(("Lambda.", "Sandbox.", "Runtime.")) or error == "States.Timeout"


def _cause(cause: Any) -> str:
    """What a failure's cause tells the model: a Lambda error's type and message, never its stack trace."""
    text = str(cause or "")
    try:
        parsed = json.loads(text)
    except ValueError:
        return text[:MAX_FAILURE_CHARS]
    if isinstance(parsed, dict) and "errorMessage" in parsed:
        return str(parsed["errorMessage"])[:MAX_FAILURE_CHARS]
    return text[:MAX_FAILURE_CHARS]


def _call_of(record: StepRecord, ref: StepRef, tool_use_id: str) -> ToolCall:
    call = next((c for c in record.tool_calls() if c.id == tool_use_id), None)
    if call is None:
        raise StepwiseError(f"step {ref.step} of run {ref.key.run_id} has no tool call {tool_use_id}")
    return call


def run_tool(
    store: RunStore, toolbox: Toolbox, ref: StepRef, tool_use_id: str, *, execution: str | None = None
) -> ToolOutcome:
    """One call of the deployment's Python tools (the tests' and fakes' shorthand for ``ToolRunner.run``)."""
    return ToolRunner(store=store, toolbox=toolbox).run(ref, tool_use_id, execution=execution)
