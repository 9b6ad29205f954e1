"""Step, tool, finalize and mark_failed functions against moto, with the labelled offline stub model."""

from __future__ import annotations

import io
import json
import logging
from typing import Any

import pytest

from functions.adapters import wiring
from functions.adapters.settings import StepSettings, load
from functions.agent.models import RunStatus
from functions.handlers import api, finalize, mark_failed, step, tool
from stepwise.local.lambdas import LocalContext
from tests.functional.conftest import Aws, http_event


def submit(context: LocalContext, body: dict[str, object]) -> str:
    return str(json.loads(api.handler(http_event("POST", "/runs", body), context)["body"])["run_id"])


def get_run(context: LocalContext, run_id: str) -> dict[str, object]:
    return dict(json.loads(api.handler(http_event("GET", f"/runs/{run_id}"), context)["body"]))


def test_the_step_tool_step_finalize_sequence_completes_a_run(aws: Aws, context: LocalContext) -> None:
    # Given a run whose task needs the calculator (the offline stub asks for it)
    run_id = submit(context, {"input": "What is 6 * 7?"})
    ref = {"tenant": "default", "run_id": run_id}
    # When the handlers run in the order the state machine calls them
    first = step.handler({**ref, "step": 0}, context)
    assert first["next"] == "tools" and first["step"] == 1
    (call,) = first["tool_calls"]
    result = tool.handler({**ref, "step": first["completed_step"], "tool_use_id": call["id"]}, context)
    second = step.handler({**ref, "step": first["step"]}, context)
    done = finalize.handler({**ref, "status": second["status"], "error": second["error"]}, context)
    # Then the run succeeded with the tool's answer and both steps are accounted
    assert result == {"tool_use_id": call["id"], "name": "calculator", "is_error": False}
    assert second["next"] == "finish" and done == {"run_id": run_id, "status": "SUCCEEDED"}
    run = get_run(context, run_id)
    assert run["status"] == "SUCCEEDED" and run["steps"] == 2
    assert "42" in str(run["output"]) and "[offline stub model]" in str(run["output"])
    assert run["usage"]["input_tokens"] > 0 and run["cost_usd"] > 0  # type: ignore[index,operator]
    steps = json.loads(api.handler(http_event("GET", f"/runs/{run_id}/steps"), context)["body"])["steps"]
    assert [s["provider"] for s in steps] == ["offline-stub", "offline-stub"]
    assert steps[0]["tool_calls"][0]["result"]["content"] == "42"


