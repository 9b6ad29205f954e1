"""CloudWatch metrics for the dashboard and alarms, made only from what the functions emit.

Every Stepwise metric is looked up in the catalog (``functions/handlers/observability.py``): its namespace, its
``service`` dimension (the emitting function's) and exactly its other dimensions, with allowed values where the
catalog bounds them. An AWS metric must be one of ``AWS_METRICS``, with exactly its dimensions. A name, dimension
or value the catalog does not have raises ``MetricError`` at synth, so the dashboard and the alarms cannot read a
metric no one emits (tests/infrastructure/test_monitoring.py reads the synthesised template to make sure).

The expressions the alarms and the dashboard share (error rates, success rate, ended runs) are here too.

A dimension whose values are open-ended (a tool's name, a model id, a circuit's provider:model) is read with a
SEARCH expression (``stepwise_search``): it shows whatever values appear, where a fixed list would silently miss
a tool or model added after the deploy.
"""

from __future__ import annotations

from collections.abc import Mapping

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_sqs as sqs

from functions.agent.models import TERMINAL_STATUSES, RunStatus
from functions.handlers.observability import AWS_METRICS, NAMESPACE, MetricError, MetricSpec, metric_spec, service_name

FIVE_MINUTES = Duration.minutes(5)
MINUTE = Duration.minutes(1)


def _service(spec: MetricSpec, function: str | None = None) -> str:
    """The ``service`` of the metric's emitter: its one function, or ``function`` (checked by ``metric_spec``)."""
    if function is None and len(spec.functions) != 1:  # a metric several functions emit: the caller chooses
        raise MetricError(f"metric {spec.name!r} is emitted by {', '.join(spec.functions)}: name the function")
    return service_name(function or spec.functions[0])


def stepwise_metric(
    name: str,
    statistic: str,
    *,
    period: Duration = FIVE_MINUTES,
    label: str | None = None,
    function: str | None = None,
    **dimensions: str,
) -> cloudwatch.Metric:
    """The catalog's metric ``name`` with its ``service`` (``function``'s, for a metric several functions emit) and
    exactly ``dimensions`` (checked: raises MetricError)."""
    spec = metric_spec(name, function, dimensions)
    return cloudwatch.Metric(
        namespace=NAMESPACE,
        metric_name=name,
        dimensions_map={"service": _service(spec, function), **dimensions},
        statistic=statistic,
        period=period,
        label=label,
    )


def each_value(
    name: str, dimension: str, statistic: str, *, period: Duration = FIVE_MINUTES
) -> dict[str, cloudwatch.Metric]:
    """One series per value the catalog allows for ``dimension`` (a bounded one), labelled by the value."""
    spec = metric_spec(name)
    if spec.dimensions != (dimension,) or dimension not in spec.values:
        raise MetricError(f"metric {name!r}: {dimension!r} is not its one bounded dimension")
    return {
        value: stepwise_metric(name, statistic, period=period, label=value, **{dimension: value})
        for value in sorted(spec.values[dimension])
    }


def each_function(name: str, statistic: str, *, period: Duration = FIVE_MINUTES) -> dict[str, cloudwatch.Metric]:
    """One series per function that emits metric ``name`` (one with no dimension of its own), labelled by it."""
    return {
        function: stepwise_metric(name, statistic, period=period, label=function, function=function)
        for function in metric_spec(name).functions
    }


def search_expression(name: str, statistic: str, period: Duration = FIVE_MINUTES) -> str:
    """``SEARCH(...)`` over every series of a metric with an open-ended dimension: exactly its dimension set
    (the schema in braces), its name and its emitters' ``service``."""
    spec = metric_spec(name)
    if all(dimension in spec.values for dimension in spec.dimensions):
        raise MetricError(f"metric {name!r} has no open-ended dimension: chart each value, not a SEARCH")
    schema = ",".join((NAMESPACE, "service", *spec.dimensions))
    # every function that emits it (ToolCalls: the tool function, and the step for the fast calls it runs itself)
    services = " OR ".join(f'service="{service_name(function)}"' for function in spec.functions)
    query = f'{{{schema}}} MetricName="{name}" ' + (f"({services})" if len(spec.functions) > 1 else services)
    return f"SEARCH('{query}', '{statistic}', {int(period.to_seconds())})"


def series_label(name: str) -> str:
    """The label of each series a SEARCH of metric ``name`` returns: its dimensions' values (CloudWatch's dynamic
    labels). An expression's label prefixes every series it returns: without one, CDK labels the expression with
    its own text, and every series of the chart would start with the whole SEARCH(...)."""
    return " ".join(f"${{PROP('Dim.{dimension}')}}" for dimension in metric_spec(name).dimensions)


def stepwise_search(
    name: str, statistic: str, *, period: Duration = FIVE_MINUTES, scale: str = ""
) -> cloudwatch.MathExpression:
    """A SEARCH expression (``search_expression``), optionally scaled (``scale``: e.g. ``"/1000000"``), each
    series labelled by its dimensions' values."""
    return cloudwatch.MathExpression(
        expression=search_expression(name, statistic, period) + scale, period=period, label=series_label(name),
        using_metrics={},
    )  # fmt: skip


def aws_metric(
    namespace: str,
    name: str,
    statistic: str,
    *,
    period: Duration = FIVE_MINUTES,
    label: str | None = None,
    **dimensions: str,
) -> cloudwatch.Metric:
    """An AWS metric of ``AWS_METRICS`` with exactly its dimensions (raises MetricError)."""
    expected = AWS_METRICS.get((namespace, name))
    if expected is None:
        raise MetricError(f"{namespace} {name} is not in AWS_METRICS (functions/handlers/observability.py)")
    if set(dimensions) != set(expected):
        raise MetricError(f"{namespace} {name} has dimensions {sorted(expected)}, not {sorted(dimensions)}")
    return cloudwatch.Metric(
        namespace=namespace, metric_name=name, dimensions_map=dimensions, statistic=statistic, period=period,
        label=label,
    )  # fmt: skip


