"""A long-lived local stack keeps the Step Functions event histories of the last N finished executions only
(stepwise/local/moto_stepfunctions.py, pruned by the stack's janitor); every execution's record and every run stay."""

from __future__ import annotations

import time
from typing import Any

import pytest
from botocore.exceptions import ClientError

from stepwise.local.stack import LocalStack
from tests.e2e.conftest import execution_history, http, wait

pytestmark = pytest.mark.e2e


def test_a_long_lived_stack_keeps_the_event_histories_of_the_last_n_finished_executions(
    template: dict[str, Any],
) -> None:
    with LocalStack(port=0, template=template, histories=2) as stack:
        run_ids = []
        for n in range(4):
            _, accepted = http(stack, "POST", "/runs", {"input": f"What is {n} * 7?"})
            wait(stack, accepted["run_id"])
            execution_history(stack, accepted["run_id"])  # its execution has ended
            run_ids.append(accepted["run_id"])
        arn = stack.state_machine_arn.replace(":stateMachine:", ":execution:") + ":"
        deadline = time.monotonic() + 30
        while True:  # the janitor's next passes prune the two oldest (stepwise/local/stack.py)
            try:
                stack.sfn.get_execution_history(executionArn=arn + run_ids[1])
            except ClientError as exc:
                assert exc.response["Error"]["Code"] == "ExecutionHistoryPruned"
                break
            assert time.monotonic() < deadline, "the oldest histories were never pruned"
            time.sleep(0.5)
        with pytest.raises(ClientError, match="ExecutionHistoryPruned"):
            stack.sfn.get_execution_history(executionArn=arn + run_ids[0])
        for run_id in run_ids[2:]:
            assert execution_history(stack, run_id)[-1]["type"] == "ExecutionSucceeded"
        for run_id in run_ids:  # every record stays, and so do the runs
            assert stack.sfn.describe_execution(executionArn=arn + run_id)["status"] == "SUCCEEDED"
            assert http(stack, "GET", f"/runs/{run_id}")[1]["status"] == "SUCCEEDED"
