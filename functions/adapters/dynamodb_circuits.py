"""CircuitStore on the state table: one item per provider+model, written only if its version is unchanged.

pk = "CIRCUIT#{provider}:{model}"   sk = "STATE"
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from functions.adapters.serde import from_item, to_item
from functions.agent.circuit import Circuit

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
else:
    DynamoDBClient = Any


BATCH_GET_KEYS = 100  # BatchGetItem's limit per request
UNPROCESSED_ATTEMPTS = 5


class DynamoDBCircuitStore:
    def __init__(self, table_name: str, client: DynamoDBClient) -> None:
        self.table_name = table_name
        self.client = client

    @staticmethod
    def _key(key: str) -> dict[str, Any]:
        return to_item({"pk": f"CIRCUIT#{key}", "sk": "STATE"})

    def load(self, key: str) -> Circuit:
        item = self.client.get_item(TableName=self.table_name, Key=self._key(key), ConsistentRead=True).get("Item")
        return _circuit(item) if item else Circuit(key=key)

    def load_many(self, keys: Sequence[str]) -> list[Circuit]:
        """Many circuits in BatchGetItem requests of up to 100 keys (eventually consistent: for a report, never
        for a transition); a key never stored is a closed circuit."""
        found: dict[str, Circuit] = {}
        unique = list(dict.fromkeys(keys))
        for start in range(0, len(unique), BATCH_GET_KEYS):
            batch = [self._key(k) for k in unique[start : start + BATCH_GET_KEYS]]
            request: dict[str, Any] = {self.table_name: {"Keys": batch}}
            for attempt in range(UNPROCESSED_ATTEMPTS):
                answer = self.client.batch_get_item(RequestItems=request)
                for item in answer["Responses"].get(self.table_name, []):
                    circuit = _circuit(item)
                    found[circuit.key] = circuit
                request = answer.get("UnprocessedKeys") or {}
                if not request:
                    break
                time.sleep(0.05 * 2**attempt)  # throttled: DynamoDB returned some keys unread
            else:
                raise RuntimeError(f"DynamoDB left circuits unread after {UNPROCESSED_ATTEMPTS} attempts (throttled)")
        return [found.get(key, Circuit(key=key)) for key in unique]

    def save(self, circuit: Circuit) -> bool:
        stored = circuit.model_copy(update={"version": circuit.version + 1})
        values = json.loads(stored.model_dump_json(), parse_float=Decimal)  # DynamoDB numbers are Decimals
        item = {**self._key(circuit.key), **to_item({"type": "circuit", **values})}
        condition = "attribute_not_exists(pk)" if circuit.version == 0 else "version = :v"
        kwargs: dict[str, Any] = {"TableName": self.table_name, "Item": item, "ConditionExpression": condition}
        if circuit.version:
            kwargs["ExpressionAttributeValues"] = to_item({":v": circuit.version})
        try:
            self.client.put_item(**kwargs)
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                return False
            raise
        return True


def _circuit(item: dict[str, Any]) -> Circuit:
    values = from_item(item)
    return Circuit.model_validate({name: values[name] for name in Circuit.model_fields if name in values})
