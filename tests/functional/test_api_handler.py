"""The api function against moto: the HTTP contract, validation and idempotency."""

from __future__ import annotations

import json
from typing import Any

import pytest

from functions.handlers import api
from stepwise.local.lambdas import LocalContext
from tests.functional.conftest import Aws, http_event

CONTRACT_FIELDS = {"run_id", "status", "steps", "usage", "cost_usd", "output", "error", "created_at", "updated_at"}


def call(
    context: LocalContext, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, Any]]:
    response = api.handler(http_event(method, path, body, headers), context)
    return response["statusCode"], json.loads(response["body"])


def test_post_run_answers_202_queued_and_enqueues_one_message(aws: Aws, context: LocalContext) -> None:
    status, body = call(context, "POST", "/runs", {"input": "What is 2+2?", "budget": {"max_steps": 5}})
    assert status == 202
    assert body["status"] == "QUEUED" and body["run_id"].startswith("run_")
    assert body["budget"]["max_steps"] == 5
    (message,) = aws.queued_messages()
    assert json.loads(message["Body"]) == {"tenant": "default", "run_id": body["run_id"]}


@pytest.mark.parametrize(
    ("body", "code", "mentions"),
    [
        ("{not json", "INVALID_JSON", "not valid JSON"),
        ("", "INVALID_REQUEST", "body is required"),
        ("[1, 2]", "INVALID_REQUEST", "JSON object"),
        ({"inputs": "typo"}, "VALIDATION_ERROR", "input: Field required"),
        ({"input": ""}, "VALIDATION_ERROR", "input"),
        ({"input": "x", "budget": {"max_steps": 0}}, "VALIDATION_ERROR", "budget.max_steps"),
        ({"input": "x", "model": "gpt-4o"}, "VALIDATION_ERROR", "unknown model 'gpt-4o'"),
        ({"input": "x", "tools": ["shell"]}, "VALIDATION_ERROR", "unknown tools: shell"),
        ({"input": "x", "tools": ["calculator", "calculator"]}, "VALIDATION_ERROR", "must not repeat"),
        ('{"input": "x", "budget": {"max_usd": Infinity}}', "VALIDATION_ERROR", "budget.max_usd"),
        ({"input": "x", "budget": {"max_steps": True}}, "VALIDATION_ERROR", "budget.max_steps"),
        ({"input": "x", "max_tokens_per_call": 64000}, "VALIDATION_ERROR", "max_tokens_per_call"),
        ({"input": "字" * 40_000}, "VALIDATION_ERROR", "at most 100000 bytes"),
        ("[" * 50_000 + "]" * 50_000, "INVALID_JSON", "nested too deeply"),
    ],
)
def test_bad_input_is_a_400_naming_the_problem_and_nothing_is_enqueued(
    aws: Aws, context: LocalContext, body: Any, code: str, mentions: str
) -> None:
    status, answer = call(context, "POST", "/runs", body)
    assert status == 400
    assert answer["error"]["code"] == code
    assert mentions in answer["error"]["message"]
    assert aws.queued_messages() == []
    assert aws.dynamodb.scan(TableName="stepwise-test")["Count"] == 0


def test_get_run_returns_the_contract_fields(aws: Aws, context: LocalContext) -> None:
    _, created = call(context, "POST", "/runs", {"input": "hello"})
    status, body = call(context, "GET", f"/runs/{created['run_id']}")
    assert status == 200
    assert CONTRACT_FIELDS <= body.keys()
    assert body["usage"] == {
        "input_tokens": 0,
        "output_tokens": 0,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }


@pytest.mark.parametrize(
    "path", ["/runs/run_0000000000000000000000dead", "/runs/not-an-id", "/runs/run_0000000000000000000000dead/steps"]
)
def test_unknown_run_is_404(aws: Aws, context: LocalContext, path: str) -> None:
    status, body = call(context, "GET", path)
    assert status == 404 and body["error"]["code"] == "RUN_NOT_FOUND"


