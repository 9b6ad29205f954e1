"""Webhooks as synthesised: the queue and its dead letters, the webhooks function's event source and grants, the
allow-list (CDK context webhook_allowed_hosts) checked at synth and given to the functions."""

from __future__ import annotations

import json
from typing import Any

import aws_cdk as cdk
import pytest
from aws_cdk.assertions import Template

from functions.agent.webhooks import MAX_ATTEMPTS
from infra.constants import WEBHOOKS_MAX_CONCURRENCY
from infra.functions import FUNCTIONS
from infra.stacks.stepwise_stack import StepwiseStack
from tests.infrastructure.test_stack import SKIP_BUNDLING, as_list, queue_of, role_of, role_statements

HOSTS = ["hooks.example.com", "*.Example.org"]
ENDS_RUNS = {"api", "intake", "finalize", "mark_failed", "workflow_ended"}


def synth(**context: Any) -> dict[str, dict[str, Any]]:
    app = cdk.App(context=SKIP_BUNDLING)
    stack = StepwiseStack(app, "Stepwise", default_model="claude-sonnet-4-5", **context)
    return dict(Template.from_stack(stack).to_json()["Resources"])


@pytest.fixture(scope="module")
def resources() -> dict[str, dict[str, Any]]:
    return synth(webhook_allowed_hosts=HOSTS)


@pytest.fixture(scope="module")
def functions(resources: dict[str, dict[str, Any]]) -> dict[str, tuple[str, dict[str, Any]]]:
    by_handler = {spec.handler: name for name, spec in FUNCTIONS.items()}
    return {by_handler[r["Properties"]["Handler"]]: (lid, r["Properties"]) for lid, r in resources.items()
            if r["Type"] == "AWS::Lambda::Function" and "Handler" in r["Properties"]}  # fmt: skip


@pytest.fixture(scope="module")
def queue(
    resources: dict[str, dict[str, Any]], functions: dict[str, tuple[str, dict[str, Any]]]
) -> tuple[str, dict[str, Any]]:
    return queue_of("STEPWISE_WEBHOOKS_QUEUE_URL", resources, functions)


def test_a_delivery_is_received_once_per_attempt_then_dead_letters_with_an_alarm(
    resources: dict[str, dict[str, Any]], queue: tuple[str, dict[str, Any]]
) -> None:
    queue_id, props = queue[0], queue[1]["Properties"]
    assert props["RedrivePolicy"]["maxReceiveCount"] == MAX_ATTEMPTS == 10
    dlq_id = props["RedrivePolicy"]["deadLetterTargetArn"]["Fn::GetAtt"][0]
    assert dlq_id != queue_id and resources[dlq_id]["Properties"]["MessageRetentionPeriod"] == 14 * 24 * 3600
    for logical_id in (queue_id, dlq_id):
        assert resources[logical_id]["Properties"]["SqsManagedSseEnabled"] is True
    # the retries (30 s doubling to an hour: about 3 hours in all) end well before a message expires
    assert props["MessageRetentionPeriod"] == 4 * 24 * 3600
    alarms = [r["Properties"] for r in resources.values() if r["Type"] == "AWS::CloudWatch::Alarm"]
    (alarm,) = [a for a in alarms if dlq_id in json.dumps(a.get("Dimensions", []))]
    assert alarm["MetricName"] == "ApproximateNumberOfMessagesVisible" and alarm["Threshold"] == 1


