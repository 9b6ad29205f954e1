"""The webhooks queue on SQS, and the signed POST that delivers one event to one endpoint.

Messages on the queue (read by functions/handlers/webhooks.py):
    {"tenant", "event"}                  an event to fan out to the tenant's endpoints (``announce``)
    {"tenant", "event", "webhook_id"}    one delivery of it to one endpoint (``deliver``: one message per endpoint)

A failed delivery is made visible again only after its backoff (ChangeMessageVisibility on the message being
handled); the queue's redrive policy moves it to the dead-letter queue after the last attempt.
"""

from __future__ import annotations

import json
from datetime import UTC
from typing import TYPE_CHECKING, Any

from functions.agent.errors import ToolServerError, WebhookDeliveryError

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

    from functions.agent.ports import Clock
    from functions.tools.egress import Egress
else:
    SQSClient = Any

SEND_BATCH = 10  # SendMessageBatch's limit
USER_AGENT = "stepwise-webhooks"


class WebhookQueueError(RuntimeError):
    """The queue refused some of a batch's messages (the whole fan-out is retried: receivers drop duplicates)."""


class SqsWebhookQueue:
    def __init__(self, queue_url: str, client: SQSClient) -> None:
        self.queue_url, self.client = queue_url, client

    def announce(self, tenant: str, event: dict[str, Any]) -> None:
        self.client.send_message(QueueUrl=self.queue_url, MessageBody=json.dumps({"tenant": tenant, "event": event}))

    def deliver(self, tenant: str, webhook_ids: list[str], event: dict[str, Any]) -> None:
        for first in range(0, len(webhook_ids), SEND_BATCH):
            chunk = webhook_ids[first : first + SEND_BATCH]
            entries = [
                {"Id": str(index), "MessageBody": json.dumps({"tenant": tenant, "event": event, "webhook_id": hook})}
                for index, hook in enumerate(chunk)
            ]
            failed = self.client.send_message_batch(QueueUrl=self.queue_url, Entries=entries).get("Failed", [])
            if failed:
                codes = sorted({str(entry.get("Code")) for entry in failed})
                raise WebhookQueueError(f"the webhooks queue refused {len(failed)} of {len(entries)} deliveries: "
                                        f"{', '.join(codes)}")  # fmt: skip

    def retry_later(self, receipt: str, seconds: int) -> None:
        self.client.change_message_visibility(QueueUrl=self.queue_url, ReceiptHandle=receipt, VisibilityTimeout=seconds)


class HttpWebhookSender:
    """POSTs an event signed per Standard Webhooks, to an address the deployment's egress rules allow (the tools'
    rules: a private, loopback or metadata address only if ``egress_allow_addresses`` allows it). A redirect is
    not followed (it is a failed attempt); the answer's body is never read."""

    def __init__(self, *, egress: Egress, hosts: tuple[str, ...], timeout_seconds: float, clock: Clock) -> None:
        self.egress, self.hosts, self.timeout_seconds, self.clock = egress, hosts, timeout_seconds, clock

    def send(self, url: str, secret: str, message_id: str, event: dict[str, Any]) -> None:
        import httpx2 as httpx  # the HTTP client the anthropic and mcp SDKs ship; imported on first use
        from standardwebhooks import Webhook

        try:
            self.egress.check_url(url, self.hosts)
        except ToolServerError as exc:
            raise WebhookDeliveryError(f"refused before sending: {exc}") from None
        body = json.dumps(event, separators=(",", ":"))
        sent_at = self.clock.now().astimezone(UTC)
        headers = {
            "content-type": "application/json",
            "user-agent": USER_AGENT,
            "webhook-id": message_id,
            "webhook-timestamp": str(int(sent_at.timestamp())),
            "webhook-signature": Webhook(secret).sign(message_id, sent_at, body),
        }
        try:  # the timeout holds for each phase: connecting, sending, awaiting the answer's head
            with (
                httpx.Client(follow_redirects=False, trust_env=False, timeout=self.timeout_seconds) as client,
                client.stream("POST", url, content=body.encode(), headers=headers) as response,
            ):
                status = response.status_code
        except httpx.TimeoutException:
            raise WebhookDeliveryError(f"no answer within {self.timeout_seconds:g} s") from None
        except httpx.HTTPError as exc:
            raise WebhookDeliveryError(f"{type(exc).__name__}: {exc}"[:500]) from None
        if not 200 <= status < 300:
            redirect = " (redirects are not followed)" if 300 <= status < 400 else ""
            raise WebhookDeliveryError(f"the endpoint answered {status}{redirect}")
