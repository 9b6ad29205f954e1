"""Agent steps: a model call, persisted with its cost, then the fast tool calls it asked for; and while every call
ran in the step, the run's next steps (functions/agent/step_loop.py). Returns the last step's routing decision."""

from __future__ import annotations

import importlib
import random
import time
from typing import Any

from aws_lambda_powertools.utilities.parser import parse
from aws_lambda_powertools.utilities.typing import LambdaContext

from functions.adapters import wiring
from functions.adapters.settings import StepSettings, load
from functions.agent.breaker import Breaker
from functions.agent.circuit import CircuitState
from functions.agent.errors import RetryableModelError
from functions.agent.models import RunStatus
from functions.agent.pricing import PriceBook
from functions.agent.response_cache import PROVIDER as RESPONSE_CACHE
from functions.agent.step import StepOutcome, StepRunner
from functions.agent.step_loop import LaterStepFailed, Steps
from functions.handlers import warmup
from functions.handlers.events import StepEvent
from functions.handlers.observability import BUDGET_ALARM_THRESHOLDS, OTHER_TOOL, observability

SETTINGS = StepSettings
obs = observability("step")
logger, metrics, tracer = obs.logger, obs.metrics, obs.tracer
# How Lambda started this environment: with SnapStart ("snap-start", when a version is published) or provisioned
# concurrency, its init runs before any request waits on it (README "Cold starts")
WARM_INITS = ("snap-start", "provisioned-concurrency")


def _init_ahead() -> None:
    """Import the model client in the init: the SDK is the step's largest import, and no request waits on it here.
    Environments restored from one snapshot share its random state: each reseeds (the store's retry jitter)."""
    importlib.import_module("functions.adapters.anthropic_model")
    try:  # the SnapStart runtime hooks, in Lambda's Python runtime (snapshot-restore-py)
        hooks = importlib.import_module("snapshot_restore_py")
    except ImportError:
        return
    hooks.register_after_restore(random.seed)


if warmup.initialization() in WARM_INITS:
    _init_ahead()
warmup.prepare(lambda: wiring.prepare_step(load(SETTINGS)), logger)  # on demand too: the init has a full vCPU


@logger.inject_lambda_context
@tracer.capture_lambda_handler(capture_response=False, capture_error=False)  # no run content in traces
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    ref = parse(event=event, model=StepEvent)
    logger.append_keys(run_id=ref.run_id, tenant=ref.tenant, step=ref.step)
    obs.annotate_run(ref.tenant, ref.run_id, turn=ref.execution_turn, step=ref.step)
    settings = load(SETTINGS)
    runner = wiring.step_runner(settings, tracer)
    if ref.attempt:
        obs.emit("StepRetries")
    steps = Steps(runner, ref.ref, loop=wiring.step_loop(settings), attempt=ref.attempt, waits=ref.waits,
                  execution=ref.execution, in_step=ref.in_step,
                  time_left=lambda: context.get_remaining_time_in_millis() / 1000)  # fmt: skip
    last: StepOutcome | None = None
    started = time.perf_counter()
    try:
        for taken in steps:  # each step's metrics and logs as it is settled, under its own step number
            obs.emit("StepLatency", (time.perf_counter() - started) * 1000)
            if isinstance(taken, LaterStepFailed):
                _later_step_failed(taken)
                break
            _report(taken, runner)
            last = taken
            if steps.stopped is None:  # another step follows: its metrics out now (an invocation may yet die)
                metrics.flush_metrics()
                logger.append_keys(step=taken.next_step)
            started = time.perf_counter()
    except Exception as exc:  # the first step's error, or a later one's the workflow does not retry
        if isinstance(exc, RetryableModelError):  # Step Functions retries the step
            obs.emit("ModelErrors", kind=exc.kind)
        obs.emit("StepLatency", (time.perf_counter() - started) * 1000)
        raise
    finally:  # most openings happen on a failing call, i.e. when the step raises: emit them anyway
        if runner.breaker is not None:
            _report_circuits(runner.breaker)
    assert last is not None  # the first step either yields or raises
    if steps.taken > 1:
        logger.info("steps done", steps=steps.taken, first_step=ref.step, stopped=steps.stopped)
    return last.state()