def test_idempotency_key_replays_the_same_run_and_rejects_a_changed_body(aws: Aws, context: LocalContext) -> None:
    headers = {"idempotency-key": "order-42"}
    _, first = call(context, "POST", "/runs", {"input": "hello"}, headers)
    response = api.handler(http_event("POST", "/runs", {"input": "hello"}, headers), context)
    second = json.loads(response["body"])
    assert second["run_id"] == first["run_id"]
    assert response["headers"]["Idempotent-Replayed"] == "true"
    assert aws.dynamodb.scan(TableName="stepwise-test")["Count"] == 1
    status, conflict = call(context, "POST", "/runs", {"input": "changed"}, headers)
    assert status == 422 and conflict["error"]["code"] == "IDEMPOTENCY_CONFLICT"


def test_cancel_marks_cancelled_and_a_second_cancel_is_409(aws: Aws, context: LocalContext) -> None:
    _, created = call(context, "POST", "/runs", {"input": "hello"})
    status, body = call(context, "POST", f"/runs/{created['run_id']}/cancel")
    assert status == 200 and body["status"] == "CANCELLED"
    status, body = call(context, "POST", f"/runs/{created['run_id']}/cancel")
    assert status == 409 and body["error"]["code"] == "RUN_ALREADY_ENDED"


def test_health_and_unknown_routes(aws: Aws, context: LocalContext) -> None:
    assert call(context, "GET", "/health") == (200, {"status": "ok"})
    status, body = call(context, "DELETE", "/runs")
    assert status == 404 and body["error"]["code"] == "NOT_FOUND"


def test_tenant_comes_from_a_lambda_authorizer_and_scopes_every_read(aws: Aws, context: LocalContext) -> None:
    event = http_event("POST", "/runs", {"input": "hello"})
    event["requestContext"]["authorizer"] = {"lambda": {"tenant": "acme"}}
    run_id = json.loads(api.handler(event, context)["body"])["run_id"]
    status, _ = call(context, "GET", f"/runs/{run_id}")  # default tenant
    assert status == 404
    lookup = http_event("GET", f"/runs/{run_id}")
    lookup["requestContext"]["authorizer"] = {"lambda": {"tenant": "acme"}}
    assert api.handler(lookup, context)["statusCode"] == 200