def math(
    expression: str, metrics: Mapping[str, cloudwatch.IMetric], *, label: str, period: Duration = FIVE_MINUTES
) -> cloudwatch.MathExpression:
    """A metric math expression over ``metrics`` (ids: lower-case first letter, as CloudWatch requires)."""
    return cloudwatch.MathExpression(expression=expression, using_metrics=metrics, label=label, period=period)


def api_error_rate(min_count: int, period: Duration = FIVE_MINUTES) -> cloudwatch.MathExpression:
    """Percent of the api function's answers that were 5xx (0 while fewer than ``min_count`` answers)."""
    by_class = each_value("Requests", "status_class", "Sum", period=period)
    answers = {f"r{status}": metric for status, metric in by_class.items()}
    total = " + ".join(f"FILL({name}, 0)" for name in answers)
    return math(
        f"IF(({total}) >= {min_count}, 100 * FILL(r5xx, 0) / ({total}), 0)",
        answers, label="5xx share of API answers (%)", period=period,
    )  # fmt: skip


def executions(state_machine_arn: str, period: Duration, *outcomes: str) -> dict[str, cloudwatch.IMetric]:
    """AWS/States ``Executions<outcome>`` of the state machine, Sum, by id ``ex_<outcome>`` (lower case)."""
    return {
        f"ex_{outcome.lower()}": aws_metric("AWS/States", f"Executions{outcome}", "Sum", period=period,
                                            label=outcome, StateMachineArn=state_machine_arn)
        for outcome in outcomes
    }  # fmt: skip


def queue_metric(queue: sqs.IQueue, name: str, *, period: Duration = FIVE_MINUTES) -> cloudwatch.Metric:
    """An AWS/SQS metric of ``queue`` (Maximum: the depth or age at its worst in the period)."""
    return aws_metric("AWS/SQS", name, "Maximum", period=period, QueueName=queue.queue_name)


def _ended_runs(state_machine_arn: str, period: Duration) -> tuple[dict[str, cloudwatch.IMetric], str]:
    """Every end of a run or a session's turn, counted once: the ends the workflow records (RunsFinished, by
    status; their executions succeed) plus the executions that failed, timed out or were stopped (their runs
    never reach Finalize). Returns the metrics by id and the sum's expression."""
    finished: dict[str, cloudwatch.IMetric] = {
        f"fin_{status.value.lower()}": stepwise_metric("RunsFinished", "Sum", period=period, status=status.value)
        for status in sorted(TERMINAL_STATUSES)
    }
    metrics = {**finished, **executions(state_machine_arn, period, "Failed", "TimedOut", "Aborted")}
    return metrics, " + ".join(f"FILL({name}, 0)" for name in metrics)


RUN_ERRORS = "FILL(fin_failed, 0) + FILL(fin_timed_out, 0) + FILL(ex_failed, 0) + FILL(ex_timedout, 0)"


def run_error_rate(state_machine_arn: str, min_count: int, period: Duration) -> cloudwatch.MathExpression:
    """Percent of ended runs and turns that ended FAILED or TIMED_OUT (0 while fewer than ``min_count`` ended)."""
    metrics, ended = _ended_runs(state_machine_arn, period)
    return math(f"IF(({ended}) >= {min_count}, 100 * ({RUN_ERRORS}) / ({ended}), 0)", metrics,
                label="runs ending FAILED or TIMED_OUT (%)", period=period)  # fmt: skip


def run_success_rate(state_machine_arn: str, period: Duration) -> cloudwatch.MathExpression:
    """Percent of ended runs and turns that succeeded (a run SUCCEEDED, a session's turn IDLE)."""
    metrics, ended = _ended_runs(state_machine_arn, period)
    succeeded = " + ".join(f"FILL(fin_{s.value.lower()}, 0)" for s in (RunStatus.SUCCEEDED, RunStatus.IDLE))
    return math(f"100 * ({succeeded}) / ({ended})", metrics, label="success rate (%)", period=period)


def active_runs(kind: str, *, period: Duration = FIVE_MINUTES) -> dict[str, cloudwatch.Metric]:
    """``ActiveRuns`` of ``kind`` (``run`` or ``session``), one series per status, by id ``<kind>_<status>`` (lower
    case). A gauge, published every minute: Maximum is the most active in a period."""
    return {
        f"{kind}_{status.lower()}": stepwise_metric("ActiveRuns", "Maximum", period=period, label=f"{kind} {status}",
                                                    kind=kind, status=status)
        for status in sorted(metric_spec("ActiveRuns").values["status"])
    }  # fmt: skip


def in_progress(kind: str, period: Duration = MINUTE) -> cloudwatch.MathExpression:
    """How many runs (``kind`` run) or sessions in a turn are active: ``ActiveRuns`` summed over its statuses."""
    by_status = active_runs(kind, period=period)
    return math(" + ".join(f"FILL({name}, 0)" for name in by_status), by_status, label=f"{kind}s", period=period)


def failed_executions(state_machine_arn: str, period: Duration = FIVE_MINUTES) -> cloudwatch.MathExpression:
    metrics = executions(state_machine_arn, period, "Failed", "TimedOut")
    return math("FILL(ex_failed, 0) + FILL(ex_timedout, 0)", metrics, label="executions failed or timed out",
                period=period)  # fmt: skip
