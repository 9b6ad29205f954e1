"""Webhooks: the queue ends of runs and turns are announced on, drained by the webhooks function (fan-out, then one
signed POST per message), with retries by the queue and a dead-letter queue after the last attempt.

CDK context ``webhook_allowed_hosts``: ``["hooks.example.com", "*.example.org"]``, the hosts endpoints may be on
(https only; none, the default: webhooks are off, a registration is refused 400, and nothing is announced).
"""

from __future__ import annotations

from aws_cdk import Acknowledgment, Duration, Validations
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_event_sources as sources
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from functions.adapters.settings import WebhooksSettings
from functions.agent.webhooks import MAX_ATTEMPTS
from infra.constants import WEBHOOKS_BATCH_SIZE, WEBHOOKS_MAX_CONCURRENCY
from infra.constructs.agent_functions import AgentFunctions
from infra.constructs.monitoring import messages_waiting_alarm
from infra.constructs.tool_access import HOST


class Webhooks(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        webhooks_fn: lambda_.IFunction,  # the webhooks function's alias (AgentFunctions.alias)
        timeout_seconds: int,
        allowed_hosts: list[str],
        max_concurrency: int = WEBHOOKS_MAX_CONCURRENCY,
    ) -> None:
        super().__init__(scope, construct_id)
        for host in allowed_hosts:  # a typo fails `cdk synth`, not a registration
            if not isinstance(host, str) or not HOST.match(host):
                raise ValueError(f"webhook_allowed_hosts: {host!r} is not a host name (e.g. hooks.example.com, "
                                 "*.example.com; no scheme, port or path)")  # fmt: skip
        self.allowed_hosts = [host.lower() for host in allowed_hosts]
        self.dead_letter_queue = sqs.Queue(
            self, "DeadLetterQueue", retention_period=Duration.days(14), encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
        )  # fmt: skip
        Validations.of(self.dead_letter_queue).acknowledge(
            Acknowledgment(id="AwsSolutions::AwsSolutions-SQS3", reason="It is the webhooks queue's dead-letter queue.")
        )
        # a message is received once per attempt: the last failed one goes to the dead-letter queue
        self.queue = sqs.Queue(
            self,
            "Queue",
            # AWS guidance: at least six times the consumer's timeout (also how long a failed fan-out waits)
            visibility_timeout=Duration.seconds(6 * timeout_seconds),
            # longer than every retry of a delivery together (about 3 hours)
            retention_period=Duration.days(4),
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            dead_letter_queue=sqs.DeadLetterQueue(queue=self.dead_letter_queue, max_receive_count=MAX_ATTEMPTS),
        )
        self.dead_letter_alarm = messages_waiting_alarm(
            self, "DeadLetterAlarm", self.dead_letter_queue, slug="webhooks-dead-letters",
            what=f"A webhook was not delivered in {MAX_ATTEMPTS} attempts, or an event could not be fanned out.",
        )  # fmt: skip
        webhooks_fn.add_event_source(
            sources.SqsEventSource(
                self.queue,
                batch_size=WEBHOOKS_BATCH_SIZE,
                max_batching_window=Duration.seconds(1),
                max_concurrency=max_concurrency,
                report_batch_item_failures=True,
            )
        )

    @property
    def settings(self) -> dict[str, str]:
        """What webhooks provide to the functions' settings."""
        defaults = {str(info.alias): str(info.default) for info in WebhooksSettings.model_fields.values()}
        return {
            "STEPWISE_WEBHOOKS_QUEUE_URL": self.queue.queue_url,
            "STEPWISE_WEBHOOK_ALLOWED_HOSTS": ",".join(self.allowed_hosts),
            # the code's defaults, given explicitly (the local stack and tests set their own)
            **{name: defaults[name] for name in ("STEPWISE_WEBHOOK_RETRY_BASE_SECONDS",
                                                 "STEPWISE_WEBHOOK_TIMEOUT_SECONDS")},
        }  # fmt: skip

    def grant(self, functions: AgentFunctions) -> None:
        """Every function that ends runs announces on the queue; the webhooks function fans out onto it (and, as
        the queue's consumer, may change a message's visibility: its backoff)."""
        for spec, function in functions:
            if spec.announces_webhooks:
                self.queue.grant_send_messages(function)
