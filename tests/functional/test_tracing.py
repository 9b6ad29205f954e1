"""Traces as X-Ray would get them on Lambda: the functions' handlers on moto with their tracers on and botocore
patched (tests/fakes/xray.py), read back as the documents the X-Ray daemon would be sent."""

from __future__ import annotations

import contextlib
import importlib
import json
from typing import Any

import pytest

from functions.adapters import wiring
from functions.handlers import api, finalize, intake, step, tool, webhooks
from infra.functions import FUNCTIONS
from stepwise.local.lambdas import LocalContext
from tests.fakes.model import ScriptedModel, text_response, tool_response
from tests.fakes.xray import XRay, recording
from tests.functional.conftest import TENANT, Aws, http_event
from tests.functional.test_intake_handler import sqs_event

QUESTION = "A private question about plums: what is 98765432 * 3?"  # neither it nor the answer may reach a trace
ANSWER = "The plum count is 296296296."


def the(xray: XRay, name: str) -> dict[str, Any]:
    """The one subsegment of the last trace called ``name``."""
    (entity,) = xray.last.named(name)
    return entity


def test_a_step_and_its_tool_call_are_traced_with_their_run_and_subsegments_but_nothing_said(
    aws: Aws, context: LocalContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a run whose model (scripted) asks for the calculator, then answers
    model = ScriptedModel(
        tool_response(("toolu_1", "calculator", {"expression": "98765432 * 3"})), text_response(ANSWER)
    )
    monkeypatch.setattr(wiring, "model", lambda settings: model)
    tracers = (api.tracer, step.tracer, tool.tracer, finalize.tracer)
    with recording(monkeypatch, *tracers) as xray:
        accepted = xray.invoke(api.handler, http_event("POST", "/runs", {"input": QUESTION}), context)
        run_id = json.loads(accepted["body"])["run_id"]
        submitted = the(xray, "## handler")["annotations"]
        ref = {"tenant": TENANT, "run_id": run_id, "execution": run_id}

        # When the workflow's functions run it, traced
        first = xray.invoke(step.handler, {**ref, "step": 0}, context)
        step_trace = xray.last
        handler, model_call = the(xray, "## handler"), the(xray, "model_call")
        done = xray.invoke(tool.handler, {**ref, "step": 0, "tool_use_id": "toolu_1"}, context)
        tool_handler, tool_call = the(xray, "## handler"), the(xray, "tool_call")
        second = xray.invoke(step.handler, {**ref, "step": first["step"]}, context)
        finished = xray.invoke(finalize.handler, {**ref, "status": second["status"], "error": None}, context)
        xray.invoke(api.handler, http_event("GET", f"/runs/{run_id}"), context)
        read = the(xray, "## handler")["annotations"]
        xray.invoke(api.handler, http_event("GET", "/runs/run_not-an-id"), context)
        refused = the(xray, "## handler")["annotations"]

    # Then the run completed as untraced (patching the AWS SDK does not disturb moto)
    assert first["next"] == "tools" and done["is_error"] is False and finished["status"] == "SUCCEEDED"
    # And each handler's subsegment names its run, its step and its function
    assert submitted["route"] == "POST /runs" and submitted["tenant"] == TENANT and submitted["run_id"] == run_id
    assert (read["route"], read["run_id"], read["tenant"]) == ("GET /runs/{run_id}", run_id, TENANT)
    assert refused["route"] == "GET /runs/{run_id}" and "run_id" not in refused  # not a run's id: the caller's text
    assert {key: handler["annotations"][key] for key in ("tenant", "run_id", "step", "Service")} == {
        "tenant": TENANT,
        "run_id": run_id,
        "step": 0,
        "Service": "stepwise-step",
    }
    assert "session_id" not in handler["annotations"] and "turn" not in handler["annotations"]  # a run, not a session
    assert tool_handler["annotations"]["tool"] == "calculator" and tool_handler["annotations"]["run_id"] == run_id
    # And the model call and the tool call are subsegments, with what they were and how long they took
    assert model_call["annotations"] == {"provider": "scripted", "model": "claude-haiku-4-5", "stop_reason": "tool_use"}
    assert model_call["end_time"] >= model_call["start_time"] and model_call["parent_id"] == handler["id"]
    assert tool_call["annotations"] == {"tool": "calculator", "tool_kind": "python", "is_error": False}
    assert tool_call["parent_id"] == tool_handler["id"]
    # And the AWS SDK's calls are subsegments of their own (DynamoDB through moto)
    operations = {entity["aws"]["operation"] for entity in step_trace.named("dynamodb")}
    assert {"GetItem", "Query", "TransactWriteItems"} <= operations, operations
    # And no trace holds what was said: the input, the tool's input or result, the model's answer
    for trace in xray.traces:
        text = trace.text()
        assert "plum" not in text and "98765432" not in text and "296296296" not in text
        assert all("metadata" not in entity for entity in trace.named("## handler"))  # no response, no error object


SAFE_EVENTS: dict[str, dict[str, Any]] = {
    "api": http_event("GET", "/health"),  # answered: its response must not be captured
    "authorizer": {"headers": {}},  # refused: its answer must not be captured
}


# A web app the Lambda Web Adapter runs (the stream function) has no Lambda handler for powertools' Tracer to wrap:
# Lambda's active tracing records its invocations, nothing more (README, Operations > Tracing)
HANDLERS = sorted(name for name, spec in FUNCTIONS.items() if not spec.web_adapter)


def test_only_web_adapter_apps_go_without_a_handler_to_trace() -> None:
    assert sorted(set(FUNCTIONS) - set(HANDLERS)) == ["stream"]


@pytest.mark.parametrize("name", HANDLERS)
def test_every_function_traces_its_handler_without_its_response_or_its_error(
    name: str, aws: Aws, context: LocalContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a function's handler module (a function added without @tracer.capture_lambda_handler fails here)
    module_path, _, function = FUNCTIONS[name].handler.rpartition(".")
    module = importlib.import_module(module_path)
    # When it is invoked with tracing on (most of them refuse an empty event: its error must not be captured)
    with recording(monkeypatch, module.obs.tracer) as xray, contextlib.suppress(Exception):
        xray.invoke(getattr(module, function), SAFE_EVENTS.get(name, {}), context)
    # Then its handler is a subsegment named for it, annotated with its service, with no metadata
    handler = the(xray, f"## {function}")
    assert handler["annotations"]["Service"] == FUNCTIONS[name].service
    assert "metadata" not in handler
    # And an error that left it is recorded by its type only: no message (it quotes the refused input), no stack
    for exception in handler.get("cause", {}).get("exceptions", []):
        assert exception["type"] and not exception.get("message") and not exception.get("stack"), exception


def test_intake_traces_each_message_of_a_batch_as_its_own_subsegment_named_for_its_run(
    aws: Aws, context: LocalContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given two queued runs, delivered in one batch
    runs = [json.loads(api.handler(http_event("POST", "/runs", {"input": QUESTION}), context)["body"])["run_id"]
            for _ in range(2)]  # fmt: skip
    bodies = [message["Body"] for message in aws.queued_messages()]
    # When intake starts them, traced
    with recording(monkeypatch, intake.tracer) as xray:
        assert xray.invoke(intake.handler, sqs_event(*bodies), context) == {"batchItemFailures": []}
    # Then each message is a subsegment annotated with its own run, its execution's start one of its own
    records = xray.last.named("## functions.handlers.intake.record_handler")
    assert sorted(record["annotations"]["run_id"] for record in records) == sorted(runs)
    assert all(record["annotations"]["tenant"] == TENANT and "metadata" not in record for record in records)
    starts = [e for e in xray.last.named("states") if e["aws"]["operation"] == "StartExecution"]
    assert sorted(start["parent_id"] for start in starts) == sorted(record["id"] for record in records)
    assert "plum" not in xray.last.text()


def test_a_message_that_fails_is_recorded_by_its_error_type_without_its_text(
    aws: Aws, context: LocalContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a message the webhooks function refuses (pydantic's error quotes the value it refused)
    body = json.dumps({"tenant": TENANT, "event": "plum 98765432"})
    # When its batch is handled, traced (the batch reports it as failed: the invocation itself succeeds)
    with recording(monkeypatch, webhooks.tracer) as xray:
        answer = xray.invoke(webhooks.handler, sqs_event(body), context)
    assert answer == {"batchItemFailures": [{"itemIdentifier": "m-0"}]}
    # Then its subsegment is a fault naming the error's type, and the trace holds nothing of the message
    (record,) = xray.last.named("## functions.handlers.webhooks.record_handler")
    (exception,) = record["cause"]["exceptions"]
    assert record["fault"] is True and exception["type"] == "ValidationError"
    assert "plum" not in xray.last.text() and "98765432" not in xray.last.text()
