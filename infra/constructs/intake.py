"""SQS intake queue with a DLQ, drained by the intake function with bounded concurrency (backpressure)."""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_event_sources as sources
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from infra.constants import INTAKE_MAX_RECEIVE_COUNT
from infra.constructs.agent_functions import AgentFunctions
from infra.constructs.monitoring import messages_waiting_alarm


class Intake(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        intake_fn: lambda_.IFunction,  # the intake function's alias (AgentFunctions.alias)
        intake_timeout_seconds: int,
        max_concurrency: int,
    ) -> None:
        super().__init__(scope, construct_id)
        self.dead_letter_queue = sqs.Queue(
            self,
            "DeadLetterQueue",
            retention_period=Duration.days(14),
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
        )
        self.queue = sqs.Queue(
            self,
            "Queue",
            # AWS guidance: at least six times the consumer's timeout, so in-flight batches are not redelivered.
            visibility_timeout=Duration.seconds(6 * intake_timeout_seconds),
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            dead_letter_queue=sqs.DeadLetterQueue(
                queue=self.dead_letter_queue, max_receive_count=INTAKE_MAX_RECEIVE_COUNT
            ),
        )
        # A message here is a run intake gave up on (the run was marked FAILED with the reason) or an
        # unreadable message: either way an operator should look (the stack's Monitoring notifies its topic).
        self.dead_letter_alarm = messages_waiting_alarm(
            self, "DeadLetterAlarm", self.dead_letter_queue, slug="intake-dead-letters",
            what="Intake messages reached the dead-letter queue: runs that could not start, or checks not made.",
        )  # fmt: skip
        intake_fn.add_event_source(
            sources.SqsEventSource(
                self.queue,
                batch_size=10,
                max_batching_window=Duration.seconds(1),
                max_concurrency=max_concurrency,
                report_batch_item_failures=True,
            )
        )

    @property
    def settings(self) -> dict[str, str]:
        """What the queue provides to the functions' settings."""
        return {
            "STEPWISE_QUEUE_URL": self.queue.queue_url,
            "STEPWISE_INTAKE_MAX_RECEIVE_COUNT": str(INTAKE_MAX_RECEIVE_COUNT),
        }

    def grant(self, functions: AgentFunctions) -> None:
        """Every function whose settings include the queue sends to it (new runs, releases, watchdog checks)."""
        for spec, function in functions:
            if spec.sends_to_intake:
                self.queue.grant_send_messages(function)
