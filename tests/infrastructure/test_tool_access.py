"""What agents' tools may reach, as synthesised: the results bucket, the MCP credentials and the Lambda tools
(CDK context mcp_servers, lambda_tools), each granted to exactly the functions and roles that need it."""

from __future__ import annotations

import json
from typing import Any

import aws_cdk as cdk
import pytest
from aws_cdk.assertions import Template

from infra.functions import FUNCTIONS
from infra.stacks.stepwise_stack import StepwiseStack
from tests.infrastructure.test_stack import (
    SKIP_BUNDLING,
    as_list,
    parse_definition,
    role_of,
    role_statements,
    walk_states,
)

MCP_SERVERS = [
    {"url": "https://mcp.example.com/mcp", "secret": "stepwise/mcp/example"},
    {"url": "https://tickets.example.com/mcp",
     "secret": "arn:aws:secretsmanager:us-east-1:111122223333:secret:tickets-AbCdEf",
     "header": "X-Api-Key", "prefix": ""},
]  # fmt: skip
LAMBDA_TOOLS = [
    {"function": "refund-order", "idempotent": False, "timeout_seconds": 20},
    {"function": "arn:aws:lambda:us-east-1:111122223333:function:lookup", "idempotent": True},
]


@pytest.fixture(scope="module")
def resources() -> dict[str, dict[str, Any]]:
    app = cdk.App(context=SKIP_BUNDLING)
    stack = StepwiseStack(
        app,
        "Stepwise",
        default_model="claude-sonnet-4-5",
        env=cdk.Environment(account="123456789012", region="us-east-1"),
        mcp_servers=MCP_SERVERS,
        lambda_tools=LAMBDA_TOOLS,
        egress_allow_addresses=["10.0.0.0/8"],
        http_fetch_allowed_domains=["docs.example.com"],
        tool_result_retention_days=7,
    )
    return dict(Template.from_stack(stack).to_json()["Resources"])


