"""CloudWatch alarms on spend: each configured daily budget at 50/80/90/100 % (metric BudgetUsedPercent,
emitted as EMF by the step function after every step: committed = spent + reservations in flight)."""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from functions.handlers.observability import BUDGET_ALARM_THRESHOLDS, NAMESPACE, service_name


class BudgetAlarms(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, budgets: list[str]) -> None:
        super().__init__(scope, construct_id)
        self.alarms: list[cloudwatch.Alarm] = []
        for budget in budgets:
            metric = cloudwatch.Metric(
                namespace=NAMESPACE,
                metric_name="BudgetUsedPercent",
                dimensions_map={"Budget": budget, "service": service_name("step")},
                statistic="Maximum",
                period=Duration.minutes(1),
            )
            for threshold in BUDGET_ALARM_THRESHOLDS:
                self.alarms.append(
                    cloudwatch.Alarm(
                        self,
                        f"{budget}{threshold}",
                        alarm_description=f"Stepwise {budget} budget at {threshold} % (spent + in flight)",
                        metric=metric,
                        threshold=threshold,
                        evaluation_periods=1,
                        comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
                        treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
                    )
                )


def messages_waiting_alarm(
    scope: Construct, construct_id: str, queue: sqs.IQueue, description: str
) -> cloudwatch.Alarm:
    """An alarm as soon as one message waits in ``queue`` (a dead-letter queue: an operator should look)."""
    return cloudwatch.Alarm(
        scope,
        construct_id,
        alarm_description=description,
        metric=queue.metric_approximate_number_of_messages_visible(period=Duration.minutes(1), statistic="Maximum"),
        threshold=1,
        evaluation_periods=1,
        comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
        treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
    )
