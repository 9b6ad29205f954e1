"""Alarms, the SNS topic they notify, and the operations dashboard, all on the metrics the functions emit
(infra/metrics.py looks every one up in the catalog). Thresholds are the CDK context ``alarm_thresholds``
(``AlarmThresholds``: defaults here, every key checked at synth). What each alarm means and what to do:
docs/runbook.md, one section per alarm, named as the alarm's name ends."""

from __future__ import annotations

import json

from aws_cdk import Acknowledgment, ArnFormat, Duration, Stack, Validations
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as actions
from aws_cdk import aws_iam as iam
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from aws_cdk import aws_sqs as sqs
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct
from pydantic import BaseModel, ConfigDict, Field, field_validator

from functions.agent.doctor import BUDGET_SECTION, RUNBOOK
from functions.handlers.observability import BUDGET_ALARM_THRESHOLDS
from infra.constants import WATCH_DELAY_SECONDS
from infra.constructs.dashboard import operations_dashboard
from infra.metrics import (
    api_error_rate,
    failed_executions,
    queue_metric,
    run_error_rate,
    stepwise_metric,
)

ALARM_EMAIL = r"[^@\s]+@[^@\s]+\.[^@\s]+"
GT, GTE = (
    cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
    cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
)


class AlarmThresholds(BaseModel):
    """CDK context ``alarm_thresholds``: one JSON object; a key left out keeps its default, an unknown key or a
    value out of range fails synth."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    api_error_rate_percent: float = Field(default=5, gt=0, le=100)  # 5xx share of API answers, 2 x 5 min
    run_error_rate_percent: float = Field(default=10, gt=0, le=100)  # runs ending FAILED/TIMED_OUT, 15 min
    error_rate_min_count: int = Field(default=10, ge=1)  # fewer answers or ended runs in a period: no rate alarm
    step_latency_p95_seconds: float = Field(default=60, gt=0, le=900)  # p95 of StepLatency, 3 x 5 min
    failed_executions: int = Field(default=1, ge=1)  # executions FAILED or TIMED_OUT in 5 min
    # the intake queue carries the watchdog's checks, delayed 900 s: an age at or below that is normal
    queue_age_seconds: int = Field(default=1200, gt=WATCH_DELAY_SECONDS, le=14 * 86_400)
    circuits_opened: int = Field(default=1, ge=1)  # circuits opened in 5 min
    budget_percents: tuple[int, ...] = Field(default=BUDGET_ALARM_THRESHOLDS, min_length=1, max_length=10)

    @field_validator("budget_percents")
    @classmethod
    def _ascending_percents(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if list(value) != sorted(set(value)) or not all(1 <= percent <= 100 for percent in value):
            raise ValueError("budget_percents: ascending whole percents, 1 to 100, each once")
        return value

    @classmethod
    def from_context(cls, value: object) -> AlarmThresholds:
        """From cdk.json (an object) or ``-c alarm_thresholds='{...}'`` (JSON text). Raises pydantic's
        ValidationError, or ValueError for text that is not a JSON object."""
        if value in (None, ""):
            return cls()
        text = value if isinstance(value, str) else json.dumps(value)
        if not isinstance(json.loads(text), dict):
            raise ValueError("alarm_thresholds must be a JSON object")
        return cls.model_validate_json(text)


def alarm_name(scope: Construct, slug: str) -> str:
    """``<stack name>-<slug>``: the slug is the alarm's section in docs/runbook.md."""
    return f"{Stack.of(scope).stack_name}-{slug}"


def described(slug: str, what: str) -> str:
    return f"{what} What to do: {RUNBOOK}#{slug}"


class BudgetAlarms(Construct):
    """Each configured daily budget at each of ``percents`` (metric BudgetUsedPercent, emitted by the step
    function after every step: committed = spent + reservations in flight).

    A minute without a step is no news of the budget: the alarm keeps its state (missing data ignored) until a
    step reports a lower share, the first step after 00:00 UTC at the latest. Missing data read as "not
    breaching" would return it to OK after every quiet minute, and the next step would notify again."""

    def __init__(self, scope: Construct, construct_id: str, *, budgets: list[str], percents: tuple[int, ...]) -> None:
        super().__init__(scope, construct_id)
        self.alarms: list[cloudwatch.Alarm] = []
        for budget in budgets:
            metric = stepwise_metric("BudgetUsedPercent", "Maximum", period=Duration.minutes(1), Budget=budget)
            for percent in percents:
                what = f"A {budget} budget is {percent} % committed (spent + in flight)."
                self.alarms.append(
                    alarm(self, f"budget-{budget}-{percent}", metric, percent, what=what, runbook=BUDGET_SECTION,
                          construct_id=f"{budget}{percent}", comparison=GTE,
                          missing=cloudwatch.TreatMissingData.IGNORE)
                )  # fmt: skip


def messages_waiting_alarm(
    scope: Construct, construct_id: str, queue: sqs.IQueue, *, slug: str, what: str
) -> cloudwatch.Alarm:
    """An alarm as soon as one message waits in ``queue`` (a dead-letter queue: an operator should look)."""
    waiting = queue_metric(queue, "ApproximateNumberOfMessagesVisible", period=Duration.minutes(1))
    return alarm(scope, slug, waiting, 1, what=what, construct_id=construct_id, comparison=GTE)


