"""EventBridge "Step Functions Execution Status Change": a run whose execution timed out, failed or was
stopped outside Stepwise gets a terminal status and a reason instead of staying RUNNING forever.

Statuses already recorded (SUCCEEDED, CANCELLED by the API, FAILED by MarkFailed) are never overwritten.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.parser import parse
from aws_lambda_powertools.utilities.parser.models import EventBridgeModel
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel, ConfigDict, Json

from functions.adapters import wiring
from functions.adapters.settings import WorkflowEndedSettings, load
from functions.agent.models import RunError, RunStatus, turn_of
from functions.handlers.events import RunRef
from functions.handlers.observability import observability

SETTINGS = WorkflowEndedSettings
obs = observability("workflow_ended")
logger, metrics, tracer = obs.logger, obs.metrics, obs.tracer

OUTCOMES = {
    "TIMED_OUT": (RunStatus.TIMED_OUT, "RUN_TIMEOUT", "the run exceeded the workflow's timeout"),
    "FAILED": (RunStatus.FAILED, "WORKFLOW_FAILED", "the workflow execution failed"),
    "ABORTED": (RunStatus.CANCELLED, "EXECUTION_STOPPED", "the workflow execution was stopped"),
}


class ExecutionStatusChange(BaseModel):
    model_config = ConfigDict(defer_build=True)
    name: str
    status: str
    input: Json[RunRef]
    error: str | None = None
    cause: str | None = None


class ExecutionEvent(EventBridgeModel):
    detail: ExecutionStatusChange


@logger.inject_lambda_context
@tracer.capture_lambda_handler(capture_response=False, capture_error=False)  # no run content in traces
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    change = parse(event=event, model=ExecutionEvent).detail
    ref = change.input
    logger.append_keys(run_id=ref.run_id, tenant=ref.tenant)
    obs.annotate_run(ref.tenant, ref.run_id, turn=turn_of(change.name))
    if change.status not in OUTCOMES:
        return {"run_id": ref.run_id, "ignored": change.status}
    status, code, message = OUTCOMES[change.status]
    detail = ": ".join(part for part in (change.error, change.cause) if part)
    error = RunError(code=code, message=f"{message} ({detail[:900]})" if detail else message)
    # a timed-out or stopped execution may leave a model call running: its reservation is released later
    in_flight = change.status in ("TIMED_OUT", "ABORTED")
    # an execution that timed out or failed never reached Finalize or MarkFailed: an end its last step recorded
    # (which announces nothing) is announced here (the same event id, if they did announce it). A stopped one was
    # stopped by the cancel that recorded and announced its end.
    workflow_end = change.status in ("TIMED_OUT", "FAILED")
    settings = load(SETTINGS)
    run = wiring.lifecycle_with_queue(settings).end(
        ref.key, status, error, call_in_flight=in_flight, turn=turn_of(change.name), workflow_end=workflow_end
    )
    if unannounced := obs.unannounced(wiring.notifier(settings)):
        obs.emit("WebhookAnnounceFailures", unannounced)
    obs.emit("ExecutionsEnded")
    obs.emit("ExecutionsEndedByStatus", status=change.status)
    logger.warning("execution ended outside the workflow", execution_status=change.status, run_status=run.status.value)
    return {"run_id": run.run_id, "status": run.status.value}
