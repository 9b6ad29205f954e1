"""SQS intake queue and Step Functions workflow adapters, plus the system clock."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from functions.agent.models import RunKey
from functions.agent.redact import redact

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_stepfunctions import SFNClient
else:
    SQSClient = SFNClient = Any


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


logger = logging.getLogger(__name__)


class SqsRunQueue:
    def __init__(
        self, queue_url: str, client: SQSClient, release_delay_seconds: int = 240, watch_delay_seconds: int = 900
    ) -> None:
        self.queue_url = queue_url
        self.client = client
        self.release_delay_seconds = release_delay_seconds
        self.watch_delay_seconds = watch_delay_seconds

    def _send(self, key: RunKey, delay_seconds: int = 0, **extra: object) -> None:
        body = json.dumps({"tenant": key.tenant, "run_id": key.run_id, **extra})
        self.client.send_message(QueueUrl=self.queue_url, MessageBody=body, DelaySeconds=delay_seconds)

    def enqueue(self, key: RunKey) -> None:
        self._send(key)

    def schedule_watch(self, key: RunKey, *, turn: int = 0) -> None:
        self._send(key, self.watch_delay_seconds, watch=True, **({"turn": turn} if turn else {}))

    def schedule_stop(self, key: RunKey, execution: str, reason: str, *, why: str) -> None:
        # at once; a failed attempt is delivered again after the queue's visibility timeout, then dead-letters
        logger.warning("stopping execution %s failed (%s); retried from the intake queue", execution, redact(why))
        self._send(key, stop_execution=execution, reason=reason)

    def schedule_release(self, key: RunKey, step: int) -> None:
        """The intake function releases the reservation after the delay (longer than the step function's
        timeout, so the call it covered has either settled it or can no longer be running)."""
        self._send(key, self.release_delay_seconds, release_step=step)


def execution_arn(state_machine_arn: str, name: str) -> str:
    """Executions are named by run id (and turn), so their ARN is derived, never stored."""
    return state_machine_arn.replace(":stateMachine:", ":execution:", 1) + ":" + name


class StepFunctionsWorkflow:
    def __init__(self, state_machine_arn: str, client: SFNClient) -> None:
        self.state_machine_arn = state_machine_arn
        self.client = client

    def start(self, key: RunKey, *, name: str, state: dict[str, Any]) -> bool:
        try:
            self.client.start_execution(stateMachineArn=self.state_machine_arn, name=name, input=json.dumps(state))
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ExecutionAlreadyExists":
                return False
            raise
        return True

    def status(self, name: str) -> str | None:
        try:
            described = self.client.describe_execution(executionArn=execution_arn(self.state_machine_arn, name))
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ExecutionDoesNotExist":
                return None
            raise
        return str(described["status"])

    def stop(self, name: str, reason: str) -> None:
        try:
            self.client.stop_execution(executionArn=execution_arn(self.state_machine_arn, name), cause=reason[:32_000])
        except ClientError as exc:
            if exc.response["Error"]["Code"] not in ("ExecutionDoesNotExist", "ValidationException"):
                raise
