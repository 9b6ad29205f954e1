"""Finalize: record the run's terminal status (never overwriting a cancellation)."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Metrics, single_metric
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.parser import parse
from aws_lambda_powertools.utilities.typing import LambdaContext

from functions.adapters import wiring
from functions.agent.service import finalize_run
from functions.handlers.events import FinalizeEvent

logger = Logger(service="stepwise-finalize")
NAMESPACE = "Stepwise"
metrics = Metrics(namespace=NAMESPACE)  # service: POWERTOOLS_SERVICE_NAME


@logger.inject_lambda_context
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    ref = parse(event=event, model=FinalizeEvent)
    logger.append_keys(run_id=ref.run_id, tenant=ref.tenant)
    run = finalize_run(store=wiring.store(), tenant=ref.tenant, run_id=ref.run_id, status=ref.status, error=ref.error)
    with single_metric(name="RunsFinished", unit=MetricUnit.Count, value=1, namespace=NAMESPACE) as metric:
        metric.add_dimension(name="status", value=run.status.value)
    metrics.add_metric(name="StepsPerRun", unit="Count", value=run.steps)
    logger.info("run finished", status=run.status.value, steps=run.steps, cost_usd=float(run.cost_usd))
    return {"run_id": run.run_id, "status": run.status.value}