def test_the_webhooks_function_drains_the_queue_with_partial_failures_and_bounded_concurrency(
    resources: dict[str, dict[str, Any]],
    functions: dict[str, tuple[str, dict[str, Any]]],
    queue: tuple[str, dict[str, Any]],
) -> None:
    (mapping,) = [r["Properties"] for r in resources.values() if r["Type"] == "AWS::Lambda::EventSourceMapping"
                  and r["Properties"]["EventSourceArn"] == {"Fn::GetAtt": [queue[0], "Arn"]}]  # fmt: skip
    (name_part, qualifier) = mapping["FunctionName"]["Fn::Join"][1]  # the function's live alias (name:live)
    alias = name_part["Fn::Select"][1]["Fn::Split"][1]["Ref"]
    assert resources[alias]["Properties"]["FunctionName"] == {"Ref": functions["webhooks"][0]} and qualifier == ":live"
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert mapping["ScalingConfig"] == {"MaximumConcurrency": WEBHOOKS_MAX_CONCURRENCY}
    timeout = functions["webhooks"][1]["Timeout"]
    assert queue[1]["Properties"]["VisibilityTimeout"] >= 6 * timeout
    # a batch of deliveries, each cut at its timeout to connect and again to be answered, fits in the function's
    env = functions["webhooks"][1]["Environment"]["Variables"]
    assert mapping["BatchSize"] * 2 * float(env["STEPWISE_WEBHOOK_TIMEOUT_SECONDS"]) < timeout


def test_every_function_that_ends_runs_and_only_those_announces_and_the_webhooks_function_fans_out(
    resources: dict[str, dict[str, Any]],
    functions: dict[str, tuple[str, dict[str, Any]]],
    queue: tuple[str, dict[str, Any]],
) -> None:
    arn = {"Fn::GetAtt": [queue[0], "Arn"]}
    senders = {name for name, (_, props) in functions.items()
               if any(s["Effect"] == "Allow" and "sqs:SendMessage" in as_list(s["Action"]) and s["Resource"] == arn
                      for s in role_statements(resources, role_of(props)))}  # fmt: skip
    assert senders == ENDS_RUNS | {"webhooks"}
    for name in ENDS_RUNS | {"webhooks"}:
        env = functions[name][1]["Environment"]["Variables"]
        assert env["STEPWISE_WEBHOOKS_QUEUE_URL"] == {"Ref": queue[0]}
        assert env["STEPWISE_WEBHOOK_ALLOWED_HOSTS"] == "hooks.example.com,*.example.org"
        assert "STEPWISE_WEBHOOK_HTTP_HOSTS" not in env  # plain http is the local stack's alone


def test_the_webhooks_function_may_only_read_webhook_items_and_change_its_messages_visibility(
    resources: dict[str, dict[str, Any]],
    functions: dict[str, tuple[str, dict[str, Any]]],
    queue: tuple[str, dict[str, Any]],
) -> None:
    statements = role_statements(resources, role_of(functions["webhooks"][1]))
    table = [s for s in statements if any(str(a).startswith("dynamodb:") for a in as_list(s["Action"]))]
    (statement,) = table
    assert sorted(as_list(statement["Action"])) == ["dynamodb:GetItem", "dynamodb:Query"]
    assert statement["Condition"] == {"ForAllValues:StringLike": {"dynamodb:LeadingKeys": ["T#*#WEBHOOKS"]}}
    consume = [s for s in statements if "sqs:ChangeMessageVisibility" in as_list(s["Action"])]
    assert consume and all(s["Resource"] == {"Fn::GetAtt": [queue[0], "Arn"]} for s in consume)
    assert FUNCTIONS["webhooks"].leading_keys == ("T#*#WEBHOOKS",)


def test_without_an_allow_list_webhooks_are_off_and_the_queue_is_still_there() -> None:
    resources = synth()
    envs = [r["Properties"]["Environment"]["Variables"] for r in resources.values()
            if r["Type"] == "AWS::Lambda::Function" and "Handler" in r["Properties"]]  # fmt: skip
    hosts = {env["STEPWISE_WEBHOOK_ALLOWED_HOSTS"] for env in envs if "STEPWISE_WEBHOOK_ALLOWED_HOSTS" in env}
    assert hosts == {""}  # functions announce nothing, and a registration is refused 400 naming the context


@pytest.mark.parametrize(
    "host", ["https://hooks.example.com", "hooks.example.com/in", "hooks.example.com:8443", "*", "a..b", ""]
)
def test_a_malformed_allowed_host_fails_synth_naming_it(host: str) -> None:
    with pytest.raises(ValueError, match="webhook_allowed_hosts"):
        synth(webhook_allowed_hosts=[host])
