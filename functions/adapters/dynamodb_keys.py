"""KeyStore on the table. Two items per key, written together:

pk = "APIKEY#{digest}"   sk = "KEY"           the lookup an authorizer makes (it may read only these items)
pk = "KEYS"              sk = "K#{key_id}"    the operator's list (tenant, name, created, revoked)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from functions.adapters.serde import from_item, query_partition, to_item
from functions.agent.keys import ApiKey

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
else:
    DynamoDBClient = Any

KEYS_PK = "KEYS"


def digest_pk(digest: str) -> str:
    return f"APIKEY#{digest}"


class DynamoDBKeyStore:
    def __init__(self, table_name: str, client: DynamoDBClient) -> None:
        self.table_name, self.client = table_name, client

    def put_key(self, key: ApiKey) -> None:
        body = key.model_dump_json()
        self.client.transact_write_items(
            TransactItems=[
                {"Put": {"TableName": self.table_name,
                         "Item": to_item({"pk": digest_pk(key.digest), "sk": "KEY", "type": "api_key", "key": body})}},
                {"Put": {"TableName": self.table_name,
                         "Item": to_item({"pk": KEYS_PK, "sk": f"K#{key.key_id}", "type": "api_key", "key": body})}},
            ]
        )  # fmt: skip

    def key_by_digest(self, digest: str) -> ApiKey | None:
        return self._get(digest_pk(digest), "KEY")

    def get_key(self, key_id: str) -> ApiKey | None:
        return self._get(KEYS_PK, f"K#{key_id}")

    def list_keys(self, tenant: str | None) -> list[ApiKey]:
        items = query_partition(self.client, self.table_name, KEYS_PK)
        keys = [ApiKey.model_validate_json(from_item(item)["key"]) for item in items]
        mine = [key for key in keys if tenant is None or key.tenant == tenant]
        return sorted(mine, key=lambda key: key.created_at)

    def _get(self, pk: str, sk: str) -> ApiKey | None:
        item = self.client.get_item(TableName=self.table_name, Key=to_item({"pk": pk, "sk": sk}), ConsistentRead=True)
        found = item.get("Item")
        return ApiKey.model_validate_json(from_item(found)["key"]) if found else None
