"""MarkFailed: the workflow's Catch target. Records why the run failed, in words a person can act on."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.parser import parse
from aws_lambda_powertools.utilities.typing import LambdaContext

from functions.adapters import wiring
from functions.adapters.settings import EndSettings, load
from functions.agent.lifecycle import failure_reason
from functions.handlers.events import MarkFailedEvent
from functions.handlers.observability import observability

SETTINGS = EndSettings
obs = observability("mark_failed")
logger, metrics, tracer = obs.logger, obs.metrics, obs.tracer


@logger.inject_lambda_context
@tracer.capture_lambda_handler(capture_response=False, capture_error=False)  # no run content in traces
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    ref = parse(event=event, model=MarkFailedEvent)
    logger.append_keys(run_id=ref.run_id, tenant=ref.tenant)
    obs.annotate_run(ref.tenant, ref.run_id, turn=ref.execution_turn)
    settings = load(SETTINGS)
    run = wiring.lifecycle(settings).fail(ref.key, ref.failure.Error, ref.failure.Cause, turn=ref.execution_turn)
    if unannounced := obs.unannounced(wiring.notifier(settings)):
        obs.emit("WebhookAnnounceFailures", unannounced)
    error = run.error or failure_reason(ref.failure.Error, ref.failure.Cause)
    obs.emit("RunsFailed")
    logger.error("run failed", code=error.code, reason=error.message, status=run.status.value)
    return {"run_id": run.run_id, "status": run.status.value, "error": error.model_dump()}
