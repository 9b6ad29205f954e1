"""Every DynamoDB action each function performs on the local stack is one its IAM role is granted.

Runs the paths that touch the table (a run with tools, a cancel, a budget refusal, a run its budget ends after its
tools, the spend report, the response cache) with a botocore hook that records which function made which call,
then checks the calls against each function's declared table actions (infra/functions.py: what the CDK stack
grants on the table).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from infra.functions import FUNCTIONS
from stepwise.local.stack import LocalStack
from tests.e2e.conftest import count_gauges, http, wait
from tests.fakes.webhook_receiver import receiving

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def traced(template: dict[str, Any]) -> Iterator[tuple[LocalStack, dict[str, set[str]]]]:
    actions: dict[str, set[str]] = defaultdict(set)
    with LocalStack(port=0, template=template) as stack:
        names = {lid: handler.split(".")[2] for lid, handler in stack.topology.handlers.items()}

        def record(event_name: str, params: dict[str, Any], **_: Any) -> None:
            function = getattr(stack.lambdas.current, "name", None)
            if function is None:
                return  # the local stack's own setup calls
            operation = event_name.rsplit(".", 1)[-1]
            if operation == "TransactWriteItems":  # IAM authorises each part of a transaction
                for part in params["TransactItems"]:
                    (kind,) = part
                    actions[names[function]].add({"Put": "PutItem", "Update": "UpdateItem", "Delete": "DeleteItem",
                                                  "ConditionCheck": "ConditionCheckItem"}[kind])  # fmt: skip
            elif params.get("IndexName"):  # a Query of an index: allowed only on the indexes the function declares
                actions[names[function]].add(f"{operation}:{params['IndexName']}")
            else:
                actions[names[function]].add(operation)

        boto3._get_default_session().events.register("provide-client-params.dynamodb", record)
        try:
            yield stack, actions
        finally:
            boto3._get_default_session().events.unregister("provide-client-params.dynamodb", record)


def test_every_table_action_a_function_performs_is_granted(traced: tuple[LocalStack, dict[str, set[str]]]) -> None:
    stack, actions = traced
    # Given the paths that use the table (a webhook endpoint told of the first run's end among them)
    with receiving() as receiver:
        _, hook = http(stack, "POST", "/v1/webhooks", {"url": receiver.url, "event_types": ["run.succeeded"]})
        receiver.secret = hook["secret"]
        _, first = http(stack, "POST", "/runs", {"input": "What is 6 * 7?", "response_cache": True})
        wait(stack, first["run_id"])
        (delivery,) = receiver.wait_for(1)
        assert delivery.error is None
        http(stack, "DELETE", f"/v1/webhooks/{hook['id']}")
    _, again = http(stack, "POST", "/runs", {"input": "What is 6 * 7?", "response_cache": True})  # cache hits
    wait(stack, again["run_id"])
    _, limited = http(stack, "POST", "/runs", {"input": "What is 2 * 2?", "budget": {"max_usd": 0.0001}})
    wait(stack, limited["run_id"])
    # (a run whose budget ends it after its tools: Finalize gives the calls of its last step their results first)
    _, capped = http(stack, "POST", "/runs", {"input": "What is 6 * 7?", "budget": {"max_steps": 1}})
    wait(stack, capped["run_id"])
    # (the built-ins run in their step: a tool that is not fast runs in the tool function, the Map's)
    _, fetching = http(
        stack, "POST", "/runs", {"input": "Use http_fetch on https://example.com/", "tools": ["http_fetch"]}
    )
    wait(stack, fetching["run_id"])
    _, queued = http(stack, "POST", "/runs", {"input": "hello"})
    http(stack, "POST", f"/runs/{queued['run_id']}/cancel")
    http(stack, "GET", "/costs")
    _, other = http(stack, "POST", "/runs", {"input": "hello again"})
    http(stack, "GET", "/active")
    assert count_gauges(stack)["runs"] >= 1  # the gauges' count (the run above, queued or running)
    http(stack, "POST", "/active/cancel")  # the kill switch (the run above, queued or running)
    wait(stack, other["run_id"])
    http(stack, "GET", f"/runs/{first['run_id']}/steps")
    _, ended = http(stack, "GET", f"/runs/{capped['run_id']}")
    assert (ended["status"], ended["steps"], ended["error"]["code"]) == ("BUDGET_EXCEEDED", 1, "MAX_STEPS")
    # Then every function's actions are within its grant
    assert set(actions) >= {"api", "intake", "step", "tool", "finalize", "webhooks"}
    assert "Query:active" in actions["api"] and actions["gauges"] == {"Query:active"}
    for function, performed in actions.items():
        granted = {action.removeprefix("dynamodb:") for action in FUNCTIONS[function].table_actions}
        granted |= {f"Query:{index}" for index in FUNCTIONS[function].index_queries}
        assert performed <= granted, f"{function} performs {sorted(performed - granted)} without a grant"
    # And the second identical run was served by the response cache at no cost
    _, steps = http(stack, "GET", f"/runs/{again['run_id']}/steps")
    assert [s["provider"] for s in steps["steps"]] == ["response-cache", "response-cache"]
    assert json.loads(json.dumps(steps["steps"][0]["usage"]))["input_tokens"] == 0
    _, run = http(stack, "GET", f"/runs/{again['run_id']}")
    assert run["status"] == "SUCCEEDED" and run["cost_usd"] == 0
