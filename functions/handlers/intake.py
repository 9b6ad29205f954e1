"""SQS intake: start one Standard execution per run, named by the run id (duplicates start nothing); the
same queue carries each started run's watchdog checks, the delayed releases of ended runs' reservations, and the
retries of a cancel's StopExecution that failed."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from functions.adapters import wiring
from functions.adapters.settings import IntakeSettings, load
from functions.handlers import warmup
from functions.handlers.events import IntakeMessage
from functions.handlers.observability import observability

SETTINGS = IntakeSettings
obs = observability("intake")
logger, metrics, tracer = obs.logger, obs.metrics, obs.tracer
processor = BatchProcessor(event_type=EventType.SQS)


@tracer.capture_method(capture_response=False, capture_error=False)  # a batch mixes runs: one subsegment each
def record_handler(record: SQSRecord) -> str:
    message = IntakeMessage.model_validate_json(record.body)
    obs.annotate_run(message.tenant, message.run_id, turn=message.turn, step=message.release_step)
    settings = load(SETTINGS)
    intake = wiring.intake(settings)
    if message.stop_execution is not None:
        result, what = intake.stop(message.stop_execution, message.reason), "retried stop"
    elif message.release_step is not None:
        result, what = intake.release(message.key, message.release_step), "delayed release"
    elif message.watch:
        result, what = intake.watch(message.key, turn=message.turn), "run watchdog"
    else:
        deliveries = int(record.attributes.approximate_receive_count or 1)
        last_attempt = deliveries >= settings.intake_max_receive_count
        result, what = intake.start(message.key, last_attempt=last_attempt), "intake"
    if unannounced := obs.unannounced(wiring.notifier(settings)):  # a run the watchdog or a failed start ended
        obs.emit("WebhookAnnounceFailures", unannounced)
    logger.info(what, run_id=message.run_id, tenant=message.tenant, step=message.release_step, result=result)
    return result


@logger.inject_lambda_context
@tracer.capture_lambda_handler(capture_response=False, capture_error=False)  # no run content in traces
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    return process_partial_response(event=event, record_handler=record_handler, processor=processor, context=context)


def _prepare() -> None:
    """What a first batch builds, built in the init on Lambda (functions/handlers/warmup.py)."""
    settings = load(SETTINGS)
    wiring.intake(settings)
    wiring.notifier(settings)
    IntakeMessage.model_rebuild()


warmup.prepare(_prepare, logger)