def functions(resources: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Function name (infra/functions.py) -> properties, found by handler."""
    names = {spec.handler: name for name, spec in FUNCTIONS.items()}
    return {names[r["Properties"]["Handler"]]: r["Properties"] for r in resources.values()
            if r["Type"] == "AWS::Lambda::Function" and "Handler" in r["Properties"]}  # fmt: skip


def resources_granting(statements: list[dict[str, Any]], action: str) -> list[Any]:
    return [resource for s in statements if s["Effect"] == "Allow" and action in as_list(s["Action"])
            for resource in as_list(s["Resource"])]  # fmt: skip


def rendered(value: Any) -> str:
    """An ARN with its tokens shown as X."""
    if isinstance(value, str):
        return value
    if "Fn::Join" not in value:
        return "X"  # a Ref or GetAtt of the stack's own resource
    separator, parts = value["Fn::Join"]
    return separator.join(part if isinstance(part, str) else "X" for part in parts)


def test_the_results_bucket_is_encrypted_private_tls_only_and_expires_objects(resources: dict[str, Any]) -> None:
    (bucket_id,) = [lid for lid, r in resources.items() if r["Type"] == "AWS::S3::Bucket"]
    props = resources[bucket_id]["Properties"]
    assert props["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]["ServerSideEncryptionByDefault"] == {
        "SSEAlgorithm": "AES256"
    }
    assert props["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True, "BlockPublicPolicy": True, "IgnorePublicAcls": True, "RestrictPublicBuckets": True,
    }  # fmt: skip
    (rule,) = props["LifecycleConfiguration"]["Rules"]
    assert rule["Status"] == "Enabled" and rule["ExpirationInDays"] == 7
    (policy,) = [r for r in resources.values() if r["Type"] == "AWS::S3::BucketPolicy"]
    (deny,) = policy["Properties"]["PolicyDocument"]["Statement"]
    assert deny["Effect"] == "Deny" and deny["Action"] == "s3:*"
    assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def test_only_the_tool_and_step_functions_write_results_and_only_the_api_reads_them(resources: dict[str, Any]) -> None:
    (bucket_id,) = [lid for lid, r in resources.items() if r["Type"] == "AWS::S3::Bucket"]
    access: dict[str, set[str]] = {}
    for name, props in functions(resources).items():
        for statement in role_statements(resources, role_of(props)):
            if bucket_id in json.dumps(statement["Resource"]):
                access.setdefault(name, set()).update(as_list(statement["Action"]))
    # the tool function and the step (the fast calls it runs) put objects; the api gets them (and may list, so an
    # expired one is a 404, not a 403)
    assert access == {"tool": {"s3:PutObject"}, "step": {"s3:PutObject"}, "api": {"s3:GetObject", "s3:ListBucket"}}


def test_the_mcp_credentials_are_readable_by_exactly_the_api_and_tool_functions(resources: dict[str, Any]) -> None:
    wanted = {"arn:X:secretsmanager:us-east-1:123456789012:secret:stepwise/mcp/example-??????",
              "arn:aws:secretsmanager:us-east-1:111122223333:secret:tickets-AbCdEf"}  # fmt: skip
    for name, props in functions(resources).items():
        secrets = {rendered(r) for r in resources_granting(role_statements(resources, role_of(props)),
                                                           "secretsmanager:GetSecretValue")}  # fmt: skip
        mcp = {secret for secret in secrets if "mcp" in secret or "tickets" in secret}
        assert mcp == (wanted if name in ("api", "tool") else set()), name


def test_the_state_machine_may_invoke_exactly_the_allowed_lambda_tools(resources: dict[str, Any]) -> None:
    (machine,) = [r for r in resources.values() if r["Type"] == "AWS::StepFunctions::StateMachine"]
    statements = role_statements(resources, machine["Properties"]["RoleArn"]["Fn::GetAtt"][0])
    invoked = {rendered(r) for r in resources_granting(statements, "lambda:InvokeFunction")}
    own = {r for r in invoked if r.startswith("X")}  # Stepwise's own functions (Fn::GetAtt)
    assert invoked - own == {
        "arn:X:lambda:us-east-1:123456789012:function:refund-order",
        "arn:X:lambda:us-east-1:123456789012:function:refund-order:*",
        "arn:aws:lambda:us-east-1:111122223333:function:lookup",
        "arn:aws:lambda:us-east-1:111122223333:function:lookup:*",
    }
    # and no function of the stack may invoke them (the map does, so no Stepwise Lambda waits on one)
    for name, props in functions(resources).items():
        granted = {
            rendered(r) for r in resources_granting(role_statements(resources, role_of(props)), "lambda:InvokeFunction")
        }
        assert not any("refund-order" in r or "lookup" in r for r in granted), name


def test_a_lambda_tool_is_invoked_by_the_map_once_when_it_has_side_effects(resources: dict[str, Any]) -> None:
    (machine,) = [r for r in resources.values() if r["Type"] == "AWS::StepFunctions::StateMachine"]
    states = dict(walk_states(parse_definition(machine["Properties"]["DefinitionString"])["States"]))
    once, retried = states["InvokeLambdaToolOnce"], states["InvokeLambdaTool"]
    for state in (once, retried):
        assert state["Resource"].endswith(":states:::lambda:invoke")
        assert state["Parameters"] == {"FunctionName.$": "$.call.function", "Payload.$": "$.call.input"}
        assert state["TimeoutSecondsPath"] == "$.call.timeout_seconds"
        assert [c["Next"] for c in state["Catch"]] == ["RecordToolFailure"]
    assert [r["ErrorEquals"] for r in once["Retry"]] == [["Lambda.TooManyRequestsException"]]  # refused, never ran
    assert "Sandbox.Timedout" in retried["Retry"][0]["ErrorEquals"]
    # the deployment's settings reach the functions as the context says
    env = functions(resources)["tool"]["Environment"]["Variables"]
    assert json.loads(env["STEPWISE_LAMBDA_TOOLS"]) == [
        {"function": "refund-order", "idempotent": False, "timeout_seconds": 20},
        {
            "function": "arn:aws:lambda:us-east-1:111122223333:function:lookup",
            "idempotent": True,
            "timeout_seconds": 30,
        },
    ]
    assert env["STEPWISE_EGRESS_ALLOW_ADDRESSES"] == "10.0.0.0/8"
    assert env["STEPWISE_HTTP_FETCH_DOMAINS"] == "docs.example.com"
    assert [s["url"] for s in json.loads(env["STEPWISE_MCP_SERVERS"])] == [s["url"] for s in MCP_SERVERS]


@pytest.mark.parametrize(
    ("settings", "problem"),
    [
        ({"lambda_tools": [{"function": "x", "timeout_seconds": 5000}]}, "timeout_seconds"),
        ({"lambda_tools": [{"name": "x"}]}, "function"),
        ({"mcp_servers": [{"url": "https://m.example.com/mcp", "token": "t"}]}, "token"),
        ({"egress_allow_addresses": ["10.0.0.0/88"]}, "10.0.0.0/88"),
        ({"http_fetch_allowed_domains": ["https://docs.example.com/"]}, "is not a host name"),
    ],
)
def test_a_typo_in_the_tool_context_fails_the_synth(settings: dict[str, Any], problem: str) -> None:
    app = cdk.App(context=SKIP_BUNDLING)
    with pytest.raises(Exception, match=problem):
        StepwiseStack(app, "Stepwise", default_model="claude-sonnet-4-5", **settings)
