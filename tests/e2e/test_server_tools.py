"""Tools that run inside the deployment, through the real synthesised workflow on the local stack: Lambda tools
(the Tools map invokes the deployer's function directly), the deployer's Python tools (the ``tools/`` package:
``http_fetch``), a 1 MB result, and what happens when a tool's invocation dies after doing its work."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import anthropic
import boto3
import pytest
from pydantic import BaseModel

from functions.adapters import wiring
from functions.agent.results import VIEW_CHARS
from functions.tools import Tool
from functions.tools.registry import deployer_tools
from stepwise.local.stack import TABLE_NAME, LocalStack
from stepwise.local.template import synthesize
from tests.e2e import lambda_tools
from tests.e2e.conftest import execution_history, http, wait
from tests.e2e.test_managed_agents import answer, idle, tool_use
from tests.fakes.anthropic_server import FakeAnthropic

pytestmark = pytest.mark.e2e

LAMBDA_TOOLS = [
    {"function": "refund-order", "idempotent": False, "timeout_seconds": 20},
    {"function": "exchange-rate", "idempotent": True, "timeout_seconds": 10},
]
ONE_MB = 1_000_000
STATE_LIMIT = 262_144  # Step Functions' input/output limit
ITEM_LIMIT = 400_000  # DynamoDB's


class Nothing(BaseModel):
    pass


class Died(BaseException):
    """The tool function's runtime died mid-call (Step Functions sees Sandbox.Timedout)."""

    lambda_error_type = "Sandbox.Timedout"


runs: dict[str, int] = {"book_meeting": 0, "lookup_rate": 0}
dying: set[str] = set()


def _dies_after_work(name: str) -> Any:
    def fn(_: Nothing) -> str:
        runs[name] += 1  # the work is done...
        if name in dying:
            dying.discard(name)
            raise Died(f"{name} did its work, then the function died")  # ...and the invocation dies before it returns
        return f"{name} done ({runs[name]})"

    return fn


