"""The gauges' schedule: an EventBridge rule invokes the gauges function (functions/handlers/gauges.py) every minute,
through its alias. A minute's count that fails is not tried again, by EventBridge or by Lambda: the next minute counts
afresh, and a retry would only add invocations while whatever failed (DynamoDB, Lambda) is failing."""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

GAUGE_PERIOD = Duration.minutes(1)  # CloudWatch's standard resolution: one datapoint a minute


class Gauges(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, gauges_fn: lambda_.Alias) -> None:
        super().__init__(scope, construct_id)
        # Lambda's own retries of an asynchronous invocation that failed (2 by default), on the alias invoked
        gauges_fn.configure_async_invoke(retry_attempts=0, max_event_age=GAUGE_PERIOD)
        self.rule = events.Rule(
            self,
            "Schedule",
            description="Publish the Stepwise gauges (ActiveRuns) every minute",
            schedule=events.Schedule.rate(GAUGE_PERIOD),
            # EventBridge's retries of an invocation Lambda did not accept (185 over 24 h by default)
            targets=[targets.LambdaFunction(gauges_fn, retry_attempts=0, max_event_age=GAUGE_PERIOD)],
        )