def test_a_queue_outage_is_a_503_and_with_a_key_the_retry_runs_the_same_run(
    aws: Aws, context: LocalContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    from functions.adapters import wiring
    from functions.adapters.settings import ApiSettings, load
    from functions.agent.models import RunKey

    def refuse(key: RunKey) -> None:
        raise ConnectionError("SQS unavailable")

    headers = {"idempotency-key": "retry-me"}
    queue = wiring.queue(load(ApiSettings))
    working = queue.enqueue
    monkeypatch.setattr(queue, "enqueue", refuse)
    status, body = call(context, "POST", "/runs", {"input": "hello"}, headers)
    assert status == 503 and body["error"]["code"] == "ENQUEUE_FAILED"
    assert "retry with the same Idempotency-Key" in body["error"]["message"]
    monkeypatch.setattr(queue, "enqueue", working)  # the queue is back
    status, body = call(context, "POST", "/runs", {"input": "hello"}, headers)
    assert status == 202 and body["status"] == "QUEUED"
    assert len(aws.queued_messages()) == 1


def test_a_run_may_name_a_routing_policy_instead_of_a_model(aws: Aws, context: LocalContext) -> None:
    status, body = call(context, "POST", "/runs", {"input": "hello", "model": "balanced"})
    assert status == 202 and body["model"] == "balanced"


def test_costs_reports_what_the_steps_recorded(aws: Aws, context: LocalContext) -> None:
    # Given a run driven through its step and tool functions today
    from functions.adapters import wiring
    from functions.handlers import step, tool

    _, created = call(context, "POST", "/runs", {"input": "What is 6 * 7?"})
    ref = {"tenant": "default", "run_id": created["run_id"]}
    first = step.handler({**ref, "step": 0}, context)
    tool.handler({**ref, "step": 0, "tool_use_id": first["tool_calls"][0]["id"]}, context)
    step.handler({**ref, "step": 1}, context)
    _, run = call(context, "GET", f"/runs/{created['run_id']}")
    today = wiring.CLOCK.now().date().isoformat()
    # When the spend report is asked for
    status, report = call(context, "GET", "/costs")
    # Then it holds exactly that run's cost, per day, per model and as the top run
    assert status == 200 and report["to"] == today
    assert report["total"]["cost_usd"] == pytest.approx(run["cost_usd"]) and report["total"]["steps"] == 2
    assert report["days"][-1]["cost_usd"] == pytest.approx(run["cost_usd"])
    assert [m["model"] for m in report["models"]] == ["claude-haiku-4-5"]
    assert report["top_runs"] == [{"run_id": created["run_id"], "cost_usd": pytest.approx(run["cost_usd"]), "steps": 2}]


@pytest.mark.parametrize(
    "query", ["?from=2026-13-01", "?from=2026-11-22&to=2026-11-21", "?from=2025-01-01&to=2026-11-21"]
)
def test_costs_with_a_bad_period_is_a_400(aws: Aws, context: LocalContext, query: str) -> None:
    event = http_event("GET", "/costs")
    event["rawQueryString"] = query[1:]
    event["queryStringParameters"] = dict(p.split("=") for p in query[1:].split("&"))
    response = api.handler(event, context)
    assert response["statusCode"] == 400 and json.loads(response["body"])["error"]["code"] == "VALIDATION_ERROR"


LONG = "".join(chr(ord("a") + i % 26) for i in range(5_000))  # no 81 characters of it are found by chance


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/runs", {"input": "hi", LONG: 1}),  # an unknown field's name
        ("GET", f"/runs/{LONG}", None),  # an id that cannot be a run's
        ("GET", f"/runs/run_00000000000000000000000000/tool_results/{LONG}", None),
        ("GET", f"/costs?{LONG}=1", None),
        ("GET", f"/v1/agents/{LONG}", None),
        ("GET", f"/v1/sessions/{LONG}", None),
        ("GET", f"/v1/agents?{LONG}=1", None),
        ("POST", "/v1/agents", {"name": "n", "model": {"id": "claude-haiku-4-5", "speed": LONG}}),
        ("POST", "/v1/agents", {"name": "n", "model": "claude-haiku-4-5", **{f"{i}{LONG}": i for i in range(50)}}),
        ("GET", f"/costs?from={LONG}", None),
        ("POST", "/v1/agents", {"name": "n", "model": "claude-haiku-4-5", "tools": [{"type": LONG}]}),
        (
            "POST",
            "/v1/agents",
            {
                "name": "n",
                "model": "claude-haiku-4-5",
                "tools": [
                    {"type": "custom", "name": "x", "input_schema": {"type": "object"}},
                    {"type": "lambda_tool_x", "function": LONG},
                ],
            },
        ),
        ("POST", "/runs", {"input": "hi", "model": LONG}),
        ("POST", "/v1/sessions/sesn_00000000000000000000000000/events", {"events": [{"type": LONG}]}),
    ],
)
def test_an_error_repeats_at_most_a_bounded_part_of_what_the_client_sent(
    aws: Aws, context: LocalContext, method: str, path: str, body: Any
) -> None:
    event = http_event(method, path.split("?")[0], body)
    if "?" in path:
        event["rawQueryString"] = path.split("?")[1]
        event["queryStringParameters"] = dict([path.split("?")[1].split("=")])
    response = api.handler(event, context)
    payload = json.loads(response["body"])
    message = payload["error"]["message"]

    assert 400 <= response["statusCode"] < 500, payload
    assert len(message) <= 2_000, len(message)
    assert not any(LONG[i : i + 81] in message for i in range(26)), message  # at most 80 characters of it


@pytest.mark.parametrize(("path", "shape"), [("/runs/run_00000000000000000000000000", "runs"), ("/v1/agents", "v1")])
def test_an_unexpected_failure_is_a_500_with_the_request_id_and_no_detail(
    aws: Aws, context: LocalContext, monkeypatch: pytest.MonkeyPatch, path: str, shape: str
) -> None:
    from functions.adapters import wiring

    class Broken:  # every AWS call fails in a way no handler expects
        def __getattr__(self, name: str) -> Any:
            raise RuntimeError("arn:aws:dynamodb:us-east-1:123456789012:table/secret-table is on fire")

    def broken_client(service: str) -> Any:
        return Broken()

    broken_client.cache_clear = lambda: None  # type: ignore[attr-defined]  # (wiring.reset clears it)
    wiring.reset()
    monkeypatch.setattr(wiring, "aws_client", broken_client)
    response = api.handler(http_event("GET", path), context)
    body = json.loads(response["body"])

    assert response["statusCode"] == 500 and response["headers"]["request-id"] == "req-1"
    assert body["request_id"] == "req-1" and "123456789012" not in response["body"] and "fire" not in response["body"]
    assert (body["error"]["type"] == "api_error") if shape == "v1" else (body["error"]["code"] == "INTERNAL")


