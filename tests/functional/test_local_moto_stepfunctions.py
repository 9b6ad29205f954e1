"""The local stack's bound on moto's Step Functions memory (stepwise/local/moto_stepfunctions.py): the event histories
of the last N finished executions are kept, an older one's GetExecutionHistory says it was pruned (never an empty or
partial history), and every execution's record still answers."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from stepwise.local import moto_stepfunctions

DEFINITION = json.dumps({"StartAt": "Echo", "States": {"Echo": {"Type": "Pass", "End": True}}})


def later() -> datetime:
    """A minute from now: every execution here has settled by then (taken when asked: collection is long before)."""
    return datetime.now(UTC) + timedelta(minutes=1)


@pytest.fixture
def sfn() -> Iterator[tuple[Any, str]]:
    moto_stepfunctions.install()
    with mock_aws(config={"stepfunctions": {"execute_state_machine": True}}):
        client = boto3.client("stepfunctions", region_name="us-east-1")
        arn = client.create_state_machine(
            name="m", definition=DEFINITION, roleArn="arn:aws:iam::123456789012:role/r", type="STANDARD"
        )["stateMachineArn"]
        yield client, arn


def run(client: Any, machine: str, name: str) -> str:
    arn = str(client.start_execution(stateMachineArn=machine, name=name, input=json.dumps({"n": name}))["executionArn"])
    deadline = time.monotonic() + 30
    while client.describe_execution(executionArn=arn)["status"] == "RUNNING":
        assert time.monotonic() < deadline, f"{name} did not finish"
        time.sleep(0.05)
    return arn


def history(client: Any, arn: str) -> list[str]:
    return [event["type"] for event in client.get_execution_history(executionArn=arn)["events"]]


def test_the_last_n_finished_executions_keep_their_histories_older_ones_say_theirs_was_pruned(
    sfn: tuple[Any, str],
) -> None:
    client, machine = sfn
    arns = [run(client, machine, f"e{n}") for n in range(4)]
    whole = history(client, arns[0])
    assert whole[0] == "ExecutionStarted" and whole[-1] == "ExecutionSucceeded"

    assert moto_stepfunctions.prune(2, now=later()) == 2
    assert moto_stepfunctions.prune(2, now=later()) == 0  # already bounded

    for arn in arns[2:]:
        assert history(client, arn) == whole
    for arn in arns[:2]:
        with pytest.raises(ClientError) as pruned:
            client.get_execution_history(executionArn=arn)
        assert pruned.value.response["Error"]["Code"] == "ExecutionHistoryPruned"
        assert "last 2 finished executions" in pruned.value.response["Error"]["Message"]
        assert "--histories" in pruned.value.response["Error"]["Message"]
        # the record stays: status, input and output
        described = client.describe_execution(executionArn=arn)
        assert described["status"] == "SUCCEEDED"
        assert json.loads(described["output"]) == json.loads(described["input"])


def test_a_pruned_execution_s_name_is_still_taken(sfn: tuple[Any, str]) -> None:
    # the intake starts each run's execution under the run's name, exactly once: that must outlive the history
    client, machine = sfn
    run(client, machine, "once")
    run(client, machine, "next")
    assert moto_stepfunctions.prune(0, now=later()) == 2

    for payload in ({"n": "once"}, {"n": "other"}):  # a closed execution's name is taken, whatever the input
        with pytest.raises(ClientError) as taken:
            client.start_execution(stateMachineArn=machine, name="once", input=json.dumps(payload))
        assert taken.value.response["Error"]["Code"] == "ExecutionAlreadyExists"
    listed = client.list_executions(stateMachineArn=machine)["executions"]
    assert sorted(e["name"] for e in listed) == ["next", "once"]


def test_running_and_just_finished_executions_are_never_pruned(sfn: tuple[Any, str]) -> None:
    client, machine = sfn
    arn = run(client, machine, "fresh")
    assert moto_stepfunctions.prune(0) == 0  # stopped under a second ago: its last events may still be published
    assert history(client, arn)[-1] == "ExecutionSucceeded"
    assert moto_stepfunctions.prune(0, now=later()) == 1