def _report(outcome: StepOutcome, runner: StepRunner) -> None:
    _emit(outcome, runner.prices)
    for call in outcome.ran_in_step:  # the fast calls it ran itself, reported as the tool function reports its own
        tool = call.name if call.name in runner.toolbox.names else OTHER_TOOL
        obs.emit("ToolCalls", tool=tool, status="error" if call.is_error else "ok")
        logger.info("tool done", tool=call.name, tool_use_id=call.tool_use_id, is_error=call.is_error,
                    error_kind=call.error_kind, duration_ms=call.duration_ms, size=call.size)  # fmt: skip
    if outcome.error and outcome.status is RunStatus.BUDGET_EXCEEDED:
        logger.warning("budget refused the step", code=outcome.error.code, reason=outcome.error.message)
    logger.info("step done", decision=outcome.decision.value, replayed=outcome.replayed, tools=len(outcome.tool_calls),
                tools_in_step=len(outcome.ran_in_step))  # fmt: skip


def _later_step_failed(failed: LaterStepFailed) -> None:
    """A step after the invocation's first failed with an error the workflow retries: the workflow's next Task takes
    it again (the invocation returns the step before it)."""
    error = failed.error
    if isinstance(error, RetryableModelError):
        obs.emit("ModelErrors", kind=error.kind)
    logger.warning("step failed; the workflow takes it again", error=type(error).__name__, reason=str(error))


def _report_circuits(breaker: Breaker) -> None:
    transitions, errors = breaker.take_report()
    for circuit, state in transitions:
        obs.emit("CircuitTransitions", State=state.value, Circuit=circuit)  # provider:model, a bounded set
        if state is CircuitState.OPEN:
            obs.emit("CircuitsOpened")  # one series, whichever circuit
        logger.warning("circuit changed", circuit=circuit, state=state.value)
    if errors:
        logger.warning("circuit store unavailable; calls were let through", errors=errors)


def _emit(outcome: StepOutcome, prices: PriceBook) -> None:
    if outcome.record is not None and not outcome.replayed:
        record, usage = outcome.record, outcome.record.usage
        obs.emit("ResponseCacheHits" if record.provider == RESPONSE_CACHE else "ModelCalls")
        obs.emit("InputTokens", usage.input_tokens)
        obs.emit("OutputTokens", usage.output_tokens)
        obs.emit("CacheReadInputTokens", usage.cache_read_input_tokens)
        obs.emit("CacheCreationInputTokens", usage.cache_creation_input_tokens)
        cost = float(record.cost_usd * 1_000_000)
        obs.emit("CostMicroUSD", cost)
        obs.emit("CostMicroUSDByModel", cost, model=record.model if prices.knows(record.model) else "other")
        obs.emit("ModelLatency", record.duration_ms)
    if outcome.fallback:
        obs.emit("Fallbacks")
    if outcome.model_error is not None:  # the provider said when to retry: the step waits
        obs.emit("ModelErrors", kind=outcome.model_error)
    if outcome.status is RunStatus.BUDGET_EXCEEDED and outcome.error is not None:
        obs.emit("BudgetRefusals", code=outcome.error.code)
    for budget, percent in outcome.budget_percent.items():
        if budget != "Run":  # CloudWatch alarms at 50/80/90/100 % watch this (Maximum over all tenants)
            obs.emit("BudgetUsedPercent", percent, Budget=budget)
            if percent >= BUDGET_ALARM_THRESHOLDS[0]:  # the alarm has no tenant dimension: this line names it
                logger.info("budget use", budget=budget, percent=round(percent, 1))
