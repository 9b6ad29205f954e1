"""How a request's tenant is decided (functions/handlers/tenancy.py) in each of the deployment's auth modes, from
the request context API Gateway fills in: never from the client's own headers, never a default by accident."""

from __future__ import annotations

from typing import Any

import pytest

from functions.handlers.tenancy import Auth, UnauthenticatedError, request_caller, request_tenant

ROLE = "arn:aws:iam::123456789012:role/platform/StepwiseOps"
USER = "arn:aws:iam::123456789012:user/ci-bot"
IAM = Auth(mode="iam", iam_tenants={ROLE: "ops", USER: "ci"})
JWT = Auth(mode="jwt", tenant_claim="custom:tenant")


def event(**authorizer: Any) -> dict[str, Any]:
    return {"headers": {"x-tenant": "spoofed"}, "requestContext": {"authorizer": authorizer}}


def jwt(**claims: Any) -> dict[str, Any]:
    return event(jwt={"claims": claims, "scopes": None})


def iam(user_arn: str) -> dict[str, Any]:
    return event(iam={"accountId": "123456789012", "userArn": user_arn, "userId": "AROAEXAMPLE:session"})


def test_a_jwt_names_its_tenant_by_the_configured_claim_and_its_caller_by_sub() -> None:
    request = jwt(sub="user-1", **{"custom:tenant": "acme", "tenant": "globex"})
    assert request_tenant(request, "default", auth=JWT) == "acme"
    assert request_caller(request, JWT) == "user-1"
    assert request_tenant(request, "default", auth=Auth(mode="jwt")) == "globex"  # the default claim: tenant


@pytest.mark.parametrize(
    ("claims", "problem"),
    [
        ({}, "no 'custom:tenant' claim"),
        ({"custom:tenant": ""}, "not a valid tenant"),
        ({"custom:tenant": "a" * 65}, "not a valid tenant"),
        ({"custom:tenant": "acme corp"}, "not a valid tenant"),
        ({"custom:tenant": "T#x"}, "not a valid tenant"),
        ({"custom:tenant": ["acme"]}, "not a valid tenant"),
    ],
)
def test_a_jwt_without_a_valid_tenant_claim_is_refused(claims: dict[str, Any], problem: str) -> None:
    with pytest.raises(UnauthenticatedError, match=problem):
        request_tenant(jwt(**claims), "default", auth=JWT)


def test_a_jwt_deployment_ignores_any_other_authorizers_context() -> None:
    with pytest.raises(UnauthenticatedError):
        request_tenant(event(**{"lambda": {"tenant": "acme"}}), "default", auth=JWT)
    assert request_caller(jwt(sub="x" * 300), JWT) is None  # an unbounded sub is not recorded


@pytest.mark.parametrize(
    ("user_arn", "tenant"),
    [
        ("arn:aws:sts::123456789012:assumed-role/StepwiseOps/alice", "ops"),  # a role's session, path dropped
        (USER, "ci"),
    ],
)
def test_an_allow_listed_iam_principal_gets_its_tenant(user_arn: str, tenant: str) -> None:
    assert request_tenant(iam(user_arn), "default", auth=IAM) == tenant
    assert request_caller(iam(user_arn), IAM) == user_arn


@pytest.mark.parametrize(
    "user_arn",
    [
        "arn:aws:sts::210987654321:assumed-role/StepwiseOps/alice",  # the same role name in another account
        "arn:aws:sts::123456789012:assumed-role/Admin/alice",
        "arn:aws-us-gov:sts::123456789012:assumed-role/StepwiseOps/alice",  # the same role in another partition
        "arn:aws:iam::123456789012:user/someone-else",
        "arn:aws:iam::123456789012:role/platform/StepwiseOps",  # not what IAM reports for a caller
        "",
    ],
)
def test_an_iam_principal_not_in_the_allow_list_has_no_tenant(user_arn: str) -> None:
    with pytest.raises(UnauthenticatedError, match="not mapped to a tenant"):
        request_tenant(iam(user_arn), "default", auth=IAM)


def test_an_iam_request_without_a_principal_is_refused() -> None:
    with pytest.raises(UnauthenticatedError):
        request_tenant(event(), "default", auth=IAM)


@pytest.mark.parametrize(
    ("tenants", "problem"),
    [
        ({"arn:aws:iam::123456789012:group/admins": "ops"}, "not an IAM role or user ARN"),
        ({"StepwiseOps": "ops"}, "not an IAM role or user ARN"),
        ({ROLE: "acme corp"}, "letters, digits"),
    ],
)
def test_a_bad_allow_list_is_refused_naming_the_entry(tenants: dict[str, str], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        Auth(mode="iam", iam_tenants=tenants)


def test_api_keys_take_the_authorizers_tenant_and_only_the_local_open_mode_has_a_default() -> None:
    keyed = event(**{"lambda": {"tenant": "acme", "key_id": "0123456789ab"}})
    assert request_tenant(keyed, "default") == "acme" and request_caller(keyed) == "0123456789ab"
    with pytest.raises(UnauthenticatedError, match="no API key"):
        request_tenant(event(), "default")
    assert request_tenant(event(), "local", auth="none") == "local"
    with pytest.raises(UnauthenticatedError):
        request_tenant(
            event(**{"lambda": {"tenant": ""}}), "local", auth="none"
        )  # present but invalid: never a default
