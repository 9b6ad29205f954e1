"""The local stack's patches of moto's DynamoDB (stepwise/local/moto_dynamodb.py): transactions stay all-or-nothing
without copying the table, and a Query of the table reads one partition with the same answers as before."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from stepwise.local import moto_dynamodb

TABLE = "patched"


@pytest.fixture
def dynamodb() -> Iterator[Any]:
    moto_dynamodb.install()
    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        client.create_table(
            TableName=TABLE,
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
            AttributeDefinitions=[{"AttributeName": n, "AttributeType": "S"} for n in ("pk", "sk", "g")],
            GlobalSecondaryIndexes=[
                {
                    "IndexName": "by-g",
                    "KeySchema": [{"AttributeName": "g", "KeyType": "HASH"}],
                    "Projection": {"ProjectionType": "ALL"},
                }
            ],
            BillingMode="PAY_PER_REQUEST",
        )
        for pk, sk, n in [("a", "1", "1"), ("a", "2", "2"), ("b", "1", "3"), ("c", "1", "4")]:
            client.put_item(TableName=TABLE, Item={"pk": {"S": pk}, "sk": {"S": sk}, "n": {"N": n}, "g": {"S": pk}})
        yield client


def _everything(client: Any) -> list[dict[str, Any]]:
    return sorted(client.scan(TableName=TABLE)["Items"], key=lambda i: (i["pk"]["S"], i["sk"]["S"]))


def _key(pk: str, sk: str) -> dict[str, Any]:
    return {"pk": {"S": pk}, "sk": {"S": sk}}


def _writes(last_condition: str) -> list[dict[str, Any]]:
    """A new item, an update, a delete, a put over an existing item, in a new partition, and a last condition."""
    return [
        {
            "Put": {
                "TableName": TABLE,
                "Item": {**_key("a", "3"), "n": {"N": "9"}},
                "ConditionExpression": "attribute_not_exists(pk)",
            }
        },
        {
            "Update": {
                "TableName": TABLE,
                "Key": _key("a", "1"),
                "UpdateExpression": "ADD n :one",
                "ExpressionAttributeValues": {":one": {"N": "1"}},
            }
        },
        {"Delete": {"TableName": TABLE, "Key": _key("a", "2")}},
        {"Put": {"TableName": TABLE, "Item": {**_key("b", "1"), "n": {"N": "30"}}}},
        {"Put": {"TableName": TABLE, "Item": {**_key("z", "1"), "n": {"N": "0"}}}},
        {
            "ConditionCheck": {
                "TableName": TABLE,
                "Key": _key("c", "1"),
                "ConditionExpression": last_condition,
                "ExpressionAttributeValues": {":n": {"N": "4"}},
            }
        },
    ]


def test_a_transaction_whose_last_condition_fails_leaves_every_item_unchanged(dynamodb: Any) -> None:
    before = _everything(dynamodb)
    with pytest.raises(ClientError) as failed:
        dynamodb.transact_write_items(TransactItems=_writes("n <> :n"))
    assert failed.value.response["Error"]["Code"] == "TransactionCanceledException"
    reasons = [r["Code"] for r in failed.value.response["CancellationReasons"]]
    assert reasons == ["None"] * 5 + ["ConditionalCheckFailed"]
    assert _everything(dynamodb) == before
    assert dynamodb.query(TableName=TABLE, KeyConditionExpression="pk = :z",
                          ExpressionAttributeValues={":z": {"S": "z"}})["Items"] == []  # fmt: skip


def test_a_transaction_that_moto_rejects_midway_leaves_every_item_unchanged(dynamodb: Any) -> None:
    # the fourth item names the first's key again: moto finds out only after applying three
    before = _everything(dynamodb)
    writes = [*_writes("n = :n")[:3], {"Delete": {"TableName": TABLE, "Key": _key("a", "3")}}]
    with pytest.raises(ClientError) as failed:
        dynamodb.transact_write_items(TransactItems=writes)
    assert failed.value.response["Error"]["Code"] == "ValidationException"
    assert _everything(dynamodb) == before


def test_a_transaction_that_succeeds_applies_every_item(dynamodb: Any) -> None:
    dynamodb.transact_write_items(TransactItems=_writes("n = :n"))
    got = {(i["pk"]["S"], i["sk"]["S"]): i["n"]["N"] for i in _everything(dynamodb)}
    assert got == {("a", "1"): "2", ("a", "3"): "9", ("b", "1"): "30", ("c", "1"): "4", ("z", "1"): "0"}


def test_a_transaction_never_copies_a_table(dynamodb: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # what made a long run quadratic: moto deep-copied every table a transaction names, before each transaction
    from moto.dynamodb.models.table import Table

    def refuse(self: Table, memo: Any) -> Table:
        raise AssertionError("a table was copied")

    monkeypatch.setattr(Table, "__deepcopy__", refuse, raising=False)
    dynamodb.transact_write_items(TransactItems=_writes("n = :n"))
    with pytest.raises(ClientError):
        dynamodb.transact_write_items(TransactItems=_writes("n <> :n"))
    assert len(_everything(dynamodb)) == 5


def test_a_query_reads_its_partition_with_the_same_answers(dynamodb: Any) -> None:
    def query(**kwargs: Any) -> list[tuple[str, str]]:
        items = dynamodb.query(TableName=TABLE, **kwargs)["Items"]
        return [(i["pk"]["S"], i["sk"]["S"]) for i in items]

    a = {":a": {"S": "a"}}
    assert query(KeyConditionExpression="pk = :a", ExpressionAttributeValues=a) == [("a", "1"), ("a", "2")]
    assert query(KeyConditionExpression="pk = :a", ExpressionAttributeValues=a, ScanIndexForward=False) == [
        ("a", "2"), ("a", "1")]  # fmt: skip
    assert query(KeyConditionExpression="pk = :a AND sk > :one", ExpressionAttributeValues={**a, ":one": {"S": "1"}}
                 ) == [("a", "2")]  # fmt: skip
    first = dynamodb.query(TableName=TABLE, KeyConditionExpression="pk = :a", ExpressionAttributeValues=a, Limit=1)
    assert [(i["sk"]["S"]) for i in first["Items"]] == ["1"]
    assert query(KeyConditionExpression="pk = :a", ExpressionAttributeValues=a,
                 ExclusiveStartKey=first["LastEvaluatedKey"]) == [("a", "2")]  # fmt: skip
    assert query(KeyConditionExpression="pk = :x", ExpressionAttributeValues={":x": {"S": "x"}}) == []
    # an index still sees the whole table
    assert query(IndexName="by-g", KeyConditionExpression="g = :b", ExpressionAttributeValues={":b": {"S": "b"}}) == [
        ("b", "1")]  # fmt: skip
    assert dynamodb.scan(TableName=TABLE, Select="COUNT")["Count"] == 4


def test_a_query_s_sort_key_condition_picks_the_items_it_reads(dynamodb: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from moto.dynamodb.models.dynamo_type import Item

    for n in range(40):
        dynamodb.put_item(TableName=TABLE, Item={"pk": {"S": "long"}, "sk": {"S": f"STEP#{n:02d}"}})
    sized: list[str] = []
    size = Item.size
    monkeypatch.setattr(Item, "size", lambda self: sized.append(self.range_key.value) or size(self))

    def query(condition: str, values: dict[str, str], **kwargs: Any) -> list[str]:
        found = dynamodb.query(TableName=TABLE, KeyConditionExpression=f"pk = :p AND {condition}",
                               ExpressionAttributeValues={":p": {"S": "long"},
                                                          **{k: {"S": v} for k, v in values.items()}},
                               **kwargs)  # fmt: skip
        return [item["sk"]["S"] for item in found["Items"]]

    assert query("sk BETWEEN :a AND :b", {":a": "STEP#10", ":b": "STEP#12"}) == ["STEP#10", "STEP#11", "STEP#12"]
    assert set(sized) == {"STEP#10", "STEP#11", "STEP#12"}  # moto sized (read) those only, not the partition
    assert query("sk < :a", {":a": "STEP#02"}, ScanIndexForward=False) == ["STEP#01", "STEP#00"]
    assert query("begins_with(sk, :a)", {":a": "STEP#3"}) == [f"STEP#{n}" for n in range(30, 40)]
    page = dynamodb.query(TableName=TABLE, KeyConditionExpression="pk = :p AND sk >= :a", Limit=2,
                          ExpressionAttributeValues={":p": {"S": "long"}, ":a": {"S": "STEP#37"}})  # fmt: skip
    assert [item["sk"]["S"] for item in page["Items"]] == ["STEP#37", "STEP#38"]
    assert query("sk >= :a", {":a": "STEP#37"}, ExclusiveStartKey=page["LastEvaluatedKey"]) == ["STEP#39"]
