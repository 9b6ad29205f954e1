"""Finalize: record the run's terminal status (never overwriting an end already recorded) and announce it to the
tenant's webhooks (one queue message; never awaited by a step)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from aws_lambda_powertools.utilities.parser import parse
from aws_lambda_powertools.utilities.typing import LambdaContext

from functions.adapters import wiring
from functions.adapters.settings import EndSettings, load
from functions.handlers.events import FinalizeEvent
from functions.handlers.observability import observability

SETTINGS = EndSettings
obs = observability("finalize")
logger, metrics, tracer = obs.logger, obs.metrics, obs.tracer


@logger.inject_lambda_context
@tracer.capture_lambda_handler(capture_response=False, capture_error=False)  # no run content in traces
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    ref = parse(event=event, model=FinalizeEvent)
    logger.append_keys(run_id=ref.run_id, tenant=ref.tenant)
    obs.annotate_run(ref.tenant, ref.run_id, turn=ref.execution_turn)
    settings = load(SETTINGS)
    run = wiring.lifecycle(settings).end(ref.key, ref.status, ref.error, turn=ref.execution_turn, workflow_end=True)
    if unannounced := obs.unannounced(wiring.notifier(settings)):
        obs.emit("WebhookAnnounceFailures", unannounced)
    # the end this execution finalized: a session may have moved on to its next turn meanwhile (the step recorded
    # this turn's end, the status the workflow brings), and a run's later status is no end of this execution
    obs.emit("RunsFinished", status=(run.status if run.status.terminal else ref.status).value)
    obs.emit("StepsPerRun", run.completed_steps)
    if not run.turns:  # a run, not a session (whose turns wait on people: its age says nothing of latency)
        obs.emit("RunDuration", (wiring.CLOCK.now() - datetime.fromisoformat(run.created_at)).total_seconds())
    logger.info("run finished", status=run.status.value, steps=run.completed_steps, cost_usd=float(run.cost_usd))
    return {"run_id": run.run_id, "status": run.status.value}
