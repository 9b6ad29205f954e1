"""The deployment's way in (CDK context auth): JWTs of an OIDC issuer or IAM principals mapped to tenants, on
every route but the public ones, synthesised with the cdk-nag checks; a half-configured mode fails synth."""

from __future__ import annotations

import json
from typing import Any

import aws_cdk as cdk
import pytest

from app import build_app
from tests.infrastructure.test_stack import SKIP_BUNDLING

PUBLIC = {"GET /health", "GET /openapi.json"}
ISSUER = "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_Example"
ROLE = "arn:aws:iam::123456789012:role/StepwiseOps"


def synth(monkeypatch: pytest.MonkeyPatch, **context: Any) -> dict[str, Any]:
    for key in ("CDK_DEFAULT_REGION", "CDK_DEFAULT_ACCOUNT"):
        monkeypatch.delenv(key, raising=False)
    app = build_app(cdk.App(context={**SKIP_BUNDLING, **context}))
    return dict(app.synth().get_stack_by_name("Stepwise").template["Resources"])  # cdk-nag errors raise here


def routes(resources: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["Properties"]["RouteKey"]: r["Properties"] for r in resources.values()
            if r["Type"] == "AWS::ApiGatewayV2::Route"}  # fmt: skip


def api_environment(resources: dict[str, Any]) -> dict[str, str]:
    (env,) = [
        r["Properties"]["Environment"]["Variables"]
        for r in resources.values()
        if r["Type"] == "AWS::Lambda::Function" and r["Properties"]["Handler"] == "functions.handlers.api.handler"
    ]
    return dict(env)  # fmt: skip


def test_jwt_puts_api_gateways_jwt_authorizer_on_every_route_but_the_public_ones(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    resources = synth(monkeypatch, auth="jwt", jwt_issuer=ISSUER, jwt_audience='["client-a", "client-b"]',
                      jwt_tenant_claim="custom:tenant")  # fmt: skip

    by_route = routes(resources)
    assert {by_route.pop(key).get("AuthorizationType", "NONE") for key in PUBLIC} == {"NONE"}
    assert {props["AuthorizationType"] for props in by_route.values()} == {"JWT"}
    (authorizer_id,) = {props["AuthorizerId"]["Ref"] for props in by_route.values()}
    authorizer = resources[authorizer_id]["Properties"]
    assert authorizer["AuthorizerType"] == "JWT"
    assert authorizer["JwtConfiguration"] == {"Issuer": ISSUER, "Audience": ["client-a", "client-b"]}
    assert authorizer["IdentitySource"] == ["$request.header.Authorization"]
    env = api_environment(resources)
    assert (env["STEPWISE_AUTH"], env["STEPWISE_TENANT_CLAIM"], env["STEPWISE_IAM_TENANTS"]) == (
        "jwt", "custom:tenant", "",
    )  # fmt: skip


def test_iam_signs_every_route_but_the_public_ones_and_gives_the_api_the_allow_list(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    resources = synth(monkeypatch, auth="iam", iam_tenants=json.dumps({ROLE: "ops"}))

    by_route = routes(resources)
    assert {by_route.pop(key).get("AuthorizationType", "NONE") for key in PUBLIC} == {"NONE"}
    assert {props["AuthorizationType"] for props in by_route.values()} == {"AWS_IAM"}
    assert not [r for r in resources.values() if r["Type"] == "AWS::ApiGatewayV2::Authorizer"]
    env = api_environment(resources)
    assert env["STEPWISE_AUTH"] == "iam" and json.loads(env["STEPWISE_IAM_TENANTS"]) == {ROLE: "ops"}


@pytest.mark.parametrize(
    ("context", "problem"),
    [
        ({"auth": "jwt", "jwt_audience": "client-a"}, "needs jwt_issuer"),
        ({"auth": "jwt", "jwt_issuer": "http://issuer.example.com", "jwt_audience": "a"}, "needs jwt_issuer"),
        ({"auth": "jwt", "jwt_issuer": ISSUER}, "needs jwt_audience"),
        ({"auth": "jwt", "jwt_issuer": ISSUER, "jwt_audience": "a", "jwt_tenant_claim": "a b"}, "tenant_claim"),
        ({"auth": "iam"}, "needs iam_tenants"),
        ({"auth": "iam", "iam_tenants": '{"arn:aws:iam::1:role/x": "ops"}'}, "not an IAM role or user ARN"),
        ({"auth": "api_key", "iam_tenants": json.dumps({ROLE: "ops"})}, "iam_tenants is for auth 'iam'"),
        ({"auth": "api_key", "jwt_issuer": ISSUER}, "are for auth 'jwt'"),
        ({"auth": "none"}, "the local stack's"),
        ({"auth": "cognito"}, "mode"),
    ],
)
def test_a_half_configured_auth_fails_synth_naming_what_is_missing(
    monkeypatch: pytest.MonkeyPatch, context: dict[str, str], problem: str
) -> None:
    with pytest.raises(SystemExit, match=problem):
        build_app(cdk.App(context={**SKIP_BUNDLING, **context}))


def test_an_allow_list_too_large_for_a_functions_environment_fails_synth() -> None:
    many = {f"arn:aws:iam::123456789012:role/team-{n:03d}-operators": f"team{n}" for n in range(60)}
    with pytest.raises(SystemExit, match="at most 2048 bytes"):
        build_app(cdk.App(context={**SKIP_BUNDLING, "auth": "iam", "iam_tenants": json.dumps(many)}))
