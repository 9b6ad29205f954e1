"""End to end over HTTP: the API, SQS intake, the synthesised state machine and every function, locally."""

from __future__ import annotations

import json

import pytest

from stepwise.cli import main
from stepwise.local.stack import LocalStack
from tests.e2e.conftest import execution_history, http, wait

pytestmark = pytest.mark.e2e


def test_a_multi_step_run_with_tool_calls_reaches_succeeded(stack: LocalStack) -> None:
    # Given the local stack and a task that needs two tools (the offline stub asks for both)
    status, accepted = http(
        stack, "POST", "/runs", {"input": "What is (17 * 23) + sqrt(16), and the time in Europe/Paris?"}
    )
    assert status == 202 and accepted["status"] == "QUEUED"
    # When the workflow drives it to the end
    run = wait(stack, accepted["run_id"])
    # Then it succeeded in two steps with both tool results in the answer, and tokens and cost recorded
    assert run["status"] == "SUCCEEDED", run
    assert run["steps"] == 2
    assert "395" in run["output"] and "[offline stub model]" in run["output"]
    assert run["usage"]["input_tokens"] > 0 and run["usage"]["output_tokens"] > 0 and run["cost_usd"] > 0
    status, steps = http(stack, "GET", f"/runs/{run['run_id']}/steps")
    assert status == 200
    first, last = steps["steps"]
    assert [c["name"] for c in first["tool_calls"]] == ["calculator", "current_time"]
    assert first["tool_calls"][0]["result"] == {
        "content": "395",
        "is_error": False,
        "duration_ms": first["tool_calls"][0]["result"]["duration_ms"],
    }
    assert last["decision"] == "finish"
    # And the execution ran the synthesised graph: the built-ins ran in their step, and the same Step invocation took
    # the next step (functions/agent/step_loop.py): no Tools map, and one Step and Route for both steps
    events = execution_history(stack, run["run_id"])
    entered = [e["stateEnteredEventDetails"]["name"] for e in events if "stateEnteredEventDetails" in e]
    assert entered == ["Begin", "Step", "Route", "Finalize", "Done"]


def test_a_step_with_a_tool_that_is_not_fast_runs_it_in_the_tools_map(stack: LocalStack) -> None:
    # Given a task for http_fetch (the network: not a fast tool; no domain is allowed, so it refuses the URL)
    status, accepted = http(
        stack, "POST", "/runs", {"input": "Use http_fetch on https://example.com/ please.", "tools": ["http_fetch"]}
    )
    assert status == 202
    # When it runs
    run = wait(stack, accepted["run_id"])
    # Then the model got the tool's refusal as its result, from the tool function the Map invoked
    assert run["status"] == "SUCCEEDED" and run["steps"] == 2
    _, steps = http(stack, "GET", f"/runs/{run['run_id']}/steps")
    (call,) = steps["steps"][0]["tool_calls"]
    assert call["name"] == "http_fetch" and call["result"]["is_error"] is True
    assert "no domains are allowed" in call["result"]["content"]
    events = execution_history(stack, run["run_id"])
    entered = [e["stateEnteredEventDetails"]["name"] for e in events if "stateEnteredEventDetails" in e]
    assert entered == ["Begin", "Step", "Route", "Tools", "RunTool", "AfterTools", "Step", "Route", "Finalize", "Done"]


@pytest.mark.parametrize(
    ("raw", "code"),
    [(b"{bad json", "INVALID_JSON"), (json.dumps({"model": "claude-haiku-4-5"}).encode(), "VALIDATION_ERROR")],
)
def test_bad_requests_are_400_with_a_json_error_and_nothing_is_enqueued(
    stack: LocalStack, raw: bytes, code: str
) -> None:
    intake_before = stack.lambdas.invocations[stack.topology.intake_function]
    items_before = stack.dynamodb.scan(TableName="stepwise-local", Select="COUNT")["Count"]
    status, body = http(stack, "POST", "/runs", raw=raw)
    assert status == 400
    assert body["error"]["code"] == code and body["error"]["message"]
    attributes = stack.sqs.get_queue_attributes(QueueUrl=stack.queue_url, AttributeNames=["All"])["Attributes"]
    assert (
        attributes["ApproximateNumberOfMessages"] == "0" and attributes["ApproximateNumberOfMessagesNotVisible"] == "0"
    )
    assert stack.lambdas.invocations[stack.topology.intake_function] == intake_before
    assert stack.dynamodb.scan(TableName="stepwise-local", Select="COUNT")["Count"] == items_before


def test_routes_outside_the_contract_are_404_like_api_gateway(stack: LocalStack) -> None:
    status, body = http(stack, "DELETE", "/runs")
    assert status == 404 and body == {"message": "Not Found"}


def test_a_run_limit_ends_the_run_budget_exceeded_with_the_reason(stack: LocalStack) -> None:
    _, accepted = http(stack, "POST", "/runs", {"input": "What is 2 * 21?", "budget": {"max_steps": 1}})
    run = wait(stack, accepted["run_id"])
    assert run["status"] == "BUDGET_EXCEEDED"
    assert run["error"]["code"] == "MAX_STEPS" and "max_steps=1" in run["error"]["message"]
    assert run["steps"] == 1


def test_the_cli_runs_a_task_and_prints_answer_steps_tokens_and_cost(
    stack: LocalStack, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["--endpoint", stack.url, "run", "What is 12 * 12?"])
    out = capsys.readouterr().out
    assert code == 0
    assert "status SUCCEEDED" in out and "144" in out
    assert "OFFLINE STUB MODEL" in out and "[offline stub model]" in out
    assert "steps 2" in out and "cost $" in out and " in / " in out


def test_the_cli_reports_api_errors_with_a_nonzero_exit(stack: LocalStack, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["--endpoint", stack.url, "status", "run_0000000000000000000000dead"])
    assert code == 2
    assert "404 RUN_NOT_FOUND" in capsys.readouterr().out


def test_the_cli_spend_report_covers_the_runs_of_the_local_stack(
    stack: LocalStack, capsys: pytest.CaptureFixture[str]
) -> None:
    _, accepted = http(stack, "POST", "/runs", {"input": "What is 3 * 3?"})
    run = wait(stack, accepted["run_id"])
    capsys.readouterr()
    code = main(["--endpoint", stack.url, "costs"])
    out = capsys.readouterr().out
    assert code == 0
    assert "spend of tenant local" in out and "per model" in out and "top runs" in out
    assert run["run_id"] in out and "claude-haiku-4-5" in out
