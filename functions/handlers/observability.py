"""Logs and metrics of every function, named in one place: one metrics namespace, and one service name per
function that is both its log's ``service`` and its metrics' ``service`` dimension (the alarms use it).

Tracing is X-Ray's active tracing, switched on per function by the stack (infra/constructs/agent_functions.py).
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass

from aws_lambda_powertools import Logger, Metrics, single_metric
from aws_lambda_powertools.logging.formatter import LambdaPowertoolsFormatter
from aws_lambda_powertools.metrics import MetricUnit

from functions.agent.redact import redact

NAMESPACE = "Stepwise"
BUDGET_ALARM_THRESHOLDS = (50, 80, 90, 100)  # percent of a budget committed: alarms (infra), log lines (step)

# Handlers that add no metric on some paths (reads, replays); powertools would warn on every one of them.
warnings.filterwarnings("ignore", message="No application metrics to publish", category=UserWarning)


class RedactingFormatter(LambdaPowertoolsFormatter):
    """Every log line, exception text included, with keys, tokens, ARNs and account ids taken out."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def service_name(function: str) -> str:
    """The service of a function (``mark_failed`` -> ``stepwise-mark-failed``)."""
    return "stepwise-" + function.replace("_", "-")


@dataclass(frozen=True)
class Observability:
    service: str
    logger: Logger
    metrics: Metrics

    def count(self, name: str, value: float = 1, *, unit: MetricUnit = MetricUnit.Count, **dimensions: str) -> None:
        """A metric with its own dimensions (beside ``service``), emitted at once as its own EMF blob."""
        with single_metric(
            name=name, unit=unit, value=value, namespace=NAMESPACE, default_dimensions={"service": self.service}
        ) as metric:
            for dimension, dimension_value in dimensions.items():
                metric.add_dimension(name=dimension, value=dimension_value)


def observability(function: str) -> Observability:
    """The logger and metrics of one function (its name as in infra/functions.py)."""
    service = service_name(function)
    logger = Logger(service=service, logger_formatter=RedactingFormatter())
    return Observability(service, logger, Metrics(namespace=NAMESPACE, service=service))
