"""One tool call of a step (an item of the workflow's Tools Map). The result goes to the store."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Metrics, single_metric
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.parser import parse
from aws_lambda_powertools.utilities.typing import LambdaContext

from functions.adapters import wiring
from functions.agent.service import execute_tool
from functions.handlers.events import ToolEvent

logger = Logger(service="stepwise-tool")
NAMESPACE = "Stepwise"
metrics = Metrics(namespace=NAMESPACE)  # service: POWERTOOLS_SERVICE_NAME


@logger.inject_lambda_context
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    ref = parse(event=event, model=ToolEvent)
    logger.append_keys(run_id=ref.run_id, tenant=ref.tenant, step=ref.step, tool_use_id=ref.tool_use_id)
    outcome = execute_tool(
        store=wiring.store(),
        registry=wiring.registry(),
        tenant=ref.tenant,
        run_id=ref.run_id,
        step=ref.step,
        tool_use_id=ref.tool_use_id,
    )
    metrics.add_metric(name="ToolErrors" if outcome.is_error else "ToolCalls", unit="Count", value=1)
    with single_metric(name="ToolCallsByTool", unit=MetricUnit.Count, value=1, namespace=NAMESPACE) as metric:
        # the registered name, never the model's free text: bounded metric cardinality
        known = outcome.name in wiring.registry().names
        metric.add_dimension(name="tool", value=outcome.name if known else "unknown")
    logger.info("tool done", tool=outcome.name, is_error=outcome.is_error, duration_ms=outcome.duration_ms)
    return {"tool_use_id": outcome.tool_use_id, "name": outcome.name, "is_error": outcome.is_error}