TEST_TOOLS = [
    Tool(name="book_meeting", description="Books a meeting (side effects)", input_model=Nothing,
         fn=_dies_after_work("book_meeting"), idempotent=False),
    Tool(name="lookup_rate", description="Looks a rate up (read-only)", input_model=Nothing,
         fn=_dies_after_work("lookup_rate"), idempotent=True),
    Tool(name="big_report", description="Returns a 1 MB report", input_model=Nothing,
         fn=lambda _: "".join(f"line {n:07d} " + "x" * 86 + "\n" for n in range(ONE_MB // 100))),
]  # fmt: skip


@pytest.fixture(scope="module")
def page_server() -> Iterator[str]:
    class Page(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"<h1>Opening hours</h1><p>Mon-Fri 9-17</p>"
            self.send_response(200)
            self.send_header("content-type", "text/html; charset=utf-8")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Page)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    """The stack synthesised with two Lambda tools allowed (CDK context lambda_tools), run by local handlers; the
    deployer's tools are the tools/ package's (http_fetch) and this module's."""
    template = synthesize(context={"lambda_tools": LAMBDA_TOOLS, "http_fetch_allowed_domains": ["127.0.0.1"]})
    handlers = {"refund-order": "tests.e2e.lambda_tools.refund_order",
                "exchange-rate": "tests.e2e.lambda_tools.exchange_rate"}  # fmt: skip
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(wiring, "deployer_tools", lambda: [*deployer_tools(), *TEST_TOOLS])
        with LocalStack(port=0, template=template, lambda_tools=handlers) as local:
            yield local


@pytest.fixture
def client(stack: LocalStack) -> anthropic.Anthropic:
    return anthropic.Anthropic(api_key="sk-local", base_url=stack.url, max_retries=0)


def lambda_tool(name: str, function: str, **properties: str) -> dict[str, Any]:
    return {
        "type": "stepwise_lambda_20261201",
        "name": name,
        "description": f"{name} (a Lambda function)",
        "input_schema": {"type": "object", "properties": {p: {"type": t} for p, t in properties.items()}},
        "function": function,
    }


def say(client: anthropic.Anthropic, session_id: str, text: str) -> None:
    client.beta.sessions.events.send(
        session_id, events=[{"type": "user.message", "content": [{"type": "text", "text": text}]}]
    )


def results_sent(fake: FakeAnthropic, request: int) -> dict[str, dict[str, Any]]:
    """The tool results the model was sent in a request, by tool_use_id."""
    last = fake.requests[request]["messages"][-1]["content"]
    return {block["tool_use_id"]: block for block in last if block.get("type") == "tool_result"}


def test_lambda_tools_are_invoked_by_the_workflow_and_their_results_reach_the_model(
    stack: LocalStack, fake_api: FakeAnthropic, client: anthropic.Anthropic
) -> None:
    fake_api.script = [
        tool_use(
            ("toolu_rate", "exchange_rate", {"from": "EUR", "to": "USD"}),
            ("toolu_refund", "refund_order", {"order_id": "A-1001"}),
        ),
        answer("Refunded A-1001 (RF-1); 1 EUR is 1.08 USD."),
    ]
    for calls in lambda_tools.invocations.values():
        calls.clear()
    agent = client.beta.agents.create(
        name="support",
        model="claude-haiku-4-5",
        tools=[
            lambda_tool("exchange_rate", "exchange-rate", **{"from": "string", "to": "string"}),
            lambda_tool("refund_order", "refund-order", order_id="string"),
        ],
    )
    session = client.beta.sessions.create(agent=agent.id, environment_id="env_local")
    tool_invocations = stack.lambdas.invocations[next(n for n in stack.lambdas.invocations if "tool" in n.lower())]

    say(client, session.id, "Refund order A-1001 and tell me the EUR rate")
    stop, events = idle(client, session.id, None)

    # Then each function was invoked once, with the model's input as its event
    assert stop.stop_reason.type == "end_turn"
    assert lambda_tools.invocations == {"refund_order": [{"order_id": "A-1001"}],
                                        "exchange_rate": [{"from": "EUR", "to": "USD"}]}  # fmt: skip
    # and the model saw what they returned (a JSON value as JSON text)
    sent = results_sent(fake_api, 1)
    assert json.loads(sent["toolu_refund"]["content"]) == {"refund_id": "RF-1", "order_id": "A-1001"}
    assert sent["toolu_rate"]["content"] == "1 EUR = 1.08 USD" and not sent["toolu_rate"]["is_error"]
    results = [e for e in events if e.type == "agent.tool_result"]
    assert len(results) == 2 and not any(r.is_error for r in results)
    # And the map invoked the functions itself: Stepwise's tool function only recorded the two results
    tool_function = next(n for n in stack.lambdas.invocations if "tool" in n.lower())
    assert stack.lambdas.invocations[tool_function] - tool_invocations == 2
    history = execution_history(stack, f"{session.id}_t1")
    invoked = [json.loads(e["taskScheduledEventDetails"]["parameters"])["FunctionName"]
               for e in history if e["type"] == "TaskScheduled"]  # fmt: skip
    assert sorted(name for name in invoked if not name.startswith("arn:")) == ["exchange-rate", "refund-order"]
    # each call is recorded with its duration (from when the map began invoking it), size and outcome
    items = boto3.client("dynamodb").query(
        TableName=TABLE_NAME, KeyConditionExpression="pk = :pk AND begins_with(sk, :tool)",
        ExpressionAttributeValues={":pk": {"S": f"T#local#R#{session.id}"}, ":tool": {"S": "TOOL#"}},
    )["Items"]  # fmt: skip
    recorded = {item["tool_use_id"]["S"]: item for item in items}
    assert set(recorded) == {"toolu_rate", "toolu_refund"}
    for item in recorded.values():
        assert int(item["duration_ms"]["N"]) > 0 and int(item["size"]["N"]) > 0 and item["is_error"]["BOOL"] is False


def test_a_lambda_tool_with_side_effects_that_dies_is_not_invoked_again_an_idempotent_one_is(
    stack: LocalStack, fake_api: FakeAnthropic, client: anthropic.Anthropic
) -> None:
    fake_api.script = [
        tool_use(
            ("toolu_rate", "exchange_rate", {"from": "EUR", "to": "GBP"}),
            ("toolu_refund", "refund_order", {"order_id": "B-2"}),
        ),
        answer("The rate is 1.08; the refund's outcome is unknown, please check."),
    ]
    for calls in lambda_tools.invocations.values():
        calls.clear()
    lambda_tools.die_after_work.update({"refund_order", "exchange_rate"})
    agent = client.beta.agents.create(
        name="support",
        model="claude-haiku-4-5",
        tools=[lambda_tool("exchange_rate", "exchange-rate"), lambda_tool("refund_order", "refund-order")],
    )
    session = client.beta.sessions.create(agent=agent.id, environment_id="env_local")

    say(client, session.id, "Refund B-2 and get the GBP rate")
    stop, _ = idle(client, session.id, None)

    # Then the session carries on (not failed): the refund ran once and the model is told its outcome is unknown
    assert stop.stop_reason.type == "end_turn"
    assert len(lambda_tools.invocations["refund_order"]) == 1
    sent = results_sent(fake_api, 1)
    assert sent["toolu_refund"]["is_error"] is True
    assert (
        "outcome is unknown" in sent["toolu_refund"]["content"] and "not run again" in sent["toolu_refund"]["content"]
    )
    # while the idempotent one was invoked again, and its second answer is the result
    assert len(lambda_tools.invocations["exchange_rate"]) == 2
    assert sent["toolu_rate"] == {**sent["toolu_rate"], "content": "1 EUR = 1.08 GBP", "is_error": False}


def test_the_deployers_http_fetch_tool_fetches_from_an_allowed_host(
    stack: LocalStack, fake_api: FakeAnthropic, client: anthropic.Anthropic, page_server: str
) -> None:
    fake_api.script = [
        tool_use(
            ("toolu_fetch", "http_fetch", {"url": f"{page_server}/hours"}),
            ("toolu_away", "http_fetch", {"url": "http://169.254.169.254/latest/meta-data/"}),
        ),
        answer("Mon-Fri 9-17."),
    ]
    # an agent with only the deployer's tool enabled from the built-in toolset
    agent = client.beta.agents.create(
        name="web",
        model="claude-haiku-4-5",
        tools=[
            {
                "type": "stepwise_toolset_20261201",
                "default_config": {"enabled": False},
                "configs": [{"name": "http_fetch", "enabled": True}],
            }
        ],
    )
    session = client.beta.sessions.create(agent=agent.id, environment_id="env_local")

    say(client, session.id, "When are you open?")
    stop, _ = idle(client, session.id, None)

    assert stop.stop_reason.type == "end_turn"
    assert [tool["name"] for tool in fake_api.requests[0]["tools"]] == ["http_fetch"]
    sent = results_sent(fake_api, 1)
    assert (
        sent["toolu_fetch"]["content"]
        == "HTTP 200 text/html; charset=utf-8\n\n<h1>Opening hours</h1><p>Mon-Fri 9-17</p>"
    )
    # the metadata address is refused (not an allowed host, and never reachable)
    assert sent["toolu_away"]["is_error"] is True
    assert "host '169.254.169.254' is not allowed by this deployment" in sent["toolu_away"]["content"]


def test_a_python_tool_with_side_effects_that_dies_is_not_run_again_an_idempotent_one_is(
    stack: LocalStack, fake_api: FakeAnthropic
) -> None:
    fake_api.script = [
        tool_use(("toolu_book", "book_meeting", {}), ("toolu_rate", "lookup_rate", {})),
        answer("The rate is in; the booking's outcome is unknown."),
    ]
    runs.update(book_meeting=0, lookup_rate=0)
    dying.update({"book_meeting", "lookup_rate"})

    status, run = http(
        stack, "POST", "/runs", {"input": "Book it, get the rate", "tools": ["book_meeting", "lookup_rate"]}
    )
    assert status == 202
    done = wait(stack, run["run_id"], timeout=90)

    # Then the run succeeds: the booking ran once (its retry found it had started), the lookup ran again
    assert done["status"] == "SUCCEEDED"
    assert runs == {"book_meeting": 1, "lookup_rate": 2}
    sent = results_sent(fake_api, 1)
    assert sent["toolu_book"]["is_error"] is True and "the outcome is unknown" in sent["toolu_book"]["content"]
    assert sent["toolu_rate"]["content"] == "lookup_rate done (2)" and sent["toolu_rate"]["is_error"] is False
    # and the workflow retried each tool invocation that died (the tool function was invoked twice per call)
    history = execution_history(stack, run["run_id"])
    failed = [e for e in history if e["type"] == "LambdaFunctionFailed" or e["type"] == "TaskFailed"]
    assert len(failed) == 2 and all("Sandbox.Timedout" in json.dumps(e, default=str) for e in failed)


def test_a_one_megabyte_result_completes_its_step_and_nothing_between_states_grows_with_it(
    stack: LocalStack, fake_api: FakeAnthropic
) -> None:
    fake_api.script = [tool_use(("toolu_big", "big_report", {})), answer("The report has 10,000 lines.")]

    status, run = http(stack, "POST", "/runs", {"input": "Summarise the report", "tools": ["big_report"]})
    assert status == 202
    done = wait(stack, run["run_id"], timeout=90)

    assert done["status"] == "SUCCEEDED"
    # the model saw a bounded view, with the whole size and where to read it
    seen = results_sent(fake_api, 1)["toolu_big"]["content"]
    assert len(seen) < VIEW_CHARS + 200
    assert f"showing {VIEW_CHARS:,} of {ONE_MB:,} characters" in seen
    assert f"GET /runs/{run['run_id']}/tool_results/toolu_big" in seen
    # the whole result is read through the API
    pages, offset = [], 0
    while offset is not None:  # in pages of at most 200,000 characters (inside Lambda's 6 MB response)
        status, page = http(stack, "GET", f"/runs/{run['run_id']}/tool_results/toolu_big?offset={offset}")
        assert status == 200 and page["size"] == ONE_MB and page["offset"] == offset
        pages.append(page["content"])
        offset = page["next_offset"]
    whole = "".join(pages)
    assert len(pages) == 5 and len(whole) == ONE_MB
    assert whole.startswith("line 0000000 ") and whole.endswith("line 0009999 " + "x" * 86 + "\n")
    status, refused = http(stack, "GET", f"/runs/{run['run_id']}/tool_results/toolu_big?limit=0")
    assert status == 400 and "limit must be a whole number" in refused["error"]["message"]
    # and no state payload nor table item carries it
    history = execution_history(stack, run["run_id"])
    payloads = [detail[field] for e in history for key, detail in e.items() if key.endswith("EventDetails")
                for field in ("input", "output") if field in detail]  # fmt: skip
    assert len(payloads) > 10  # every state's input and output is in the history
    largest_state = max(len(payload.encode()) for payload in payloads)
    items = boto3.client("dynamodb").scan(TableName=TABLE_NAME)["Items"]
    largest_item = max(len(json.dumps(item).encode()) for item in items)
    print(f"1 MB result: largest state input/output {largest_state:,} bytes, largest table item {largest_item:,} bytes")
    assert largest_state < 20_000 < STATE_LIMIT
    assert largest_item < 40_000 < ITEM_LIMIT
    status, missing = http(stack, "GET", f"/runs/{run['run_id']}/tool_results/toolu_nope")
    assert status == 404 and missing["error"]["code"] == "TOOL_RESULT_NOT_FOUND"
