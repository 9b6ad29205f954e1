"""CircuitStore on the state table: one item per provider+model, written only if its version is unchanged.

pk = "CIRCUIT#{provider}:{model}"   sk = "STATE"
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from functions.adapters.serde import batch_get, from_item, to_item
from functions.agent.circuit import Circuit

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
else:
    DynamoDBClient = Any


class DynamoDBCircuitStore:
    def __init__(self, table_name: str, client: DynamoDBClient) -> None:
        self.table_name = table_name
        self.client = client

    @staticmethod
    def _key(key: str) -> dict[str, Any]:
        return to_item({"pk": f"CIRCUIT#{key}", "sk": "STATE"})

    def load(self, key: str) -> Circuit:
        item = self.client.get_item(TableName=self.table_name, Key=self._key(key), ConsistentRead=True).get("Item")
        return _circuit(from_item(item)) if item else Circuit(key=key)

    def load_many(self, keys: Sequence[str]) -> list[Circuit]:
        """Many circuits, with BatchGetItem (eventually consistent: for a report, never for a transition); a key
        never stored is a closed circuit."""
        unique = list(dict.fromkeys(keys))
        items = batch_get(self.client, self.table_name, [self._key(key) for key in unique])
        found = {circuit.key: circuit for circuit in map(_circuit, items)}
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


def _circuit(values: dict[str, Any]) -> Circuit:
    return Circuit.model_validate({name: values[name] for name in Circuit.model_fields if name in values})
