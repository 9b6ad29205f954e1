"""bench/meter.py on moto: each AWS call of an invocation is attributed to it, and DynamoDB's read and write units
are counted as DynamoDB bills them, for items of known sizes."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import boto3
import pytest
from moto import mock_aws

from bench.meter import Meter

TABLE = "bench-meter"
KEYS = [{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}]
INDEX = {"IndexName": "active", "KeySchema": [{"AttributeName": "active_pk", "KeyType": "HASH"}],
         "Projection": {"ProjectionType": "INCLUDE", "NonKeyAttributes": ["status"]}}  # fmt: skip


@dataclass
class FakeTopology:
    table_key_schema: list[dict[str, str]] = field(default_factory=lambda: KEYS)
    table_indexes: list[dict[str, Any]] = field(default_factory=lambda: [INDEX])


class FakeLambdas:
    def invoke(self, name: str, event: dict[str, Any]) -> Any:
        return event["run"]()


@dataclass
class FakeStack:
    """What the meter reads of a LocalStack: its functions' invoke and the table's keys and indexes."""

    lambdas: FakeLambdas = field(default_factory=FakeLambdas)
    topology: FakeTopology = field(default_factory=FakeTopology)


def item(pk: str, sk: str, padding: int, **more: dict[str, str]) -> dict[str, Any]:
    """An item of 7 + len(pk) + len(sk) + padding bytes (names and values), plus ``more``."""
    return {"pk": {"S": pk}, "sk": {"S": sk}, "pad": {"S": "x" * padding}, **more}


@pytest.fixture
def client() -> Iterator[Any]:
    with mock_aws():
        dynamodb = boto3.client("dynamodb", region_name="us-east-1")
        dynamodb.create_table(TableName=TABLE, KeySchema=KEYS, BillingMode="PAY_PER_REQUEST",
                              AttributeDefinitions=[{"AttributeName": a, "AttributeType": "S"}
                                                    for a in ("pk", "sk", "active_pk")],
                              GlobalSecondaryIndexes=[INDEX])  # fmt: skip
        yield dynamodb


def test_units_follow_dynamodb_sizes_and_calls_belong_to_their_invocation(client: Any) -> None:
    stack = FakeStack()
    with Meter(stack) as meter:  # type: ignore[arg-type]
        dynamodb = boto3.client("dynamodb", region_name="us-east-1")  # made after: it carries the meter's hooks

        def work() -> None:
            # 1,509 bytes: 2 write units; its index entry (active_pk, status) one more
            dynamodb.put_item(TableName=TABLE, Item=item("R#1", "A", 1500 - 12, active_pk={"S": "a"}))
            dynamodb.get_item(TableName=TABLE, Key={"pk": {"S": "R#1"}, "sk": {"S": "A"}}, ConsistentRead=True)
            dynamodb.get_item(TableName=TABLE, Key={"pk": {"S": "R#1"}, "sk": {"S": "A"}})  # eventually consistent
            dynamodb.put_item(TableName=TABLE, Item=item("R#1", "B", 3000 - 12))  # 2,999 bytes: 3 units
            # reads whole items, whatever it projects: 1,509 + 2,999 bytes = 2 units of 4 KB, strongly consistent
            dynamodb.query(TableName=TABLE, KeyConditionExpression="pk = :p", ProjectionExpression="pk, sk",
                           ExpressionAttributeValues={":p": {"S": "R#1"}}, ConsistentRead=True)  # fmt: skip
            dynamodb.transact_write_items(TransactItems=[
                # the larger of before (2,999 bytes) and after (499): 3 units, twice in a transaction
                {"Put": {"TableName": TABLE, "Item": item("R#1", "B", 500 - 12)}},
                {"ConditionCheck": {"TableName": TABLE, "Key": {"pk": {"S": "R#1"}, "sk": {"S": "A"}},
                                    "ConditionExpression": "attribute_exists(pk)"}},  # counted as a 2 KB write
            ])  # fmt: skip

        meter.stack.lambdas.invoke("step", {"run": work})
        dynamodb.get_item(TableName=TABLE, Key={"pk": {"S": "R#1"}, "sk": {"S": "A"}})  # outside any invocation
    meter.check()  # nothing failed to count

    (invocation,) = meter.invocations
    assert invocation.function == "step"
    assert [(c.operation, c.rru, c.wru) for c in invocation.calls] == [
        ("PutItem", 0, 2 + 1),
        ("GetItem", 1, 0),
        ("GetItem", 0.5, 0),
        ("PutItem", 0, 3),
        ("Query", 2, 0),
        ("TransactWriteItems", 0, 2 * 3 + 2 * 2),
    ]
    assert invocation.calls[0].written == {("R#1", "A"): 2}
    assert invocation.calls[-1].written == {("R#1", "B"): 6}  # the ConditionCheck wrote nothing
    assert invocation.rru == 3.5 and invocation.wru == 16
    assert invocation.count("dynamodb") == 6
    assert 0 < invocation.aws_seconds <= invocation.seconds
    assert invocation.own_cpu_seconds <= invocation.cpu_seconds


def test_a_count_the_meter_cannot_make_fails_the_bench_not_the_function(client: Any) -> None:
    stack = FakeStack()
    with Meter(stack) as meter:  # type: ignore[arg-type]
        dynamodb = boto3.client("dynamodb", region_name="us-east-1")
        dynamodb.put_item(TableName=TABLE, Item=item("R#1", "A", 10))

        def work() -> Any:  # a projection without the sort key: the whole items cannot be looked up
            return dynamodb.query(TableName=TABLE, KeyConditionExpression="pk = :p", ProjectionExpression="pk",
                                  ExpressionAttributeValues={":p": {"S": "R#1"}})  # fmt: skip

        assert meter.stack.lambdas.invoke("step", {"run": work})["Count"] == 1  # the function got its answer
    with pytest.raises(RuntimeError, match="projects away the table's key"):
        meter.check()
