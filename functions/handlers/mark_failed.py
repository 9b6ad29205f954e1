"""MarkFailed: the workflow's Catch target. Records why the run failed, in words a person can act on."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.utilities.parser import parse
from aws_lambda_powertools.utilities.typing import LambdaContext

from functions.adapters import wiring
from functions.agent.service import failure_reason, mark_failed
from functions.handlers.events import MarkFailedEvent

logger = Logger(service="stepwise-mark-failed")
metrics = Metrics(namespace="Stepwise")  # service: POWERTOOLS_SERVICE_NAME


@logger.inject_lambda_context
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    ref = parse(event=event, model=MarkFailedEvent)
    logger.append_keys(run_id=ref.run_id, tenant=ref.tenant)
    run = mark_failed(
        store=wiring.store(), tenant=ref.tenant, run_id=ref.run_id, error=ref.failure.Error, cause=ref.failure.Cause
    )
    error = run.error or failure_reason(ref.failure.Error, ref.failure.Cause)
    metrics.add_metric(name="RunsFailed", unit="Count", value=1)
    logger.error("run failed", code=error.code, reason=error.message, status=run.status.value)
    return {"run_id": run.run_id, "status": run.status.value, "error": error.model_dump()}
