"""TenantStore on the table:

pk = "TENANTS"            sk = "T#{tenant}"   a tenant's own limits (an operator's; one query lists them all)
pk = "RATE#{tenant}"      sk = "{minute}"     requests counted in one UTC minute (n), gone after expires_at
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from functions.adapters.serde import condition_failed, from_item, query_partition, to_item
from functions.agent.tenants import TenantLimits

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
else:
    DynamoDBClient = Any

TENANTS_PK = "TENANTS"


def rate_pk(tenant: str) -> str:
    return f"RATE#{tenant}"


class DynamoDBTenantStore:
    def __init__(self, table_name: str, client: DynamoDBClient) -> None:
        self.table_name, self.client = table_name, client

    def get_limits(self, tenant: str) -> TenantLimits | None:
        found = self.client.get_item(
            TableName=self.table_name, Key=to_item({"pk": TENANTS_PK, "sk": f"T#{tenant}"}), ConsistentRead=True
        ).get("Item")
        return TenantLimits.model_validate_json(from_item(found)["limits"]) if found else None

    def put_limits(self, limits: TenantLimits) -> None:
        key = {"pk": TENANTS_PK, "sk": f"T#{limits.tenant}"}
        item = {**key, "type": "tenant_limits", "limits": limits.model_dump_json()}
        self.client.put_item(TableName=self.table_name, Item=to_item(item))

    def delete_limits(self, tenant: str) -> None:
        self.client.delete_item(TableName=self.table_name, Key=to_item({"pk": TENANTS_PK, "sk": f"T#{tenant}"}))

    def list_limits(self) -> list[TenantLimits]:
        items = query_partition(self.client, self.table_name, TENANTS_PK)
        return [TenantLimits.model_validate_json(from_item(item)["limits"]) for item in items]

    def count_request(self, tenant: str, window: str, limit: int, expires_at: int) -> bool:
        try:
            self.client.update_item(
                TableName=self.table_name,
                Key=to_item({"pk": rate_pk(tenant), "sk": window}),
                UpdateExpression="ADD n :one SET expires_at = if_not_exists(expires_at, :expires)",
                ConditionExpression="attribute_not_exists(n) OR n < :limit",
                ExpressionAttributeValues={
                    ":one": {"N": "1"}, ":limit": {"N": str(limit)}, ":expires": {"N": str(expires_at)},
                },
            )  # fmt: skip
        except ClientError as exc:
            if condition_failed(exc):
                return False
            raise
        return True
