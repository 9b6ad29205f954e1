"""One agent step: one model call, persisted with its cost. Returns the routing decision."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Metrics, single_metric
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.parser import parse
from aws_lambda_powertools.utilities.typing import LambdaContext

from functions.adapters import wiring
from functions.adapters.settings import get_settings
from functions.agent.breaker import Breaker
from functions.agent.models import RunStatus
from functions.agent.response_cache import PROVIDER as RESPONSE_CACHE
from functions.agent.service import execute_step
from functions.handlers.events import StepEvent

logger = Logger(service="stepwise-step")
NAMESPACE = "Stepwise"
metrics = Metrics(namespace=NAMESPACE)  # service: POWERTOOLS_SERVICE_NAME


def _emit_circuit_transitions(breaker: Breaker) -> None:
    for circuit, state in breaker.transitions:
        with single_metric(name="CircuitTransitions", unit=MetricUnit.Count, value=1, namespace=NAMESPACE) as m:
            m.add_dimension(name="State", value=state.value)
            m.add_dimension(name="Circuit", value=circuit)  # provider:model, a bounded set
        logger.warning("circuit changed", circuit=circuit, state=state.value)
    if breaker.errors:
        logger.warning("circuit store unavailable; calls were let through", errors=breaker.errors)


@logger.inject_lambda_context
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    ref = parse(event=event, model=StepEvent)
    logger.append_keys(run_id=ref.run_id, tenant=ref.tenant, step=ref.step)
    breaker = wiring.breaker()
    try:
        outcome = execute_step(
            store=wiring.store(),
            model=wiring.model(),
            registry=wiring.registry(),
            prices=wiring.prices(),
            clock=wiring.CLOCK,
            tenant=ref.tenant,
            run_id=ref.run_id,
            step=ref.step,
            limits=wiring.limits(),
            cache_ttl=wiring.cache_ttl(),
            response_cache=wiring.response_cache(),
            response_cache_default=get_settings().response_cache,
            breaker=breaker,
            attempt=ref.attempt,
            waits=ref.waits,
        )
    finally:  # most openings happen on a failing call, i.e. when the step raises: emit them anyway
        _emit_circuit_transitions(breaker)
    if outcome.record is not None and not outcome.replayed:
        usage = outcome.record.usage
        served_by_cache = outcome.record.provider == RESPONSE_CACHE
        metrics.add_metric(name="ResponseCacheHits" if served_by_cache else "ModelCalls", unit="Count", value=1)
        metrics.add_metric(name="InputTokens", unit="Count", value=usage.input_tokens)
        metrics.add_metric(name="OutputTokens", unit="Count", value=usage.output_tokens)
        metrics.add_metric(name="CacheReadInputTokens", unit="Count", value=usage.cache_read_input_tokens)
        metrics.add_metric(name="CostMicroUSD", unit="Count", value=float(outcome.record.cost_usd * 1_000_000))
        metrics.add_metric(name="ModelLatency", unit="Milliseconds", value=outcome.record.duration_ms)
    for budget, percent in outcome.budget_percent.items():
        if budget == "Run":
            continue
        # CloudWatch alarms at 50/80/90/100 % watch this (Maximum over all tenants for TenantDaily)
        with single_metric(name="BudgetUsedPercent", unit=MetricUnit.Percent, value=percent, namespace=NAMESPACE) as m:
            m.add_dimension(name="Budget", value=budget)
    if outcome.error and outcome.status is RunStatus.BUDGET_EXCEEDED:
        logger.warning("budget refused the step", code=outcome.error.code, reason=outcome.error.message)
    logger.info("step done", decision=outcome.decision.value, replayed=outcome.replayed, tools=len(outcome.tool_calls))
    return outcome.state()
