"""The webhooks queue on SQS, and the signed POST that delivers one event to one endpoint.

Messages on the queue (read by functions/handlers/webhooks.py):
    {"tenant", "event"}                  an event to fan out to the tenant's endpoints (``announce``)
    {"tenant", "event", "webhook_id"}    one delivery of it to one endpoint (``deliver``: one message per endpoint)

A failed delivery is made visible again only after its backoff (ChangeMessageVisibility on the message being
handled); the queue's redrive policy moves it to the dead-letter queue after the last attempt.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from functions.agent.errors import ToolServerError, WebhookDeliveryError
from functions.agent.hosts import host_allowed

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
    rules: a private, loopback or metadata address only if ``egress_allow_addresses`` allows it). The host is
    resolved once and the connection made to an address that was checked (functions/adapters/checked_http.py): a
    DNS answer that changes between a check and the connection cannot lead it elsewhere. An attempt connects within
    ``timeout_seconds`` and is over within twice that, however slowly the endpoint answers. A redirect is not
    followed (it is a failed attempt); the answer's body is never read."""

    def __init__(
        self,
        *,
        egress: Egress,
        hosts: tuple[str, ...],
        timeout_seconds: float,
        clock: Clock,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.egress, self.hosts, self.timeout_seconds, self.clock = egress, hosts, timeout_seconds, clock
        self.monotonic = monotonic

    def send(self, url: str, secret: str, message_id: str, event: dict[str, Any]) -> None:
        import httpcore2  # the HTTP transport the anthropic and mcp SDKs ship; imported on first use
        from standardwebhooks import Webhook

        from functions.adapters.checked_http import CheckedBackend, Deadline

        try:
            parts = urlsplit(url)
            target = httpcore2.URL(scheme=parts.scheme, host=parts.hostname or "", port=parts.port,
                                   target=(parts.path or "/") + (f"?{parts.query}" if parts.query else ""))  # fmt: skip
        except (ValueError, TypeError) as exc:  # a port out of range; anything but ASCII (Endpoints.check refuses both)
            raise WebhookDeliveryError(f"refused before sending: not a URL this sender takes ({exc})") from None
        if parts.scheme not in ("http", "https") or not host_allowed(parts.hostname or "", self.hosts):
            raise WebhookDeliveryError(f"refused before sending: host {(parts.hostname or '')[:80]!r} is not allowed")
        body = json.dumps(event, separators=(",", ":"))
        sent_at = self.clock.now().astimezone(UTC)
        headers: dict[bytes | str, bytes | str] = {
            "host": parts.netloc,  # as written (credentials are refused at registration)
            "content-type": "application/json",
            "user-agent": USER_AGENT,
            "webhook-id": message_id,
            "webhook-timestamp": str(int(sent_at.timestamp())),
            "webhook-signature": Webhook(secret).sign(message_id, sent_at, body),
        }
        whole = 2 * self.timeout_seconds
        backend = CheckedBackend(self.egress, Deadline(self.monotonic() + whole, self.monotonic))
        phases = {"timeout": dict.fromkeys(("connect", "read", "write", "pool"), self.timeout_seconds)}
        try:
            with (
                httpcore2.ConnectionPool(network_backend=backend, max_connections=1) as pool,
                pool.stream("POST", target, headers=headers, content=body.encode(), extensions=phases) as answer,
            ):
                status = answer.status
        except ToolServerError as exc:  # the address it resolved to is not one the deployment allows
            raise WebhookDeliveryError(f"refused before sending: {exc}") from None
        except httpcore2.ConnectTimeout:
            raise WebhookDeliveryError(f"no connection within {self.timeout_seconds:g} s") from None
        except httpcore2.TimeoutException:
            raise WebhookDeliveryError(f"no answer within {whole:g} s of the attempt's start") from None
        except (httpcore2.NetworkError, httpcore2.ProtocolError, httpcore2.UnsupportedProtocol) as exc:
            raise WebhookDeliveryError(f"{type(exc).__name__}: {exc}"[:500]) from None
        if not 200 <= status < 300:
            redirect = " (redirects are not followed)" if 300 <= status < 400 else ""
            raise WebhookDeliveryError(f"the endpoint answered {status}{redirect}")
