"""WebhookStore on the table: a tenant's endpoints in one partition, read by the api function (registration) and the
webhooks function (fan-out, delivery), which may read nothing else of the table (IAM ``dynamodb:LeadingKeys``).

pk = "T#{tenant}#WEBHOOKS"   sk = "WH#{webhook_id}"   one endpoint: its URL, filter, description, and signing secret

The secret is stored as it is (deliveries are signed with it), under the table's encryption at rest: whoever may read
this partition may read it. Only the api and webhooks functions may (an explicit deny for every other function,
infra/constructs/state_table.py), and an operator with read access to the table.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from functions.adapters.serde import from_item, query_partition, to_item
from functions.agent.webhooks import Webhook

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
else:
    DynamoDBClient = Any


def webhooks_pk(tenant: str) -> str:
    return f"T#{tenant}#WEBHOOKS"


def webhook_sk(webhook_id: str) -> str:
    return f"WH#{webhook_id}"


class DynamoDBWebhookStore:
    def __init__(self, table_name: str, client: DynamoDBClient) -> None:
        self.table_name, self.client = table_name, client

    def put_webhook(self, webhook: Webhook) -> None:
        item = {"pk": webhooks_pk(webhook.tenant), "sk": webhook_sk(webhook.webhook_id), "type": "webhook",
                "webhook": webhook.model_dump_json()}  # fmt: skip
        self.client.put_item(TableName=self.table_name, Item=to_item(item))

    def get_webhook(self, tenant: str, webhook_id: str) -> Webhook | None:
        found = self.client.get_item(
            TableName=self.table_name, Key=to_item({"pk": webhooks_pk(tenant), "sk": webhook_sk(webhook_id)}),
            ConsistentRead=True,
        ).get("Item")  # fmt: skip
        return Webhook.model_validate_json(from_item(found)["webhook"]) if found else None

    def list_webhooks(self, tenant: str) -> list[Webhook]:
        """Every endpoint of the tenant (a handful: functions/agent/webhooks.py MAX_WEBHOOKS), read consistently so
        an endpoint registered a moment before an event is told of it."""
        items = query_partition(self.client, self.table_name, webhooks_pk(tenant), consistent=True)
        return [Webhook.model_validate_json(from_item(item)["webhook"]) for item in items]

    def delete_webhook(self, tenant: str, webhook_id: str) -> None:
        self.client.delete_item(
            TableName=self.table_name, Key=to_item({"pk": webhooks_pk(tenant), "sk": webhook_sk(webhook_id)})
        )
