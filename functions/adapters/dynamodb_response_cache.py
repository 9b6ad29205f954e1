"""ResponseCache on the state table: one item per (tenant, request key), expired by DynamoDB's TTL.

pk = "T#{tenant}#RC#{key}"   sk = "RESPONSE"   content, stop_reason, model, the original usage, expires_at
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from functions.adapters.serde import from_item, to_item
from functions.agent.models import ModelResponse, Usage
from functions.agent.ports import Clock

logger = logging.getLogger(__name__)

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
else:
    DynamoDBClient = Any


class DynamoDBResponseCache:
    def __init__(self, table_name: str, client: DynamoDBClient, clock: Clock, ttl_seconds: int) -> None:
        self.table_name = table_name
        self.client = client
        self.clock = clock
        self.ttl_seconds = ttl_seconds

    @staticmethod
    def _key(tenant: str, key: str) -> dict[str, Any]:
        return to_item({"pk": f"T#{tenant}#RC#{key}", "sk": "RESPONSE"})

    def get(self, tenant: str, key: str) -> ModelResponse | None:
        """A read that fails is a miss: the cache saves money, it must never fail a run."""
        try:
            item = self.client.get_item(TableName=self.table_name, Key=self._key(tenant, key)).get("Item")
        except (ClientError, BotoCoreError) as exc:
            logger.warning("response cache read failed; treated as a miss: %s", exc)
            return None
        if not item:
            return None
        v = from_item(item)
        if int(v["expires_at"]) <= self.clock.now().timestamp():  # TTL deletion lags: expired is expired
            return None
        return ModelResponse(
            content=json.loads(v["content"]),
            stop_reason=v.get("stop_reason"),
            usage=Usage.model_validate_json(v["usage"]),
            model=v["model"],
            provider=v["provider"],
        )

    def put(self, tenant: str, key: str, response: ModelResponse) -> None:
        """A write that fails is logged and dropped: the step it came from is already saved."""
        try:
            self._put(tenant, key, response)
        except (ClientError, BotoCoreError) as exc:
            logger.warning("response cache write failed; not cached: %s", exc)

    def _put(self, tenant: str, key: str, response: ModelResponse) -> None:
        self.client.put_item(
            TableName=self.table_name,
            Item={
                **self._key(tenant, key),
                **to_item(
                    {
                        "type": "response_cache",
                        "content": json.dumps(response.content, separators=(",", ":"), ensure_ascii=False),
                        "stop_reason": response.stop_reason,
                        "usage": response.usage.model_dump_json(),
                        "model": response.model,
                        "provider": response.provider,
                        "expires_at": int(self.clock.now().timestamp()) + self.ttl_seconds,
                    }
                ),
            },
        )
