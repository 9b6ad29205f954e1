"""Live events against moto: the api function's redirect with a ticket, the tickets on the table, and the stream
function's app (WSGI, called in-process) answering the redirect with server-sent events or a refusal."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit
from wsgiref.util import setup_testing_defaults

import pytest

from functions.adapters import wiring
from functions.adapters.settings import Settings, StreamSettings, load
from functions.agent.models import RunKey
from functions.agent.streams import BEFORE_ALL, StreamTicket, ticket_digest
from functions.handlers import api, step, stream, tool, workflow_ended
from stepwise.local.lambdas import LocalContext
from tests.functional.conftest import STREAM_URL, TENANT, Aws, http_event

MESSAGE = {"type": "user.message", "content": [{"type": "text", "text": "What is 6*7?"}]}


@pytest.fixture
def quick(aws: Aws, monkeypatch: pytest.MonkeyPatch) -> Aws:
    """Streams that poll every 20 ms and end after 0.3 s."""
    monkeypatch.setenv("STEPWISE_STREAM_POLL_SECONDS", "0.02")
    monkeypatch.setenv("STEPWISE_STREAM_MAX_SECONDS", "0.3")
    wiring.reset()
    return aws


def call(context: LocalContext, method: str, path: str, body: Any = None, *, headers: dict[str, str] | None = None,
         query: dict[str, str] | None = None, tenant: str | None = None) -> dict[str, Any]:  # fmt: skip
    event = http_event(method, path, body, headers)
    if query:
        event["queryStringParameters"] = query
        event["rawQueryString"] = "&".join(f"{k}={v}" for k, v in query.items())
    if tenant:  # as the deployment's authorizer vouches (STEPWISE_AUTH none still honours a context)
        event["requestContext"]["authorizer"] = {"lambda": {"tenant": tenant, "key_id": "0123456789ab"}}
    return dict(api.handler(event, context))


def session(context: LocalContext, *, initial: bool = True) -> str:
    agent = json.loads(call(context, "POST", "/v1/agents", {"name": "a", "model": "claude-haiku-4-5"})["body"])
    body: dict[str, Any] = {"agent": agent["id"], "environment_id": "e"}
    if initial:
        body["initial_events"] = [MESSAGE]
    return str(json.loads(call(context, "POST", "/v1/sessions", body)["body"])["id"])


def open_stream(path_and_query: str, headers: dict[str, str] | None = None, method: str = "GET") -> tuple[
        str, dict[str, str], bytes]:  # fmt: skip
    """The stream function's answer to a request, read to its end."""
    parts = urlsplit(path_and_query)
    environ: dict[str, Any] = {"REQUEST_METHOD": method, "PATH_INFO": parts.path, "QUERY_STRING": parts.query}
    environ.update({"HTTP_" + k.upper().replace("-", "_"): v for k, v in (headers or {}).items()})
    setup_testing_defaults(environ)
    answered: dict[str, Any] = {}

    def start_response(status: str, response_headers: list[tuple[str, str]]) -> None:
        answered["status"], answered["headers"] = status, dict(response_headers)

    body: Iterable[bytes] = stream.app(environ, start_response)
    data = b"".join(body)
    return answered["status"], answered["headers"], data


def frames(data: bytes) -> list[dict[str, str]]:
    """The SSE frames, as field -> value (comments dropped)."""
    found = []
    for block in data.decode().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if line and not line.startswith(":"))
        if fields:
            found.append(fields)
    return found


def location(response: dict[str, Any]) -> str:
    """The redirect's target, as a path and query on the stream function (its URL checked)."""
    target = response["headers"]["location"]
    assert target.startswith(STREAM_URL.rstrip("/") + "/")
    return target.removeprefix(STREAM_URL.rstrip("/"))


# ------------------------------------------------------------------------------------------- the api's redirect


def test_the_api_redirects_a_sessions_stream_to_the_stream_function_with_a_single_use_ticket(
    aws: Aws, context: LocalContext
) -> None:
    session_id = session(context)
    response = call(context, "GET", f"/v1/sessions/{session_id}/events/stream")
    assert response["statusCode"] == 307 and response["headers"]["cache-control"] == "no-store"
    target = location(response)
    assert target.startswith(f"/v1/sessions/{session_id}/events/stream?ticket=")
    ticket = target.split("ticket=", 1)[1]
    # the table keeps its digest only, for this tenant's session, for 30 s
    (item,) = aws.dynamodb.scan(TableName="stepwise-test", FilterExpression="begins_with(pk, :t)",
                                ExpressionAttributeValues={":t": {"S": "TICKET#"}})["Items"]  # fmt: skip
    assert item["pk"]["S"] == f"TICKET#{ticket_digest(ticket)}" and ticket not in json.dumps(item)
    assert item["tenant"]["S"] == TENANT and item["target"]["S"] == session_id


