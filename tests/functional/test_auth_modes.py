"""The api function in a JWT or IAM deployment: the tenant comes from what API Gateway's authorizer vouched for,
scopes every read, and a request without one is a 401 in each API's error shape."""

from __future__ import annotations

import json
from typing import Any

import pytest

from functions.adapters import wiring
from functions.handlers import api
from stepwise.local.lambdas import LocalContext
from tests.functional.conftest import Aws, http_event

ROLE = "arn:aws:iam::123456789012:role/StepwiseOps"


def _jwt(method: str, path: str, body: Any = None, **claims: Any) -> dict[str, Any]:
    event = http_event(method, path, body)
    event["requestContext"]["authorizer"] = {"jwt": {"claims": claims, "scopes": None}}
    return event


def _iam(method: str, path: str, user_arn: str) -> dict[str, Any]:
    event = http_event(method, path)
    event["requestContext"]["authorizer"] = {"iam": {"userArn": user_arn, "accountId": "123456789012"}}
    return event


def _mode(monkeypatch: pytest.MonkeyPatch, **env: str) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    wiring.reset()


def test_a_jwt_deployment_scopes_runs_by_the_tenant_claim_and_records_the_sub(
    aws: Aws, context: LocalContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    _mode(monkeypatch, STEPWISE_AUTH="jwt", STEPWISE_TENANT_CLAIM="custom:tenant")
    created = api.handler(_jwt("POST", "/runs", {"input": "hi"}, sub="alice", **{"custom:tenant": "acme"}), context)
    run = json.loads(created["body"])
    assert created["statusCode"] == 202 and run["created_by"] == "alice"

    mine = api.handler(_jwt("GET", f"/runs/{run['run_id']}", sub="bob", **{"custom:tenant": "acme"}), context)
    theirs = api.handler(_jwt("GET", f"/runs/{run['run_id']}", sub="eve", **{"custom:tenant": "globex"}), context)
    unclaimed = api.handler(_jwt("GET", "/v1/agents", sub="eve"), context)

    assert mine["statusCode"] == 200 and theirs["statusCode"] == 404
    assert unclaimed["statusCode"] == 401
    assert json.loads(unclaimed["body"])["error"] == {
        "type": "authentication_error",
        "message": "the token has no 'custom:tenant' claim naming its tenant",
    }


def test_an_iam_deployment_serves_allow_listed_principals_only(
    aws: Aws, context: LocalContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    _mode(monkeypatch, STEPWISE_AUTH="iam", STEPWISE_IAM_TENANTS=json.dumps({ROLE: "ops"}))
    listed = api.handler(_iam("GET", "/costs", "arn:aws:sts::123456789012:assumed-role/StepwiseOps/alice"), context)
    other = api.handler(_iam("GET", "/costs", "arn:aws:sts::123456789012:assumed-role/Admin/alice"), context)

    assert listed["statusCode"] == 200 and json.loads(listed["body"])["tenant"] == "ops"
    assert other["statusCode"] == 401 and json.loads(other["body"])["error"]["code"] == "UNAUTHENTICATED"