def alarm(
    scope: Construct,
    slug: str,
    metric: cloudwatch.IMetric,
    threshold: float,
    *,
    what: str,
    construct_id: str | None = None,
    runbook: str | None = None,
    evaluation_periods: int = 1,
    comparison: cloudwatch.ComparisonOperator = GT,
    missing: cloudwatch.TreatMissingData = cloudwatch.TreatMissingData.NOT_BREACHING,
) -> cloudwatch.Alarm:
    """An alarm named ``<stack>-<slug>`` whose description says what it means and where the runbook says what
    to do (``runbook``: its section, the slug by default). Missing data is not breaching by default: EMF metrics
    are emitted only when something happens."""
    return cloudwatch.Alarm(
        scope,
        construct_id or slug,
        alarm_name=alarm_name(scope, slug),
        alarm_description=described(runbook or slug, what),
        metric=metric,
        threshold=threshold,
        evaluation_periods=evaluation_periods,
        comparison_operator=comparison,
        treat_missing_data=missing,
    )


class Monitoring(Construct):
    """One SNS topic (TLS only; an optional e-mail subscription) that every alarm notifies: those made here on
    the catalog's metrics, the budget alarms, and the dead-letter alarms the queues' constructs made
    (``dead_letters``: label -> queue and its alarm), and the rollback alarms of a gradual deploy
    (infra/constructs/deploys.py); and the operations dashboard (infra/constructs/dashboard.py)."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        thresholds: AlarmThresholds,
        state_machine: sfn.IStateMachine,
        intake_queue: sqs.IQueue,
        budgets: list[str],
        dead_letters: dict[str, tuple[sqs.IQueue, cloudwatch.Alarm]],
        alarm_email: str | None = None,
        rollback_alarms: list[cloudwatch.Alarm] | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        self.topic = sns.Topic(self, "AlarmTopic", display_name="Stepwise alarms", enforce_ssl=True)
        Validations.of(self.topic).acknowledge(
            Acknowledgment(
                id="AwsSolutions::AwsSolutions-SNS2",
                reason="Alarm notifications carry alarm names and metric values, never run data; CloudWatch "
                "cannot publish to a topic encrypted with the AWS-managed SNS key, and a customer-managed key "
                "is $1 a month.",
            )
        )
        # The topic's policy (the TLS rule) replaces SNS's default one, which let the account's own services
        # publish: without this statement CloudWatch may not publish, and every alarm's action fails (its
        # history says "not authorized to perform: SNS:Publish"). Only this stack's alarms (their names).
        stack = Stack.of(self)
        self.topic.add_to_resource_policy(
            iam.PolicyStatement(
                sid="AlarmsOfThisStackPublish",
                actions=["sns:Publish"],
                principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
                resources=[self.topic.topic_arn],
                conditions={"ArnLike": {"aws:SourceArn": stack.format_arn(
                    service="cloudwatch", resource="alarm", resource_name=alarm_name(self, "*"),
                    arn_format=ArnFormat.COLON_RESOURCE_NAME)}},
            )
        )  # fmt: skip
        if alarm_email:
            self.topic.add_subscription(subscriptions.EmailSubscription(alarm_email))
        arn, limits = state_machine.state_machine_arn, thresholds
        self.alarms = [
            alarm(self, "api-error-rate", api_error_rate(limits.error_rate_min_count), limits.api_error_rate_percent,
                  evaluation_periods=2,
                  what="More of the API's answers are 5xx than the threshold allows, for 10 minutes."),
            alarm(self, "run-error-rate", run_error_rate(arn, limits.error_rate_min_count, Duration.minutes(15)),
                  limits.run_error_rate_percent,
                  what="More runs and session turns end FAILED or TIMED_OUT than the threshold allows."),
            alarm(self, "step-latency-p95", stepwise_metric("StepLatency", "p95", label="step latency p95 (ms)"),
                  limits.step_latency_p95_seconds * 1000, evaluation_periods=3,
                  what="The p95 of one agent step (its model call included) is slow, for 15 minutes."),
            alarm(self, "executions-failed", failed_executions(arn), limits.failed_executions, comparison=GTE,
                  what="Workflow executions failed or timed out: their runs ended FAILED or TIMED_OUT."),
            alarm(self, "intake-queue-age", queue_metric(intake_queue, "ApproximateAgeOfOldestMessage"),
                  limits.queue_age_seconds,
                  what="A message has waited in the intake queue too long: runs are not starting."),
            alarm(self, "circuit-open", stepwise_metric("CircuitsOpened", "Sum"), limits.circuits_opened,
                  comparison=GTE, what="A model's circuit opened: calls to it fail fast or fall back."),
        ]  # fmt: skip
        self.budget_alarms = BudgetAlarms(self, "BudgetAlarms", budgets=budgets, percents=limits.budget_percents)
        notify = actions.SnsAction(self.topic)
        dead_letter_alarms = [waiting for _, waiting in dead_letters.values()]
        rollbacks = list(rollback_alarms or [])
        for each in self.alarms + dead_letter_alarms + rollbacks:
            each.add_alarm_action(notify)
            each.add_ok_action(notify)
        for each in self.budget_alarms.alarms:  # ALARM only: their OK is a lower share, not a fix
            each.add_alarm_action(notify)
        self.all_alarms: list[cloudwatch.IAlarm] = [
            *self.alarms,
            *dead_letter_alarms,
            *self.budget_alarms.alarms,
            *rollbacks,
        ]
        self.dashboard = operations_dashboard(
            self,
            "Dashboard",
            name=f"{Stack.of(self).stack_name}-operations",
            state_machine=state_machine,
            intake_queue=intake_queue,
            dead_letter_queues={label: queue for label, (queue, _) in dead_letters.items()},
            thresholds=thresholds,
            alarms=self.all_alarms,
        )
