"""One agent step: one model call, persisted with its cost. Returns the routing decision."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.parser import parse
from aws_lambda_powertools.utilities.typing import LambdaContext

from functions.adapters import wiring
from functions.adapters.settings import StepSettings, load
from functions.agent.breaker import Breaker
from functions.agent.models import RunStatus
from functions.agent.response_cache import PROVIDER as RESPONSE_CACHE
from functions.agent.step import StepOutcome
from functions.handlers.events import StepEvent
from functions.handlers.observability import BUDGET_ALARM_THRESHOLDS, observability

SETTINGS = StepSettings
obs = observability("step")
logger, metrics = obs.logger, obs.metrics


@logger.inject_lambda_context
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    ref = parse(event=event, model=StepEvent)
    logger.append_keys(run_id=ref.run_id, tenant=ref.tenant, step=ref.step)
    runner = wiring.step_runner(load(SETTINGS))
    try:
        outcome = runner.run(ref.ref, attempt=ref.attempt, waits=ref.waits, execution=ref.execution)
    finally:  # most openings happen on a failing call, i.e. when the step raises: emit them anyway
        if runner.breaker is not None:
            _report_circuits(runner.breaker)
    _emit(outcome)
    if outcome.error and outcome.status is RunStatus.BUDGET_EXCEEDED:
        logger.warning("budget refused the step", code=outcome.error.code, reason=outcome.error.message)
    logger.info("step done", decision=outcome.decision.value, replayed=outcome.replayed, tools=len(outcome.tool_calls))
    return outcome.state()


def _report_circuits(breaker: Breaker) -> None:
    transitions, errors = breaker.take_report()
    for circuit, state in transitions:
        obs.count("CircuitTransitions", State=state.value, Circuit=circuit)  # provider:model, a bounded set
        logger.warning("circuit changed", circuit=circuit, state=state.value)
    if errors:
        logger.warning("circuit store unavailable; calls were let through", errors=errors)


def _emit(outcome: StepOutcome) -> None:
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
        if budget != "Run":  # CloudWatch alarms at 50/80/90/100 % watch this (Maximum over all tenants)
            obs.count("BudgetUsedPercent", percent, unit=MetricUnit.Percent, Budget=budget)
            if percent >= BUDGET_ALARM_THRESHOLDS[0]:  # the alarm has no tenant dimension: this line names it
                logger.info("budget use", budget=budget, percent=round(percent, 1))
