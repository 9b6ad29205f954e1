"""Deploy-time choices an operator states (log retention, what `cdk destroy` keeps) and tracing granted by a named
AWS policy, so that any new Resource "*" statement on a function's role fails synth."""

from __future__ import annotations

from typing import Any

import aws_cdk as cdk
import cdk_nag
import pytest
from aws_cdk import aws_iam as iam

from app import build_app
from infra.stacks.stepwise_stack import StepwiseStack
from tests.infrastructure.test_stack import SKIP_BUNDLING


def synth(monkeypatch: pytest.MonkeyPatch, **context: Any) -> dict[str, Any]:
    for key in ("CDK_DEFAULT_REGION", "CDK_DEFAULT_ACCOUNT"):
        monkeypatch.delenv(key, raising=False)
    app = build_app(cdk.App(context={**SKIP_BUNDLING, **context}))
    return dict(app.synth().get_stack_by_name("Stepwise").template["Resources"])


def of_type(resources: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [r for r in resources.values() if r["Type"] == kind]


@pytest.mark.parametrize(("days", "expected"), [("7", 7), ("365", 365), ("0", None)])
def test_every_log_group_keeps_logs_as_long_as_the_context_says(
    monkeypatch: pytest.MonkeyPatch, days: str, expected: int | None
) -> None:
    groups = of_type(synth(monkeypatch, log_retention_days=days), "AWS::Logs::LogGroup")
    assert len(groups) >= 10  # each function's, the workflow's, the API's access logs
    assert {g.get("Properties", {}).get("RetentionInDays") for g in groups} == {expected}


@pytest.mark.parametrize(("context", "problem"), [({"log_retention_days": "10"}, "log_retention_days 10: one of"),
                                                  ({"log_retention_days": "a month"}, "a whole number of days"),
                                                  ({"tenant_requests_per_minute": "0"}, "1 to 1000000"),
                                                  ({"tenant_requests_per_minute": "lots"}, "1 to 1000000"),
                                                  ({"removal_policy": "snapshot"}, "retain or destroy")])  # fmt: skip
def test_a_retention_cloudwatch_does_not_offer_a_bad_rate_or_an_unknown_removal_policy_fails_synth(
    context: dict[str, str], problem: str
) -> None:
    with pytest.raises(SystemExit, match=problem):
        build_app(cdk.App(context={**SKIP_BUNDLING, **context}))


@pytest.mark.parametrize(("choice", "policy"), [(None, "Retain"), ("destroy", "Delete")])
def test_the_table_and_results_bucket_are_kept_on_destroy_unless_the_context_says(
    monkeypatch: pytest.MonkeyPatch, choice: str | None, policy: str
) -> None:
    resources = synth(monkeypatch, **({"removal_policy": choice} if choice else {}))
    kept = of_type(resources, "AWS::DynamoDB::GlobalTable") + of_type(resources, "AWS::S3::Bucket")
    assert len(kept) == 2 and {r.get("DeletionPolicy") for r in kept} == {policy}


def test_functions_trace_through_the_named_xray_policy_and_no_function_role_grants_resource_star(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    resources = synth(monkeypatch)
    functions = of_type(resources, "AWS::Lambda::Function")
    assert functions and all(f["Properties"]["TracingConfig"] == {"Mode": "Active"} for f in functions)
    roles = {f["Properties"]["Role"]["Fn::GetAtt"][0] for f in functions}
    for role in roles:
        managed = str(resources[role]["Properties"]["ManagedPolicyArns"])
        assert "AWSXRayDaemonWriteAccess" in managed and "AWSLambdaBasicExecutionRole" in managed
    for policy in of_type(resources, "AWS::IAM::Policy"):
        if {r["Ref"] for r in policy["Properties"]["Roles"]} & roles:
            for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
                resources = (
                    statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
                )
                assert "*" not in resources, statement


def test_a_new_resource_star_statement_on_a_functions_role_fails_synth() -> None:
    # Given the stack with the cdk-nag checks, and a statement someone adds to a function's role
    app = cdk.App(context=SKIP_BUNDLING)
    stack = StepwiseStack(app, "Widened", default_model="claude-haiku-4-5")
    stack.functions["tool"].add_to_role_policy(iam.PolicyStatement(actions=["s3:GetObject"], resources=["*"]))
    cdk.Validations.of(app).add_plugins(cdk_nag.AwsSolutionsChecks(app))
    # When / Then: synthesis fails on it (no acknowledgement covers a function's Resource::*)
    with pytest.raises(RuntimeError, match=r"AwsSolutions-IAM5\[Resource::\*\]"):
        app.synth()
