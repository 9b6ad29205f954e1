"""Gauges, every minute (an EventBridge schedule): how many runs and sessions are in progress now.

``ActiveRuns{kind, status}`` counts the index of active work (functions/agent/census.py: one Query per shard, no
Scan), each kind in QUEUED and RUNNING every minute, 0 included. Tenants are not a dimension (unbounded): the
tenants with the most active work are logged instead."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.parser import parse
from aws_lambda_powertools.utilities.parser.models import EventBridgeModel
from aws_lambda_powertools.utilities.typing import LambdaContext

from functions.adapters import wiring
from functions.adapters.settings import GaugesSettings, load
from functions.agent.census import count_active
from functions.handlers.observability import observability

SETTINGS = GaugesSettings
obs = observability("gauges")
logger, metrics, tracer = obs.logger, obs.metrics, obs.tracer


@logger.inject_lambda_context
@tracer.capture_lambda_handler(capture_response=False, capture_error=False)  # tenants' names stay in the logs
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    parse(event=event, model=EventBridgeModel)  # the schedule's event: nothing in it is read
    census = count_active(wiring.store(load(SETTINGS)))
    for kind, status, count in census.gauges():
        obs.emit("ActiveRuns", count, kind=kind, status=status.value)
    counted = census.public()
    logger.info("active work", **counted)
    return counted
