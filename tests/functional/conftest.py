"""Handlers and adapters in-process against moto: real boto3 calls, no network, no credentials."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from moto import mock_aws

from functions.adapters import wiring
from functions.adapters.settings import Settings, load
from stepwise.local.lambdas import LocalContext
from stepwise.local.template import Topology, topology

TABLE = "stepwise-test"
TENANT = "default"
PASS_DEFINITION = json.dumps({"StartAt": "Wait", "States": {"Wait": {"Type": "Pass", "End": True}}})


@dataclass
class Aws:
    dynamodb: Any
    sqs: Any
    sfn: Any
    queue_url: str
    state_machine_arn: str
    webhooks_queue_url: str = ""

    def queued_messages(self) -> list[dict[str, Any]]:
        return self.sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10).get("Messages", [])

    def executions(self) -> list[dict[str, Any]]:
        return self.sfn.list_executions(stateMachineArn=self.state_machine_arn)["executions"]


# What the tests choose beside the template's environment: the offline stub model, a tenant, a default model.
RESULTS_BUCKET = "stepwise-test-results"
STREAM_URL = "https://stream.lambda-url.us-east-1.on.aws/"  # the stream function's URL (not served here)
TEST_SETTINGS = {
    "STEPWISE_AUTH": "none",  # requests without an authorizer context are the default tenant's (as locally)
    "STEPWISE_DEFAULT_TENANT": TENANT,
    "STEPWISE_DEFAULT_MODEL": "claude-haiku-4-5",
    "STEPWISE_MODEL_PROVIDER": "stub",
}


@pytest.fixture(scope="session")
def stack_topology(template: dict[str, Any]) -> Topology:
    return topology(template)


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch, stack_topology: Topology) -> Iterator[Aws]:
    """moto's DynamoDB, SQS and Step Functions, and every function's environment as the synthesised stack
    gives it (its resources replaced by these), so the handlers run with the settings a deployment has."""
    with mock_aws():
        dynamodb = boto3.client("dynamodb")
        dynamodb.create_table(  # as the synthesised stack declares it, its index of active work included
            TableName=TABLE,
            KeySchema=stack_topology.table_key_schema,
            AttributeDefinitions=stack_topology.table_attributes,
            GlobalSecondaryIndexes=stack_topology.table_indexes,
            BillingMode="PAY_PER_REQUEST",
        )
        sqs = boto3.client("sqs")
        queue_url = sqs.create_queue(QueueName="intake")["QueueUrl"]
        webhooks_queue_url = sqs.create_queue(QueueName="webhooks")["QueueUrl"]
        boto3.client("s3").create_bucket(Bucket=RESULTS_BUCKET)
        sfn = boto3.client("stepfunctions")
        arn = sfn.create_state_machine(
            name="stepwise", definition=PASS_DEFINITION, roleArn="arn:aws:iam::123456789012:role/sfn"
        )["stateMachineArn"]
        environment = stack_topology.environment(
            {
                "AWS::DynamoDB::GlobalTable": TABLE,
                "STEPWISE_QUEUE_URL": queue_url,
                "STEPWISE_WEBHOOKS_QUEUE_URL": webhooks_queue_url,
                "AWS::StepFunctions::StateMachine": arn,
                "AWS::SecretsManager::Secret": None,
                "AWS::S3::Bucket": RESULTS_BUCKET,
                "AWS::Lambda::Url": STREAM_URL,
            }
        )
        for key, value in {**environment, **TEST_SETTINGS}.items():
            monkeypatch.setenv(key, value)
        wiring.reset()
        yield Aws(dynamodb, sqs, sfn, queue_url, arn, webhooks_queue_url)
    wiring.reset()


@pytest.fixture
def context() -> LocalContext:
    return LocalContext(function_name="test")


def http_event(method: str, path: str, body: Any = None, headers: dict[str, str] | None = None) -> dict[str, Any]:
    """An API Gateway HTTP API payload v2 event."""
    raw = body if isinstance(body, str) or body is None else json.dumps(body)
    return {
        "version": "2.0",
        "routeKey": f"{method} {path}",
        "rawPath": path,
        "rawQueryString": "",
        "headers": {"content-type": "application/json", **(headers or {})},
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "test",
            "domainName": "test.execute-api.us-east-1.amazonaws.com",
            "http": {
                "method": method,
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": "127.0.0.1",
                "userAgent": "pytest",
            },
            "requestId": "req-1",
            "routeKey": f"{method} {path}",
            "stage": "$default",
            "time": "21/Nov/2026:12:00:00 +0000",
            "timeEpoch": 1795262400000,
        },
        "body": raw,
        "isBase64Encoded": False,
    }


def table_store() -> Any:
    """The DynamoDB store the functions use (built from their settings, as the handlers build it)."""
    return wiring.store(load(Settings))
