"""The webhooks queue: fan each announced event out to its tenant's endpoints, and make each delivery, once per
message (functions/agent/webhooks.py). Batches with partial failures: a delivery that failed stays on the queue,
invisible for its backoff (set on the message by the use case), and is delivered again; after the last attempt the
queue's redrive moves it to the dead-letter queue. Nothing here runs inside a run's workflow."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel, ConfigDict, Field

from functions.adapters import wiring
from functions.adapters.settings import WebhooksSettings, load
from functions.agent.errors import DeliveryFailedError
from functions.agent.webhooks import MAX_ID, WebhookEvent
from functions.handlers.observability import observability

SETTINGS = WebhooksSettings
obs = observability("webhooks")
logger, metrics, tracer = obs.logger, obs.metrics, obs.tracer
# a batch whose every delivery failed (its endpoint is down) is reported item by item like any other, not raised: an
# endpoint being down is not the function failing
processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)


class WebhookMessage(BaseModel):
    """An event to fan out (no ``webhook_id``), or one delivery of it (functions/adapters/webhook_delivery.py)."""

    model_config = ConfigDict(defer_build=True)

    tenant: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    event: WebhookEvent
    webhook_id: str | None = Field(default=None, min_length=1, max_length=MAX_ID)


@tracer.capture_method(capture_response=False, capture_error=False)  # a batch mixes tenants: one subsegment each
def record_handler(record: SQSRecord) -> str:
    message = WebhookMessage.model_validate_json(record.body)
    obs.annotate_run(message.tenant, message.event.data.id)  # the run or session that ended (ids Stepwise made)
    deliveries = wiring.deliveries(load(SETTINGS))
    event = message.event.model_dump()
    keys: dict[str, Any] = {
        "tenant": message.tenant,
        "event_id": message.event.id,
        "event_type": message.event.data.type,
    }
    if message.webhook_id is None:
        wanted = deliveries.fan_out(message.tenant, event)
        if wanted:
            obs.emit("WebhookEvents")
        logger.info("webhook event fanned out", resource_id=message.event.data.id, endpoints=len(wanted), **keys)
        return f"fanned out to {len(wanted)}"
    attempt = int(record.attributes.approximate_receive_count or 1)
    try:
        outcome = deliveries.deliver(
            message.tenant, message.webhook_id, event, attempt=attempt, receipt=record.receipt_handle
        )
    except DeliveryFailedError as exc:
        obs.emit("WebhookDeliveries", status="dead_lettered" if exc.last_attempt else "retrying")
        log = logger.error if exc.last_attempt else logger.warning
        log("webhook delivery failed", webhook_id=message.webhook_id, attempt=attempt, reason=str(exc), **keys)
        raise
    obs.emit("WebhookDeliveries", status=outcome)
    logger.info("webhook delivery", webhook_id=message.webhook_id, attempt=attempt, outcome=outcome, **keys)
    return outcome


@logger.inject_lambda_context
@tracer.capture_lambda_handler(capture_response=False, capture_error=False)  # no run content in traces
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    return process_partial_response(event=event, record_handler=record_handler, processor=processor, context=context)
