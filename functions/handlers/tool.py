"""One tool call of a step (an item of the workflow's Tools Map). The result goes to the store.

Three shapes: run the call (the deployment's Python tools and MCP tools); record what a Lambda tool returned (the
map invoked it directly); record the failure the map caught, as the call's error result."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.parser import parse
from aws_lambda_powertools.utilities.typing import LambdaContext

from functions.adapters import wiring
from functions.adapters.settings import ToolSettings, load
from functions.handlers import warmup
from functions.handlers.events import ToolEvent
from functions.handlers.observability import OTHER_TOOL, observability

SETTINGS = ToolSettings
obs = observability("tool")
logger, metrics, tracer = obs.logger, obs.metrics, obs.tracer


@logger.inject_lambda_context
@tracer.capture_lambda_handler(capture_response=False, capture_error=False)  # no run content in traces
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    ref = parse(event=event, model=ToolEvent)
    logger.append_keys(run_id=ref.run_id, tenant=ref.tenant, step=ref.step, tool_use_id=ref.tool_use_id)
    obs.annotate_run(ref.tenant, ref.run_id, turn=ref.execution_turn, step=ref.step)
    runner = wiring.tool_runner(load(SETTINGS), tracer)
    if ref.failure is not None:
        failure = ref.failure.model_dump()
        outcome = runner.record_failure(ref.ref, ref.tool_use_id, failure, execution=ref.execution, ran=ref.ran)
        logger.warning("tool call failed", tool=outcome.name, error=ref.failure.Error)
    elif ref.ran:
        outcome = runner.record_lambda_result(ref.ref, ref.tool_use_id, ref.result, execution=ref.execution,
                                              started=ref.started)  # fmt: skip
    else:
        outcome = runner.run(ref.ref, ref.tool_use_id, execution=ref.execution)
    # the registered name, never the model's free text: bounded metric cardinality
    tool = outcome.name if outcome.name in runner.toolbox.names else OTHER_TOOL
    obs.emit("ToolCalls", tool=tool, status="error" if outcome.is_error else "ok")
    obs.annotate(tool=tool)
    logger.info("tool done", tool=outcome.name, is_error=outcome.is_error, error_kind=outcome.error_kind,
                duration_ms=outcome.duration_ms, size=outcome.size, stored=outcome.stored is not None)  # fmt: skip
    return {"tool_use_id": outcome.tool_use_id, "name": outcome.name, "is_error": outcome.is_error}


warmup.prepare(lambda: wiring.tool_runner(load(SETTINGS), tracer), logger)  # the adapters and tools it runs with
