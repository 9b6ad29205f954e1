"""The webhook ports in memory: what the adapters store and send, no rules (those are functions/agent/webhooks.py's)."""

from __future__ import annotations

from typing import Any

from functions.agent.webhooks import Webhook


class MemoryWebhooks:
    def __init__(self) -> None:
        self.webhooks: dict[tuple[str, str], Webhook] = {}

    def put_webhook(self, webhook: Webhook) -> None:
        self.webhooks[(webhook.tenant, webhook.webhook_id)] = webhook

    def get_webhook(self, tenant: str, webhook_id: str) -> Webhook | None:
        return self.webhooks.get((tenant, webhook_id))

    def list_webhooks(self, tenant: str) -> list[Webhook]:
        return [webhook for (owner, _), webhook in self.webhooks.items() if owner == tenant]

    def delete_webhook(self, tenant: str, webhook_id: str) -> None:
        self.webhooks.pop((tenant, webhook_id), None)


class RecordingWebhookQueue:
    def __init__(self, *, refuse: bool = False) -> None:
        self.refuse = refuse
        self.announced: list[tuple[str, dict[str, Any]]] = []
        self.deliveries: list[tuple[str, list[str], dict[str, Any]]] = []
        self.retries: list[tuple[str, int]] = []

    def announce(self, tenant: str, event: dict[str, Any]) -> None:
        if self.refuse:
            raise ConnectionError("the queue is unavailable")
        self.announced.append((tenant, event))

    def deliver(self, tenant: str, webhook_ids: list[str], event: dict[str, Any]) -> None:
        self.deliveries.append((tenant, webhook_ids, event))

    def retry_later(self, receipt: str, seconds: int) -> None:
        self.retries.append((receipt, seconds))


class RecordingSender:
    def __init__(self, *, failures: int = 0) -> None:
        self.failures = failures
        self.sent: list[tuple[str, str, str, dict[str, Any]]] = []

    def send(self, url: str, secret: str, message_id: str, event: dict[str, Any]) -> None:
        if self.failures:
            self.failures -= 1
            raise ConnectionRefusedError("connection refused")
        self.sent.append((url, secret, message_id, event))