def test_a_retried_step_invocation_neither_calls_the_model_nor_charges_twice(
    aws: Aws, context: LocalContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_id = submit(context, {"input": "hello there"})
    ref = {"tenant": "default", "run_id": run_id, "step": 0}
    first = step.handler(ref, context)
    cost = get_run(context, run_id)["cost_usd"]
    calls: list[object] = []
    monkeypatch.setattr(wiring.model(load(StepSettings)), "create", lambda request: calls.append(request))
    again = step.handler(ref, context)
    assert again == first
    assert calls == []
    assert get_run(context, run_id)["cost_usd"] == cost


def test_mark_failed_records_the_reason_from_the_catch(aws: Aws, context: LocalContext) -> None:
    run_id = submit(context, {"input": "hello"})
    cause = json.dumps({"errorType": "RetryableModelError", "errorMessage": "Anthropic API 529 overloaded_error: busy"})
    out = mark_failed.handler(
        {"tenant": "default", "run_id": run_id, "failure": {"Error": "RetryableModelError", "Cause": cause}}, context
    )
    run = get_run(context, run_id)
    assert out["status"] == "FAILED"
    assert run["error"] == {
        "code": "RetryableModelError",
        "message": "Anthropic API 529 overloaded_error: busy (before its first step completed)",
    }


def test_invalid_workflow_payloads_are_rejected_by_the_event_parser(aws: Aws, context: LocalContext) -> None:
    from aws_lambda_powertools.utilities.parser import ValidationError

    with pytest.raises(ValidationError):
        step.handler({"tenant": "default", "run_id": "run_x", "step": -1}, context)
    with pytest.raises(ValidationError):
        finalize.handler({"tenant": "default", "run_id": "run_x", "status": "DONE"}, context)


def test_a_missing_anthropic_key_outside_the_local_stack_is_an_error_not_a_silent_stub(
    aws: Aws, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STEPWISE_MODEL_PROVIDER", "anthropic")
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    wiring.reset()
    with pytest.raises(RuntimeError, match="no Anthropic API key"):
        wiring.model(load(StepSettings))


def test_a_failed_execution_names_the_last_step_it_completed(aws: Aws, context: LocalContext) -> None:
    run_id = submit(context, {"input": "What is 6 * 7?"})
    step.handler({"tenant": "default", "run_id": run_id, "step": 0}, context)
    failure = {"Error": "States.TaskFailed", "Cause": json.dumps({"errorMessage": "tool function crashed"})}
    mark_failed.handler({"tenant": "default", "run_id": run_id, "failure": failure}, context)
    run = get_run(context, run_id)
    assert run["status"] == "FAILED"
    assert run["error"] == {"code": "States.TaskFailed", "message": "tool function crashed (after step 0)"}


def test_finalize_counts_the_end_it_finalized_when_a_session_has_moved_on(
    aws: Aws, context: LocalContext, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a turn the step ended IDLE, whose session took its next message before Finalize ran (RUNNING again)
    run_id = submit(context, {"input": "hello there"})
    ref = {"tenant": "default", "run_id": run_id}
    ended = step.handler({**ref, "step": 0}, context)
    lifecycle = wiring.lifecycle(load(finalize.SETTINGS))
    moved_on = lifecycle.end

    def end_moved_on(*args: Any, **kwargs: Any) -> Any:
        return moved_on(*args, **kwargs).model_copy(update={"status": RunStatus.RUNNING})

    monkeypatch.setattr(lifecycle, "end", end_moved_on)
    capsys.readouterr()
    # When Finalize runs
    finalize.handler({**ref, "status": ended["status"], "error": ended["error"]}, context)
    # Then it counts the end it finalized, never the session's next turn
    finished = [json.loads(line) for line in capsys.readouterr().out.splitlines()
                if line.startswith("{") and '"RunsFinished"' in line]  # fmt: skip
    assert [blob["status"] for blob in finished] == [ended["status"]] == ["SUCCEEDED"]


def test_one_step_invocation_takes_the_runs_next_steps_and_reports_each_under_its_own_number(
    aws: Aws, context: LocalContext, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a run whose first step asks for the calculator (a fast built-in) and whose second answers
    run_id = submit(context, {"input": "What is 6 * 7?"})
    capsys.readouterr()
    logs = io.StringIO()
    std = logging.getLogger(step.logger.service)  # (powertools' logger writes to the stdout it was made with)
    handler = logging.StreamHandler(logs)
    handler.setFormatter(next(h.formatter for h in std.handlers if h.formatter is not None))
    std.addHandler(handler)
    level, _ = std.level, std.setLevel(logging.INFO)
    # When the workflow's Step task invokes the step function once (this definition runs fast calls in the step)
    try:
        state = step.handler({"tenant": "default", "run_id": run_id, "step": 0, "in_step": True}, context)
    finally:
        std.removeHandler(handler)
        std.setLevel(level)
    # Then that invocation took both steps and returns the last one's state (Route: Finalize)
    assert (state["completed_step"], state["next"], state["status"]) == (1, "finish", "SUCCEEDED")
    assert get_run(context, run_id)["steps"] == 2
    # And each step has its metrics and its log line, with its own step number
    lines = [json.loads(line) for line in logs.getvalue().splitlines() if line.startswith("{")]
    assert [line["step"] for line in lines if line.get("message") == "step done"] == [0, 1]
    assert [line["step"] for line in lines if line.get("message") == "tool done"] == [0]
    assert [line["steps"] for line in lines if line.get("message") == "steps done"] == [2]
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith('{"_aws"')]
    # (flushed step by step: an invocation that dies later has published what its settled steps cost)
    blobs = [line for line in printed if "ModelCalls" in line]
    assert [(b["ModelCalls"], "StepLatency" in b, b["service"]) for b in blobs] == [([1.0], True, "stepwise-step")] * 2
