"""SQS intake: start one Standard execution per run, named by the run id (duplicates start nothing)."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from functions.adapters import wiring
from functions.adapters.settings import get_settings
from functions.agent.service import release_reservation, start_run, watch_run
from functions.handlers.events import IntakeMessage

logger = Logger(service="stepwise-intake")
processor = BatchProcessor(event_type=EventType.SQS)


def record_handler(record: SQSRecord) -> str:
    ref = IntakeMessage.model_validate_json(record.body)
    if ref.release_step is not None:
        released = release_reservation(
            store=wiring.store(), tenant=ref.tenant, run_id=ref.run_id, step=ref.release_step
        )
        logger.info("delayed release", run_id=ref.run_id, tenant=ref.tenant, step=ref.release_step, result=released)
        return released
    if ref.watch:
        watched = watch_run(
            store=wiring.store(), workflow=wiring.workflow(), queue=wiring.queue(), tenant=ref.tenant, run_id=ref.run_id
        )
        logger.info("run watchdog", run_id=ref.run_id, tenant=ref.tenant, result=watched)
        return watched
    deliveries = int(record.attributes.approximate_receive_count or 1)
    result = start_run(
        store=wiring.store(),
        workflow=wiring.workflow(),
        tenant=ref.tenant,
        run_id=ref.run_id,
        last_attempt=deliveries >= get_settings().intake_max_receive_count,
        queue=wiring.queue(),
    )
    logger.info("intake", run_id=ref.run_id, tenant=ref.tenant, result=result)
    return result


@logger.inject_lambda_context
def handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    return process_partial_response(event=event, record_handler=record_handler, processor=processor, context=context)