@pytest.mark.parametrize(
    ("method", "path", "query", "status"),
    [
        ("GET", "/runs/run_00000000000000000000000000", {"verbose": "1"}, 400),
        ("POST", "/runs/run_00000000000000000000000000/cancel", {"force": "true"}, 400),
        ("GET", "/v1/sessions/sesn_00000000000000000000000000", {"expand": "events"}, 400),
        ("GET", "/health", {"deep": "1"}, 400),
        ("GET", "/v1/agents", {"limit": "5"}, 200),  # what a route takes still works
        ("GET", "/costs", {"from": "2026-11-20"}, 200),
        ("GET", "/runs/run_00000000000000000000000000/tool_results/toolu_1", {"offset": "0"}, 404),
    ],
)
def test_a_query_parameter_a_route_does_not_take_is_refused_never_ignored(
    aws: Aws, context: LocalContext, method: str, path: str, query: dict[str, str], status: int
) -> None:
    event = http_event(method, path)
    event["queryStringParameters"] = query
    event["rawQueryString"] = "&".join(f"{k}={v}" for k, v in query.items())
    response = api.handler(event, context)
    assert response["statusCode"] == status, response["body"]
    if status == 400:
        assert "is not supported here" in response["body"] and next(iter(query)) in response["body"]


@pytest.mark.parametrize("kind", ["run", "session"])
def test_a_cancel_that_keeps_losing_to_the_runs_own_writes_is_a_503_to_send_again(
    aws: Aws, context: LocalContext, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    from functions.adapters.dynamodb_store import DynamoDBRunStore
    from functions.agent import ledger
    from functions.agent.models import RunStatus

    # Given a /runs run (a session's queued turn) whose item changes under every end written over it
    if kind == "run":
        _, created = call(context, "POST", "/runs", {"input": "hello"})
        path, body = f"/runs/{created['run_id']}/cancel", None
    else:
        _, agent = call(context, "POST", "/v1/agents", {"name": "a", "model": "claude-haiku-4-5"})
        message = {"type": "user.message", "content": [{"type": "text", "text": "What is 6*7?"}]}
        _, session = call(context, "POST", "/v1/sessions", {"agent": agent["id"], "initial_events": [message]})
        path, body = f"/v1/sessions/{session['id']}/events", {"events": [{"type": "user.interrupt"}]}
    real, tries = DynamoDBRunStore.apply, []

    def changed_meanwhile(self: DynamoDBRunStore, plan: ledger.Plan) -> ledger.Rejected | None:
        if plan.run.status is RunStatus.CANCELLED:
            tries.append(plan)
            return plan.run  # refused: a step settled (or reserved) since the run was read
        return real(self, plan)

    monkeypatch.setattr(DynamoDBRunStore, "apply", changed_meanwhile)
    # When it is cancelled (interrupted)
    response = api.handler(http_event("POST", path, body), context)
    # Then, after each of its tries lost, the client is told to send it again shortly: not a 500 to report
    answer = json.loads(response["body"])
    assert len(tries) == ledger.END_TRIES
    assert response["statusCode"] == 503 and response["headers"]["retry-after"] == "1"
    message = "changed while this request was applied (its steps go on): send it again"
    if kind == "run":
        assert answer["error"]["code"] == "RUN_BUSY" and message in answer["error"]["message"]
    else:
        assert answer["type"] == "error" and answer["error"]["type"] == "api_error"
        assert message in answer["error"]["message"]
    # And sent again, once the run stops changing, it is cancelled
    monkeypatch.setattr(DynamoDBRunStore, "apply", real)
    status = api.handler(http_event("POST", path, body), context)["statusCode"]
    assert status == 200
