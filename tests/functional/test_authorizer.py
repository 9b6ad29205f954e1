"""The API's Lambda authorizer and the key store on (moto's) DynamoDB; the api's tenancy when keys are required."""

from __future__ import annotations

import json

import pytest

from functions.adapters import wiring
from functions.adapters.settings import Settings, load
from functions.handlers import api, authorizer
from stepwise.local.lambdas import LocalContext
from tests.functional.conftest import Aws, http_event


def authorize(context: LocalContext, **headers: str) -> dict[str, object]:
    return authorizer.handler({"version": "2.0", "type": "REQUEST", "headers": headers, "routeKey": "GET /v1/agents"},
                              context)  # fmt: skip


def test_a_tenants_key_authorizes_with_its_tenant_and_a_revoked_one_does_not(aws: Aws, context: LocalContext) -> None:
    authorizer.forget()
    keys = wiring.api_keys(load(Settings))
    key, record = keys.create("acme", "ci")

    accepted = {"isAuthorized": True, "context": {"tenant": "acme", "key_id": record.key_id}}
    assert authorize(context, authorization=f"Bearer {key}") == accepted
    assert authorize(context, **{"x-api-key": key}) == accepted
    # only digests are in the table
    items = aws.dynamodb.scan(TableName=load(Settings).table_name)["Items"]
    assert items and key not in json.dumps(items)

    keys.revoke(record.key_id)
    authorizer.forget()  # (deployed: within the authorizer's cache time, 60 s)
    assert authorize(context, authorization=f"Bearer {key}") == {"isAuthorized": False}
    assert authorize(context) == {"isAuthorized": False}


def test_answers_are_cached_for_a_minute_so_a_revoked_key_stops_within_one(
    aws: Aws, context: LocalContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    authorizer.forget()
    now = [1000.0]
    monkeypatch.setattr(authorizer.time, "monotonic", lambda: now[0])
    keys = wiring.api_keys(load(Settings))
    key, record = keys.create("acme")
    assert authorize(context, authorization=f"Bearer {key}")["isAuthorized"] is True
    keys.revoke(record.key_id)

    now[0] += authorizer.CACHE_SECONDS - 1
    assert authorize(context, authorization=f"Bearer {key}")["isAuthorized"] is True  # the cached answer
    now[0] += 2
    assert authorize(context, authorization=f"Bearer {key}") == {"isAuthorized": False}


def test_operators_make_list_and_revoke_keys_on_a_deployments_table(
    aws: Aws, capsys: pytest.CaptureFixture[str]
) -> None:
    from stepwise import cli

    table = load(Settings).table_name
    assert cli.main(["keys", "create", "--table", table, "--tenant", "acme", "--name", "ci"]) == 0
    key = capsys.readouterr().out.strip()
    assert wiring.api_keys(load(Settings)).authenticate(key) is not None
    assert cli.main(["keys", "--table", table, "list", "--json"]) == 0  # --table before the action works too
    (listed,) = json.loads(capsys.readouterr().out)
    assert listed["tenant"] == "acme" and key not in json.dumps(listed)
    assert cli.main(["keys", "revoke", listed["key_id"], "--table", table]) == 0
    assert wiring.api_keys(load(Settings)).authenticate(key) is None
    assert cli.main(["keys", "create", "--table", table, "--tenant", "bad tenant"]) == 2  # refused, no traceback


def test_a_request_without_the_authorizers_tenant_is_refused_when_keys_are_required(
    aws: Aws, context: LocalContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STEPWISE_AUTH", "api_key")
    wiring.reset()
    refused = api.handler(http_event("GET", "/runs/run_00000000000000000000000000"), context)
    assert refused["statusCode"] == 401 and json.loads(refused["body"])["error"]["code"] == "UNAUTHENTICATED"
    v1 = api.handler(http_event("GET", "/v1/agents"), context)
    assert v1["statusCode"] == 401 and json.loads(v1["body"])["error"]["type"] == "authentication_error"
    for bad in ("", "a" * 65, "acme corp", 7):
        event = http_event("GET", "/v1/agents")
        event["requestContext"]["authorizer"] = {"lambda": {"tenant": bad}}
        assert api.handler(event, context)["statusCode"] == 401, bad  # never a fallback, never a 500
    event = http_event("GET", "/v1/agents")
    event["requestContext"]["authorizer"] = {"lambda": {"tenant": "acme"}}
    assert api.handler(event, context)["statusCode"] == 200
