"""The intake function against moto: one execution per run, whatever SQS delivers."""

from __future__ import annotations

import json
from typing import Any

from functions.handlers import api, intake
from stepwise.local.lambdas import LocalContext
from tests.functional.conftest import Aws, http_event


def sqs_event(*bodies: str) -> dict[str, Any]:
    return {
        "Records": [
            {
                "messageId": f"m-{i}",
                "receiptHandle": f"rh-{i}",
                "body": body,
                "attributes": {"ApproximateReceiveCount": "1"},
                "messageAttributes": {},
                "md5OfBody": "",
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:intake",
                "awsRegion": "us-east-1",
            }
            for i, body in enumerate(bodies)
        ]
    }


def submit(context: LocalContext) -> str:
    return str(json.loads(api.handler(http_event("POST", "/runs", {"input": "hi"}), context)["body"])["run_id"])


def test_duplicate_delivery_of_the_same_message_starts_one_execution(aws: Aws, context: LocalContext) -> None:
    # Given a queued run and its intake message delivered twice (once in a batch, once again later)
    run_id = submit(context)
    body = aws.queued_messages()[0]["Body"]
    # When intake processes both deliveries
    first = intake.handler(sqs_event(body, body), context)
    second = intake.handler(sqs_event(body), context)
    # Then exactly one execution exists, named by the run id, and no message is reported failed
    executions = aws.executions()
    assert [e["name"] for e in executions] == [run_id]
    assert first == {"batchItemFailures": []} and second == {"batchItemFailures": []}
    started = json.loads(aws.sfn.describe_execution(executionArn=executions[0]["executionArn"])["input"])
    assert started == {"tenant": "default", "run_id": run_id, "step": 0}


def test_a_poison_message_fails_alone_and_the_rest_of_the_batch_goes_on(aws: Aws, context: LocalContext) -> None:
    run_id = submit(context)
    good = json.dumps({"tenant": "default", "run_id": run_id})
    result = intake.handler(sqs_event("not json", good), context)
    assert result == {"batchItemFailures": [{"itemIdentifier": "m-0"}]}
    assert [e["name"] for e in aws.executions()] == [run_id]


def test_a_cancelled_run_is_not_started(aws: Aws, context: LocalContext) -> None:
    run_id = submit(context)
    api.handler(http_event("POST", f"/runs/{run_id}/cancel"), context)
    result = intake.handler(sqs_event(json.dumps({"tenant": "default", "run_id": run_id})), context)
    assert result == {"batchItemFailures": []}
    assert aws.executions() == []
