"""The intake function against moto: one execution per run, whatever SQS delivers."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aws_lambda_powertools.utilities.batch.exceptions import BatchProcessingError

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
    assert started == {"tenant": "default", "run_id": run_id, "step": 0, "waits": 0, "next": "step"}


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


def test_a_run_intake_gives_up_on_is_failed_with_the_reason_not_left_queued(
    aws: Aws, context: LocalContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given Step Functions refusing to start executions (throttling that outlasts the retries)
    from functions.adapters import wiring
    from functions.adapters.settings import IntakeSettings, load
    from functions.agent.models import RunKey

    run_id = submit(context)
    body = json.dumps({"tenant": "default", "run_id": run_id})

    def throttled(key: RunKey, **_: object) -> bool:
        raise ConnectionError("StartExecution throttled")

    monkeypatch.setattr(wiring.workflow(load(IntakeSettings)), "start", throttled)
    # When the message is delivered before and at the last receive before the dead-letter queue
    early = sqs_event(body)
    last = sqs_event(body)
    last["Records"][0]["attributes"]["ApproximateReceiveCount"] = "5"
    with pytest.raises(BatchProcessingError):  # every record failed: Lambda returns the batch to the queue
        intake.handler(early, context)
    status_after_early = json.loads(api.handler(http_event("GET", f"/runs/{run_id}"), context)["body"])["status"]
    with pytest.raises(BatchProcessingError):
        intake.handler(last, context)
    # Then the run waited while retries were left, and ended FAILED with the reason on the last one
    run = json.loads(api.handler(http_event("GET", f"/runs/{run_id}"), context)["body"])
    assert status_after_early == "QUEUED"
    assert run["status"] == "FAILED" and run["error"]["code"] == "INTAKE_FAILED"
    assert "StartExecution throttled" in run["error"]["message"]


def test_a_delayed_release_message_frees_the_reservation_of_an_ended_run(
    aws: Aws, context: LocalContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a run cancelled while it held a reservation for step 0 (release delay 0 s, to see the message now)
    from decimal import Decimal

    from functions.adapters import wiring

    monkeypatch.setenv("STEPWISE_RELEASE_DELAY_SECONDS", "0")
    wiring.reset()
    from functions.agent import ledger
    from functions.agent.models import Reservation, RunKey
    from tests.functional.conftest import table_store

    run_id = submit(context)
    key = RunKey("default", run_id)
    store = table_store()
    run = store.get_run(key)
    assert run is not None
    now = wiring.CLOCK.now()
    day = now.date().isoformat()
    held = Reservation(step=0, amount_usd=Decimal("0.02"), day=day, model="claude-haiku-4-5")
    ledger.reserve(store, run, held, ledger.BudgetLimits(), now=now.isoformat())
    api.handler(http_event("POST", f"/runs/{run_id}/cancel"), context)
    assert store.committed("default", day)[0] == Decimal("0.02")  # kept: its call may be in flight
    # When the delayed release the cancel scheduled is delivered (twice: SQS delivers at least once)
    (message,) = [m for m in aws.queued_messages() if "release_step" in m["Body"]]
    assert json.loads(message["Body"]) == {"tenant": "default", "run_id": run_id, "release_step": 0}
    results = [intake.handler(sqs_event(message["Body"]), context) for _ in range(2)]
    # Then the reservation is released once
    assert results == [{"batchItemFailures": []}] * 2
    assert store.committed("default", day)[0] == 0
    assert store.get_run(key).held is None  # type: ignore[union-attr]


def test_releases_are_sent_with_the_configured_delay() -> None:
    from functions.adapters.aws import SqsRunQueue
    from functions.agent.models import RunKey

    class Recorder:
        def __init__(self) -> None:
            self.sent: list[dict[str, Any]] = []

        def send_message(self, **kwargs: Any) -> None:
            self.sent.append(kwargs)

    client = Recorder()
    SqsRunQueue("https://queue", client, release_delay_seconds=240).schedule_release(RunKey("t", "run_x"), 3)  # type: ignore[arg-type]
    (sent,) = client.sent
    assert sent["DelaySeconds"] == 240
    assert json.loads(sent["MessageBody"]) == {"tenant": "t", "run_id": "run_x", "release_step": 3}


def test_the_run_watchdog_ends_a_run_whose_execution_was_stopped_behind_its_back(
    aws: Aws, context: LocalContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a started run (watch delay 0 s, to see the checks now)
    from functions.adapters import wiring

    monkeypatch.setenv("STEPWISE_WATCH_DELAY_SECONDS", "0")
    wiring.reset()
    run_id = submit(context)
    body = aws.queued_messages()[0]["Body"]
    intake.handler(sqs_event(body), context)
    (watch,) = [m for m in aws.queued_messages() if '"watch"' in m["Body"]]
    # When its execution is running, the check re-schedules itself
    intake.handler(sqs_event(watch["Body"]), context)
    assert len([m for m in aws.queued_messages() if '"watch"' in m["Body"]]) >= 1
    # When the execution is stopped outside Stepwise (no event reached the run), the next check ends the run
    (execution,) = aws.executions()
    aws.sfn.stop_execution(executionArn=execution["executionArn"])
    intake.handler(sqs_event(watch["Body"]), context)
    run = json.loads(api.handler(http_event("GET", f"/runs/{run_id}"), context)["body"])
    assert run["status"] == "CANCELLED"
    assert run["error"]["code"] == "STUCK" and "its execution ended ABORTED" in run["error"]["message"]


def test_a_cancel_whose_stop_fails_is_still_a_cancel_and_the_stop_is_retried_from_the_queue(
    aws: Aws, context: LocalContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a started run
    from botocore.exceptions import ClientError

    from functions.adapters import wiring
    from functions.adapters.settings import ApiSettings, load

    run_id = submit(context)
    intake.handler(sqs_event(aws.queued_messages()[0]["Body"]), context)
    for message in aws.queued_messages():  # the intake and watchdog messages: not under test
        aws.sqs.delete_message(QueueUrl=aws.queue_url, ReceiptHandle=message["ReceiptHandle"])
    (execution,) = aws.executions()
    # When it is cancelled while StopExecution fails (throttled, Step Functions unavailable, ...)
    client = wiring.workflow(load(ApiSettings)).client
    real_stop = client.stop_execution

    def unavailable(**_: Any) -> None:
        raise ClientError({"Error": {"Code": "ServiceUnavailable", "Message": "try again"}}, "StopExecution")

    monkeypatch.setattr(client, "stop_execution", unavailable)
    answer = api.handler(http_event("POST", f"/runs/{run_id}/cancel"), context)
    # Then the client is told what is true: the run is cancelled (a second cancel is the 409 of an ended run)
    assert answer["statusCode"] == 200 and json.loads(answer["body"])["status"] == "CANCELLED"
    assert api.handler(http_event("POST", f"/runs/{run_id}/cancel"), context)["statusCode"] == 409
    assert aws.sfn.describe_execution(executionArn=execution["executionArn"])["status"] == "RUNNING"
    # And the stop waits in the queue; delivered once Step Functions answers, it stops the execution
    received = aws.sqs.receive_message(QueueUrl=aws.queue_url, MaxNumberOfMessages=10, VisibilityTimeout=0)
    (retry,) = received.get("Messages", [])
    body = json.loads(retry["Body"])
    assert body["stop_execution"] == run_id and body["reason"] == "cancelled by request"
    monkeypatch.setattr(client, "stop_execution", real_stop)
    assert intake.handler(sqs_event(retry["Body"]), context) == {"batchItemFailures": []}
    assert aws.sfn.describe_execution(executionArn=execution["executionArn"])["status"] == "ABORTED"
