"""Per-tenant limits on the real adapters (moto): an operator's daily budget refuses that tenant's runs only,
the request rate answers 429 with Retry-After in each API's error shape, and /costs reports the tenant's budget."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import boto3
import pytest

from functions.adapters import wiring
from functions.adapters.dynamodb_store import DynamoDBRunStore
from functions.adapters.dynamodb_tenants import DynamoDBTenantStore
from functions.adapters.settings import Settings, load
from functions.agent.ledger import BudgetLimits
from functions.agent.models import RunKey, RunRequest, RunStatus, StepRef
from functions.agent.tenants import LimitsCache, TenantLimits
from functions.handlers import api
from stepwise.local.lambdas import LocalContext
from tests.fakes import core
from tests.fakes.model import ScriptedModel, text_response
from tests.functional.conftest import TABLE, Aws, http_event


def test_the_table_keeps_limits_and_counts_a_window_up_to_its_limit(aws: Aws) -> None:
    store = DynamoDBTenantStore(TABLE, boto3.client("dynamodb"))
    limits = TenantLimits(tenant="acme", daily_usd=Decimal("2.5"), requests_per_minute=2, updated_at="t")

    store.put_limits(limits)
    store.put_limits(TenantLimits(tenant="globex", requests_per_minute=9))

    assert store.get_limits("acme") == limits and store.get_limits("initech") is None
    assert sorted(t.tenant for t in store.list_limits()) == ["acme", "globex"]
    counted = [store.count_request("acme", "2026-12-02T09:00", 2, 1_800_000_000) for _ in range(3)]
    assert counted == [True, True, False]
    assert store.count_request("acme", "2026-12-02T09:01", 2, 1_800_000_000)
    store.delete_limits("acme")
    assert store.get_limits("acme") is None


def test_a_tenants_own_daily_budget_refuses_its_runs_and_no_one_elses(aws: Aws) -> None:
    # Given a deployment default of $20 a day, and acme given $0.001 by an operator
    client = boto3.client("dynamodb")
    store, tenants = DynamoDBRunStore(TABLE, client), DynamoDBTenantStore(TABLE, client)
    tenants.put_limits(TenantLimits(tenant="acme", daily_usd=Decimal("0.001")))
    submitter = core.submitter(store)
    runs = {t: submitter.submit(t, RunRequest(input="hello")).run.run_id for t in ("acme", "globex")}
    # When each takes its first step
    outcomes = {
        t: core.runner(
            store,
            ScriptedModel(text_response("hi")),
            limits=BudgetLimits(tenant_daily_usd=Decimal(20)),
            tenant_limits=LimitsCache(tenants),
        ).run(StepRef(RunKey(t, run_id), 0))
        for t, run_id in runs.items()
    }
    # Then acme's is refused naming its budget, and globex's runs on the default
    assert outcomes["acme"].status is RunStatus.BUDGET_EXCEEDED and outcomes["acme"].error is not None
    assert outcomes["acme"].error.code == "TENANT_DAILY_BUDGET" and "$0.001" in outcomes["acme"].error.message
    assert outcomes["globex"].status is RunStatus.SUCCEEDED


def _as(tenant: str, method: str, path: str, body: Any = None) -> dict[str, Any]:
    event = http_event(method, path, body)
    event["requestContext"]["authorizer"] = {"lambda": {"tenant": tenant}}
    return event


def test_over_its_request_rate_a_tenant_gets_429_with_retry_after_in_each_apis_shape(
    aws: Aws, context: LocalContext
) -> None:
    wiring.tenants(load(Settings)).set("acme", requests_per_minute=2)

    answers = [api.handler(_as("acme", "GET", "/costs"), context)["statusCode"] for _ in range(2)]
    refused = api.handler(_as("acme", "GET", "/costs"), context)
    refused_v1 = api.handler(_as("acme", "GET", "/v1/agents"), context)

    assert answers == [200, 200]
    assert refused["statusCode"] == 429 and 1 <= int(refused["headers"]["retry-after"]) <= 60
    assert json.loads(refused["body"])["error"]["code"] == "RATE_LIMITED"
    assert refused_v1["statusCode"] == 429 and "retry-after" in refused_v1["headers"]
    assert json.loads(refused_v1["body"]) == {
        "type": "error",
        "error": {"type": "rate_limit_error", "message": json.loads(refused["body"])["error"]["message"]},
        "request_id": "req-1",  # API Gateway's, also in the request-id header
    }
    assert refused_v1["headers"]["request-id"] == json.loads(refused["body"])["request_id"] == "req-1"
    # another tenant, and the public routes, are not counted against acme
    assert api.handler(_as("globex", "GET", "/costs"), context)["statusCode"] == 200
    assert api.handler(http_event("GET", "/health"), context)["statusCode"] == 200


def test_a_refused_request_writes_nothing(aws: Aws, context: LocalContext) -> None:
    wiring.tenants(load(Settings)).set("acme", requests_per_minute=1)
    assert api.handler(_as("acme", "GET", "/costs"), context)["statusCode"] == 200

    refused = api.handler(_as("acme", "POST", "/runs", {"input": "hello"}), context)

    assert refused["statusCode"] == 429
    assert aws.queued_messages() == []
    items = aws.dynamodb.scan(TableName=TABLE)["Items"]
    assert {item["pk"]["S"].split("#")[0] for item in items} == {"TENANTS", "RATE"}


@pytest.mark.parametrize(("own", "expected"), [(None, None), ("7.5", 7.5)])
def test_costs_reports_the_tenants_own_daily_budget(
    aws: Aws, context: LocalContext, own: str | None, expected: float | None
) -> None:
    if own is not None:
        wiring.tenants(load(Settings)).set("acme", daily_usd=own)
    report = json.loads(api.handler(_as("acme", "GET", "/costs"), context)["body"])
    assert report["budget"]["tenant_daily_usd"] == expected
