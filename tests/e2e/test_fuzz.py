"""Property-based fuzzing of every route of the OpenAPI document the API serves (schemathesis, bounded in time),
against the local stack with a tenant's key and its request rate counted: no 5xx, and nothing written by a request
that was refused (but the count of the tenant's requests in the minute, which every request adds to)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from schemathesis.checks import not_a_server_error

from functions.handlers.openapi import ROUTES, document
from stepwise.local.stack import LocalStack

pytestmark = pytest.mark.e2e
schema = schemathesis.openapi.from_dict(document())
EXAMPLES = 6  # per operation: ~150 requests in all, well under a minute here
WRITES = frozenset({"PutItem", "UpdateItem", "DeleteItem", "TransactWriteItems", "BatchWriteItem"})
tally: dict[str, int] = {
    "requests": 0,
    "server_errors": 0,
    "refused": 0,
    "refused_writes": 0,
    "rate_counts": 0,
    "routed": 0,
}
PUBLIC = frozenset(op.path for op in ROUTES if op.public)
RATE_LIMIT = "100000"  # counted on every request, never reached here


@pytest.fixture(scope="module")
def stack(template: dict[str, Any]) -> Iterator[LocalStack]:
    # the API alone: accepted runs stay queued (no workflow runs beside the fuzzer: see the settings below)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("STEPWISE_TENANT_REQUESTS_PER_MINUTE", RATE_LIMIT)
        with LocalStack(port=0, template=template, require_keys=True, intake=False) as local:
            yield local


@pytest.fixture(scope="module")
def key(stack: LocalStack) -> str:
    local = {"content-type": "application/json", "host": "127.0.0.1"}
    status, _, body = stack.handle_http("POST", "/_local/keys", local, '{"tenant": "fuzz"}')
    assert status == 201
    return str(json.loads(body)["key"])


@pytest.fixture(scope="module")
def api_writes(stack: LocalStack) -> Iterator[list[str]]:
    """Every table write the api function makes (the background functions' writes are not counted)."""
    from functions.adapters import wiring

    writes: list[str] = []
    client = wiring.aws_client("dynamodb")

    def record(event_name: str, params: dict[str, Any], **_: Any) -> None:
        operation = event_name.rsplit(".", 1)[-1]
        if operation in WRITES and getattr(stack.lambdas.current, "name", None) == stack.topology.api_function:
            with lock:
                if str(params.get("Key", {}).get("pk", {}).get("S", "")).startswith("RATE#"):
                    tally["rate_counts"] += 1  # the tenant's request count (functions/adapters/dynamodb_tenants.py)
                else:
                    writes.append(operation)

    lock = threading.Lock()
    client.meta.events.register("before-parameter-build.dynamodb.*", record)
    yield writes
    client.meta.events.unregister("before-parameter-build.dynamodb.*", record)


@schema.parametrize()
# no "explain" phase, and no workflow running beside the fuzzer: hypothesis parses source with ast, and so does a
# running workflow's calculator on another thread, which trips a CPython 3.11 bug ("AST constructor recursion
# depth mismatch")
# no example database either: every run tries the same requests (a saved failure would change the figures)
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True,
          database=None, phases=[Phase.explicit, Phase.generate, Phase.target, Phase.shrink])  # fmt: skip
def test_no_request_gets_a_server_error_or_writes_when_refused(
    case: Any, stack: LocalStack, key: str, api_writes: list[str]
) -> None:
    before = len(api_writes)
    response = case.call(base_url=stack.url, headers={"authorization": f"Bearer {key}"}, timeout=30)
    tally["requests"] += 1
    # a request of a tenant that reached a route of the api function (not: methods no route has, API Gateway's 404
    # "Not Found"; path parameters that match no route of the function, "no route"; a key of schemathesis' own, 403)
    unrouted = response.content in (b'{"message": "Not Found"}', b'{"message": "Forbidden"}')
    tally["routed"] += case.path not in PUBLIC and not unrouted and b'"no route ' not in response.content
    tally["server_errors"] += response.status_code >= 500
    if 400 <= response.status_code < 500:
        tally["refused"] += 1
        tally["refused_writes"] += len(api_writes) - before
        assert len(api_writes) == before, (case.method, case.path, response.status_code, api_writes[before:])
    case.validate_response(response, checks=[not_a_server_error])


def test_the_fuzz_figures() -> None:
    """Printed for the record (pytest -s): how many requests were tried, and what they found."""
    print(f"fuzz: {tally['requests']} requests, {tally['server_errors']} 5xx, {tally['refused']} refused (4xx), "
          f"{tally['refused_writes']} writes by refused requests, {tally['rate_counts']} requests counted")  # fmt: skip
    assert tally["requests"] >= len(list(schema.get_all_operations())) and tally["server_errors"] == 0
    assert tally["rate_counts"] == tally["routed"]  # the rate limiter ran on every request that reached a route
