"""One tool call of a step (an item of the workflow's Tools Map). The result goes to the store."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.parser import parse
from aws_lambda_powertools.utilities.typing import LambdaContext

from functions.adapters import wiring
from functions.adapters.settings import ToolSettings, load
from functions.agent.tool import run_tool
from functions.handlers.events import ToolEvent
from functions.handlers.observability import observability

SETTINGS = ToolSettings
obs = observability("tool")
logger, metrics = obs.logger, obs.metrics


@logger.inject_lambda_context
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    ref = parse(event=event, model=ToolEvent)
    logger.append_keys(run_id=ref.run_id, tenant=ref.tenant, step=ref.step, tool_use_id=ref.tool_use_id)
    toolbox = wiring.registry()
    outcome = run_tool(wiring.store(load(SETTINGS)), toolbox, ref.ref, ref.tool_use_id, execution=ref.execution)
    metrics.add_metric(name="ToolErrors" if outcome.is_error else "ToolCalls", unit="Count", value=1)
    # the registered name, never the model's free text: bounded metric cardinality
    obs.count("ToolCallsByTool", tool=outcome.name if outcome.name in toolbox.names else "unknown")
    logger.info("tool done", tool=outcome.name, is_error=outcome.is_error, duration_ms=outcome.duration_ms)
    return {"tool_use_id": outcome.tool_use_id, "name": outcome.name, "is_error": outcome.is_error}
