"""The operations dashboard: the panels of the seed articles (success rate, average latency, cost today, active runs;
requests over 24 h; latency distribution; error rate; tool usage; cost trend) and this runtime's (cost by model,
cache-read share, tokens, queue depth and age, dead letters, executions, runs and sessions in progress, circuits,
budget use, retries, throttles, fallbacks, budget refusals, runs by status, the API's refusals, webhooks, live event
streams), then every alarm's state.

Every metric comes from infra/metrics.py (the catalog's or AWS_METRICS'): the dashboard cannot chart a metric no
function emits. Open-ended dimensions (tool, model, Circuit) are SEARCH expressions; bounded ones, one series each.
Costs are emitted in micro-USD and shown in dollars.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_sqs as sqs
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from infra.metrics import (
    FIVE_MINUTES,
    active_runs,
    api_error_rate,
    each_function,
    each_value,
    executions,
    in_progress,
    math,
    queue_metric,
    run_error_rate,
    run_success_rate,
    stepwise_metric,
    stepwise_search,
)

if TYPE_CHECKING:
    from infra.constructs.monitoring import AlarmThresholds

HOUR, DAY = Duration.hours(1), Duration.days(1)
PERCENTILES = ("p50", "p90", "p99")
WIDE, HIGH = 8, 6  # three graphs a row (the grid is 24 wide)


def _cost_usd(period: Duration) -> cloudwatch.MathExpression:
    cost = stepwise_metric("CostMicroUSD", "Sum", period=period)
    return math("FILL(cost, 0) / 1000000", {"cost": cost}, label="cost ($)", period=period)


def _percentiles(name: str, what: str, period: Duration = FIVE_MINUTES) -> list[cloudwatch.IMetric]:
    return [stepwise_metric(name, p, period=period, label=f"{what} {p}") for p in PERCENTILES]


def _graph(
    title: str,
    left: Sequence[cloudwatch.IMetric],
    *,
    right: Sequence[cloudwatch.IMetric] = (),
    left_annotations: Sequence[cloudwatch.HorizontalAnnotation] = (),
    right_annotations: Sequence[cloudwatch.HorizontalAnnotation] = (),
    period: Duration = FIVE_MINUTES,
    start: str | None = None,
    stacked: bool = False,
) -> cloudwatch.GraphWidget:
    return cloudwatch.GraphWidget(  # jsii takes lists, not tuples
        title=title, left=list(left), right=list(right), left_annotations=list(left_annotations),
        right_annotations=list(right_annotations), period=period, start=start, stacked=stacked, width=WIDE,
        height=HIGH,
    )  # fmt: skip


def _lines(*values: float, label: str) -> list[cloudwatch.HorizontalAnnotation]:
    return [cloudwatch.HorizontalAnnotation(value=value, label=f"{label} {value:g}") for value in values]


def _cache_read_share() -> cloudwatch.MathExpression:
    tokens = {
        "read": stepwise_metric("CacheReadInputTokens", "Sum"),
        "fresh": stepwise_metric("InputTokens", "Sum"),
        "written": stepwise_metric("CacheCreationInputTokens", "Sum"),
    }
    return math("100 * FILL(read, 0) / (FILL(fresh, 0) + FILL(read, 0) + FILL(written, 0))", tokens,
                label="cache-read share of input tokens (%)")  # fmt: skip


def operations_dashboard(
    scope: Construct,
    construct_id: str,
    *,
    name: str,
    state_machine: sfn.IStateMachine,
    intake_queue: sqs.IQueue,
    dead_letter_queues: dict[str, sqs.IQueue],
    thresholds: AlarmThresholds,
    alarms: list[cloudwatch.IAlarm],
) -> cloudwatch.Dashboard:
    arn = state_machine.state_machine_arn
    summary = [
        cloudwatch.SingleValueWidget(
            title="Run success rate (%)", metrics=[run_success_rate(arn, DAY)], set_period_to_time_range=True,
            width=4, height=4),
        cloudwatch.SingleValueWidget(
            title="Average latency", set_period_to_time_range=True, width=5, height=4,
            metrics=[stepwise_metric("RunDuration", "Average", label="run (s)"),
                     stepwise_metric("StepLatency", "Average", label="step (ms)")]),
        cloudwatch.SingleValueWidget(
            title="Cost, last 24 h ($)", metrics=[_cost_usd(DAY)], start="-PT24H", set_period_to_time_range=True,
            width=5, height=4),
        cloudwatch.SingleValueWidget(
            title="Runs accepted and cancelled", set_period_to_time_range=True, width=5, height=4,
            metrics=[stepwise_metric("RunsAccepted", "Sum", label="accepted"),
                     stepwise_metric("RunsCancelled", "Sum", label="cancelled")]),
        # a gauge: its latest minute, not the time range's
        cloudwatch.SingleValueWidget(
            title="In progress now", metrics=[in_progress("run"), in_progress("session")], width=5, height=4),
    ]  # fmt: skip
    seed = [
        _graph("Requests, last 24 h (by status class)",
               list(each_value("Requests", "status_class", "Sum", period=HOUR).values()), start="-PT24H",
               stacked=True, period=HOUR),
        _graph("Latency distribution: step and model call (ms)",
               _percentiles("StepLatency", "step") + _percentiles("ModelLatency", "model call")),
        _graph("Latency distribution: run duration (s)", _percentiles("RunDuration", "run"),
               right=[stepwise_metric("StepsPerRun", "Average", label="steps per run, average"),
                      stepwise_metric("StepsPerRun", "Maximum", label="steps per run, maximum")]),
        _graph("Error rate (%)",
               [api_error_rate(1), run_error_rate(arn, 1, FIVE_MINUTES)],
               left_annotations=_lines(thresholds.api_error_rate_percent, label="API alarm")
               + _lines(thresholds.run_error_rate_percent, label="run alarm")),
        _graph("Tool usage (calls by tool and status, per hour)", [stepwise_search("ToolCalls", "Sum", period=HOUR)],
               stacked=True, period=HOUR),
        _graph("Cost trend ($ per hour, 7 days)", [_cost_usd(HOUR)], start="-P7D", period=HOUR),
    ]  # fmt: skip
    runtime = [
        _graph("Cost by model ($ per hour)",
               [stepwise_search("CostMicroUSDByModel", "Sum", period=HOUR, scale=" / 1000000")], period=HOUR),
        _graph("Prompt cache: read share of input tokens (%)", [_cache_read_share()]),
        _graph("Tokens", [stepwise_metric(name, "Sum", label=name) for name in
                          ("InputTokens", "OutputTokens", "CacheReadInputTokens", "CacheCreationInputTokens")]),
        _graph("Intake queue: depth and oldest message (s)",
               [queue_metric(intake_queue, "ApproximateNumberOfMessagesVisible")],
               right=[queue_metric(intake_queue, "ApproximateAgeOfOldestMessage")],
               right_annotations=_lines(thresholds.queue_age_seconds, label="alarm")),
        _graph("Dead-letter queues (messages waiting)",
               [queue_metric(queue, "ApproximateNumberOfMessagesVisible").with_(label=label)
                for label, queue in dead_letter_queues.items()]),
        _graph("Executions, and runs ended outside the workflow",
               list(executions(arn, FIVE_MINUTES, "Started", "Succeeded", "Failed", "TimedOut", "Aborted").values()),
               right=[stepwise_metric("ExecutionsEnded", "Sum", label="ended outside (all)"),
                      *each_value("ExecutionsEndedByStatus", "status", "Sum").values()]),
        _graph("In progress: runs and sessions by status (the most in each 5 minutes)",
               [*active_runs("run").values(), *active_runs("session").values()], stacked=True),
        _graph("Circuits: opened, and transitions by circuit and state",
               [stepwise_metric("CircuitsOpened", "Sum", label="opened"),
                stepwise_search("CircuitTransitions", "Sum")]),
        _graph("Budget use (% committed, the highest tenant)",
               list(each_value("BudgetUsedPercent", "Budget", "Maximum").values()),
               left_annotations=_lines(*thresholds.budget_percents, label="alarm")),
        _graph("Model calls: retries, throttles (errors by kind), fallbacks",
               [stepwise_metric(name, "Sum", label=name) for name in
                ("ModelCalls", "ResponseCacheHits", "StepRetries", "Fallbacks")]
               + list(each_value("ModelErrors", "kind", "Sum").values())),
        _graph("Budget refusals (by code)", list(each_value("BudgetRefusals", "code", "Sum").values())),
        _graph("Runs ended (by status)",
               [*each_value("RunsFinished", "status", "Sum").values(),
                stepwise_metric("RunsFailed", "Sum", label="FAILED by the workflow's Catch")]),
        _graph("API: refusals, errors and latency (ms)",
               [stepwise_metric(name, "Sum", label=name) for name in
                ("AuthRefused", "RequestsRateLimited", "ApiErrors", "RateLimiterErrors")],
               right=_percentiles("RequestLatency", "answer")),
        _graph("Webhooks: events fanned out, deliveries (by outcome); ends not announced (by function)",
               [stepwise_metric("WebhookEvents", "Sum", label="events"),
                *each_value("WebhookDeliveries", "status", "Sum").values()],
               right=list(each_function("WebhookAnnounceFailures", "Sum").values())),
        _graph("Live events: streams opened (by kind), and how long they stay open (s)",
               list(each_value("StreamsOpened", "kind", "Sum").values()),
               right=list(each_value("StreamDuration", "kind", "Maximum").values())),
    ]  # fmt: skip
    state = cloudwatch.AlarmStatusWidget(title="Alarms", alarms=alarms, width=24, height=2 + len(alarms) // 4)
    rows: list[Sequence[cloudwatch.IWidget]] = [summary, seed[:3], seed[3:], runtime[:3], runtime[3:6]]
    rows += [runtime[6:9], runtime[9:12], runtime[12:15], [state]]
    return cloudwatch.Dashboard(
        scope, construct_id, dashboard_name=name, default_interval=Duration.hours(24), widgets=rows
    )