def test_a_runs_stream_redirects_too(aws: Aws, context: LocalContext) -> None:
    run = json.loads(call(context, "POST", "/runs", {"input": "6*7?"})["body"])
    response = call(context, "GET", f"/runs/{run['run_id']}/events/stream")
    assert response["statusCode"] == 307
    assert location(response).startswith(f"/runs/{run['run_id']}/events/stream?ticket=")


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        ("/v1/sessions/sesn_00000000000000000000000000/events/stream", 404, "not_found_error"),
        ("/v1/sessions/run_00000000000000000000000000/events/stream", 404, "not_found_error"),
        ("/runs/run_00000000000000000000000000/events/stream", 404, "RUN_NOT_FOUND"),
    ],
)
def test_an_unknown_session_or_run_is_404_and_no_ticket_is_issued(
    aws: Aws, context: LocalContext, path: str, status: int, code: str
) -> None:
    response = call(context, "GET", path)
    body = json.loads(response["body"])
    assert response["statusCode"] == status and code in (body["error"].get("type"), body["error"].get("code"))
    assert aws.dynamodb.scan(TableName="stepwise-test")["Count"] == 0


def test_another_tenants_session_and_run_are_404(aws: Aws, context: LocalContext) -> None:
    session_id = session(context)
    run = json.loads(call(context, "POST", "/runs", {"input": "6*7?"})["body"])
    for path in (f"/v1/sessions/{session_id}/events/stream", f"/runs/{run['run_id']}/events/stream"):
        assert call(context, "GET", path, tenant="other")["statusCode"] == 404
        assert call(context, "GET", path, tenant=TENANT)["statusCode"] == 307


@pytest.mark.parametrize(
    ("query", "headers", "mentions"),
    [
        ({"event_deltas[]": "agent.message"}, None, "event_deltas"),
        ({"event_deltas": "agent.message"}, None, "event_deltas"),
        ({"since": "x"}, None, "'since' is not supported"),
        (None, {"last-event-id": "42"}, "Last-Event-ID '42' is not an event id"),
    ],
)
def test_what_a_stream_does_not_take_is_refused_by_name(
    aws: Aws, context: LocalContext, query: dict[str, str] | None, headers: dict[str, str] | None, mentions: str
) -> None:
    session_id = session(context)
    response = call(context, "GET", f"/v1/sessions/{session_id}/events/stream", query=query, headers=headers)
    body = json.loads(response["body"])
    assert response["statusCode"] == 400 and body["error"]["type"] == "invalid_request_error"
    assert mentions in body["error"]["message"]


