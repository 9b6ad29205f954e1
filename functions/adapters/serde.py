"""DynamoDB attribute values to and from plain Python values."""

from __future__ import annotations

import time
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError

BATCH_GET_KEYS = 100  # BatchGetItem's limit per request
UNPROCESSED_ATTEMPTS = 5
_serializer = TypeSerializer()
_deserializer = TypeDeserializer()


def to_item(values: dict[str, Any]) -> dict[str, Any]:
    return {key: _serialize(value) for key, value in values.items() if value is not None}


def _serialize(value: Any) -> dict[str, Any]:
    if isinstance(value, Decimal):  # fixed notation: str() would give '1E-7', which ADD and some readers reject
        return {"N": format(value, "f")}
    return dict(_serializer.serialize(value))


def from_item(item: dict[str, Any]) -> dict[str, Any]:
    return {key: _plain(_deserializer.deserialize(value)) for key, value in item.items()}


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else value
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def query_partition(client: Any, table_name: str, pk: str, *, consistent: bool = False) -> list[dict[str, Any]]:
    """Every item of the partition ``pk``, every page of it, as the table returns them."""
    request: dict[str, Any] = {
        "TableName": table_name,
        "KeyConditionExpression": "pk = :pk",
        "ExpressionAttributeValues": {":pk": {"S": pk}},
        "ConsistentRead": consistent,
    }
    items: list[dict[str, Any]] = []
    while True:
        page = client.query(**request)
        items += page.get("Items", [])
        if "LastEvaluatedKey" not in page:
            return items
        request["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def condition_failed(exc: ClientError) -> bool:
    """The write was refused by its condition (not an outage): the caller's ``False``."""
    return bool(exc.response["Error"]["Code"] == "ConditionalCheckFailedException")


def batch_get(client: Any, table_name: str, keys: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The items of ``keys`` that exist (plain values), read with BatchGetItem in requests of up to 100 keys,
    eventually consistent; keys DynamoDB leaves unprocessed (throttling) are asked again, with backoff, up to
    5 times. Raises the service's error, or RuntimeError when keys are still unprocessed."""
    found: list[dict[str, Any]] = []
    for start in range(0, len(keys), BATCH_GET_KEYS):
        request: dict[str, Any] = {table_name: {"Keys": list(keys[start : start + BATCH_GET_KEYS])}}
        for attempt in range(UNPROCESSED_ATTEMPTS):
            answer = client.batch_get_item(RequestItems=request)
            found += map(from_item, answer["Responses"].get(table_name, []))
            request = answer.get("UnprocessedKeys") or {}
            if not request:
                break
            time.sleep(0.05 * 2**attempt)
        else:
            raise RuntimeError(f"DynamoDB left keys of {table_name} unread after {UNPROCESSED_ATTEMPTS} attempts")
    return found
