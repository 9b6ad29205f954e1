"""CloudWatch alarms on spend: each configured daily budget at 50/80/90/100 % (metric BudgetUsedPercent,
emitted as EMF by the step function after every step: committed = spent + reservations in flight)."""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cloudwatch
from constructs import Construct

from functions.handlers.observability import NAMESPACE, service_name
from infra.constants import BUDGET_ALARM_THRESHOLDS


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