def test_a_deployment_without_a_stream_function_refuses_to_stream(
    aws: Aws, context: LocalContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    session_id = session(context)
    monkeypatch.delenv("STEPWISE_STREAM_URL")
    wiring.reset()
    response = call(context, "GET", f"/v1/sessions/{session_id}/events/stream")
    assert response["statusCode"] == 400 and "not offered by this deployment" in response["body"]


# ------------------------------------------------------------------------------------------- the stream function


def test_the_stream_function_sends_server_sent_events_the_sdk_reads(quick: Aws, context: LocalContext) -> None:
    # Given a session whose first turn is queued, and the API's redirect for its stream
    session_id = session(context)
    target = location(call(context, "GET", f"/v1/sessions/{session_id}/events/stream"))
    # When the client follows it, resuming from before every event
    status, headers, data = open_stream(target, {"Last-Event-ID": BEFORE_ALL})
    # Then it is an event stream of the session's events, each named by its type and id, until the stream's end
    assert status == "200 OK" and headers["content-type"].startswith("text/event-stream")
    assert headers["cache-control"] == "no-cache"
    sent = frames(data)
    listed = json.loads(call(context, "GET", f"/v1/sessions/{session_id}/events")["body"])["data"]
    assert [f["event"] for f in sent] == [e["type"] for e in listed] == ["user.message", "session.status_running"]
    assert [f["id"] for f in sent] == [e["id"] for e in listed]
    assert [json.loads(f["data"]) for f in sent] == listed


def test_a_ticket_opens_one_stream(quick: Aws, context: LocalContext) -> None:
    target = location(call(context, "GET", f"/v1/sessions/{session(context)}/events/stream"))
    assert open_stream(target)[0] == "200 OK"
    status, _, data = open_stream(target)
    body = json.loads(data)
    assert status == "401 Unauthorized" and body["error"]["type"] == "authentication_error"
    assert "unknown, used or older than 30 s" in body["error"]["message"]


def test_a_ticket_opens_only_its_own_session(quick: Aws, context: LocalContext) -> None:
    mine, other = session(context), session(context)
    ticket = location(call(context, "GET", f"/v1/sessions/{mine}/events/stream")).split("ticket=", 1)[1]
    status, _, data = open_stream(f"/v1/sessions/{other}/events/stream?ticket={ticket}")
    assert status == "401 Unauthorized" and "for another session" in json.loads(data)["error"]["message"]


@pytest.mark.parametrize(
    ("request_line", "status", "shape"),
    [
        ("GET /v1/sessions/sesn_1/events/stream", "401 Unauthorized", ("type", "authentication_error")),
        ("GET /runs/run_1/events/stream?ticket=" + "a" * 43, "401 Unauthorized", ("code", "UNAUTHENTICATED")),
        ("GET /v1/sessions/sesn_1/events/stream?ticket=x&page=2", "400 Bad Request", ("type", "invalid_request_error")),
        ("POST /v1/sessions/sesn_1/events/stream", "405 Method Not Allowed", ("type", "not_found_error")),
        ("GET /v1/sessions/sesn_1/events", "404 Not Found", ("type", "not_found_error")),
    ],
)
def test_the_stream_function_refuses_in_the_routes_shape(
    quick: Aws, request_line: str, status: str, shape: tuple[str, str]
) -> None:
    method, target = request_line.split(" ", 1)
    answered, headers, data = open_stream(target, method=method)
    body = json.loads(data)
    assert answered == status and headers["content-type"] == "application/json"
    assert body["error"][shape[0]] == shape[1] and body["request_id"]


def test_a_session_deleted_while_streamed_ends_its_stream_with_an_error_frame(
    quick: Aws, context: LocalContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    session_id = session(context, initial=False)  # idle: deletable
    target = location(call(context, "GET", f"/v1/sessions/{session_id}/events/stream"))
    monkeypatch.setenv("STEPWISE_STREAM_MAX_SECONDS", "5")
    wiring.reset()
    answered: dict[str, Any] = {}
    environ: dict[str, Any] = {"REQUEST_METHOD": "GET", "PATH_INFO": target.split("?")[0],
                               "QUERY_STRING": target.split("?")[1]}  # fmt: skip
    setup_testing_defaults(environ)
    body = iter(stream.app(environ, lambda status, headers: answered.update(status=status)))
    assert next(body).startswith(b":") and answered["status"] == "200 OK"  # open: the headers left at once
    assert call(context, "DELETE", f"/v1/sessions/{session_id}")["statusCode"] == 200
    (error,) = frames(b"".join(body))
    assert error["event"] == "error" and json.loads(error["data"])["error"]["type"] == "not_found_error"


def test_the_health_check_answers_for_the_web_adapter(quick: Aws) -> None:
    assert open_stream("/health")[0] == "200 OK"


def test_the_ticket_store_gives_a_ticket_once(aws: Aws) -> None:
    store = wiring.tickets(load(Settings)).store
    ticket = StreamTicket(tenant="acme", target="sesn_1", expires_at=2_000_000_000)
    store.put_ticket("d" * 64, ticket)
    assert store.take_ticket("d" * 64) == ticket
    assert store.take_ticket("d" * 64) is None
    assert RunKey("acme", "sesn_1") == ticket.key


def test_an_outage_when_opening_is_a_500_with_the_request_id_and_no_detail(
    quick: Aws, context: LocalContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = location(call(context, "GET", f"/v1/sessions/{session(context)}/events/stream"))

    def broken(_: str) -> None:
        raise RuntimeError("the table is on fire at arn:aws:dynamodb:us-east-1:123456789012:table/t")

    monkeypatch.setattr(wiring.tickets(load(StreamSettings)), "redeem", broken)  # the stream function's
    status, headers, data = open_stream(target)
    body = json.loads(data)
    assert status == "500 Internal Server Error" and body["error"]["type"] == "api_error"
    assert body["request_id"] == headers["request-id"] and "fire" not in data.decode()


# ------------------------------------------------------------------------------------------- a turn's end


def execution_ended(run_id: str, status: str, name: str) -> dict[str, Any]:
    """EventBridge's "Step Functions Execution Status Change" for the run's (the turn's) execution."""
    detail = {"name": name, "status": status, "error": "States.Timeout", "cause": None,
              "input": json.dumps({"tenant": TENANT, "run_id": run_id, "step": 0})}  # fmt: skip
    return {"version": "0", "id": "e", "detail-type": "Step Functions Execution Status Change", "source": "aws.states",
            "account": "123456789012", "time": "2026-11-21T14:00:00Z", "region": "us-east-1", "resources": [],
            "detail": detail}  # fmt: skip


@pytest.mark.parametrize("kind", ["session", "run"])
def test_a_tool_result_reported_after_its_turn_timed_out_is_dropped_not_shown_behind_the_idle(
    quick: Aws, context: LocalContext, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    # Given a session's turn (a /runs run) whose step asked for the calculator
    if kind == "session":
        toolset = {"name": "a", "model": "claude-haiku-4-5", "tools": [{"type": "stepwise_toolset_20261201"}]}
        agent = json.loads(call(context, "POST", "/v1/agents", toolset)["body"])
        body = {"agent": agent["id"], "environment_id": "e", "initial_events": [MESSAGE]}
        target_id = str(json.loads(call(context, "POST", "/v1/sessions", body)["body"])["id"])
        execution, path = f"{target_id}_t1", f"/v1/sessions/{target_id}/events"
    else:
        target_id = str(json.loads(call(context, "POST", "/runs", {"input": "What is 6*7?"})["body"])["run_id"])
        execution, path = target_id, f"/runs/{target_id}/events"
    ref = {"tenant": TENANT, "run_id": target_id, "execution": execution}
    asked = step.handler({**ref, "step": 0}, context)
    assert asked["next"] == "tools"
    (tool_call,) = asked["tool_calls"]

    def streamed(after: str) -> list[dict[str, Any]]:
        """What a client's stream resuming after ``after`` sends (until it ends: 0.3 s, or a run's idle)."""
        target = location(call(context, "GET", f"{path}/stream"))
        return [json.loads(frame["data"]) for frame in frames(open_stream(target, {"Last-Event-ID": after})[2])]

    # When the execution times out while the tool function runs the call, and a client follows it to the idle
    seen: list[list[dict[str, Any]]] = []
    registry = wiring.registry()
    execute = registry.execute

    def times_out_meanwhile(*args: Any) -> Any:
        workflow_ended.handler(execution_ended(target_id, "TIMED_OUT", execution), context)
        seen.append(streamed(BEFORE_ALL))
        return execute(*args)

    monkeypatch.setattr(registry, "execute", times_out_meanwhile)
    late = tool.handler({**ref, "step": 0, "tool_use_id": tool_call["id"]}, context)
    # Then the client saw the call's result before the idle: the turn's end gave it its timed-out result
    (at_idle,) = seen
    assert at_idle[-1]["type"] == "session.status_idle"
    (result,) = [event for event in at_idle if event["type"] == "agent.tool_result"]
    what = "turn" if kind == "session" else "run"
    assert result["is_error"] and result["content"][0]["text"].startswith(
        f"the {what} timed out before this call returned: it did not run, or (if it was already running)"
    )
    # And the calculator's answer, reported after the end, was dropped: the invocation got what the model is told
    assert late == {"tool_use_id": tool_call["id"], "name": "calculator", "is_error": True}
    # So a client past the idle misses nothing, and one that reads everything again sees what it saw at the idle
    assert streamed(at_idle[-1]["id"]) == []
    assert streamed(BEFORE_ALL) == at_idle
    if kind == "session":
        assert json.loads(call(context, "GET", path)["body"])["data"] == at_idle
    else:
        steps = json.loads(call(context, "GET", f"/runs/{target_id}/steps")["body"])["steps"]
        assert steps[0]["tool_calls"][0]["result"]["content"] == result["content"][0]["text"]
