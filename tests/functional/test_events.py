"""Every sample event in events/ goes through its handler and does what its name says, with the function given
only the settings the synthesised stack gives it."""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path
from typing import Any

import pytest

from functions.adapters import wiring
from functions.agent.models import Budget, Run, RunKey, RunStatus
from stepwise.local.lambdas import LocalContext
from stepwise.local.template import Topology
from tests.functional.conftest import Aws, table_store

EVENTS = Path(__file__).resolve().parents[2] / "events"
RUN_ID = "run_5a3b0000000000000000c0ffee"


def body(result: dict[str, Any]) -> dict[str, Any]:
    return dict(json.loads(result["body"]))


def check(name: str, r: dict[str, Any], aws: Aws) -> None:
    """What each sample event must do; an event file without an entry here fails the suite."""
    if name == "api/post_run.json":
        assert r["statusCode"] == 202 and body(r)["status"] == "QUEUED"
        assert len(aws.queued_messages()) == 1
    elif name == "api/post_run_bad_json.json":
        assert r["statusCode"] == 400 and body(r)["error"]["code"] == "INVALID_JSON"
    elif name == "api/post_run_missing_input.json":
        assert r["statusCode"] == 400 and "input: Field required" in body(r)["error"]["message"]
    elif name == "api/get_run.json":
        assert r["statusCode"] == 200 and body(r)["run_id"] == RUN_ID
    elif name == "api/get_steps.json":
        assert r["statusCode"] == 200 and len(body(r)["steps"]) == 1
    elif name == "api/cancel_run.json":
        assert r["statusCode"] == 200 and body(r)["status"] == "CANCELLED"
    elif name == "api/list_active.json":
        assert r["statusCode"] == 200 and [e["id"] for e in body(r)["data"]] == [RUN_ID]
    elif name == "api/cancel_active.json":
        assert r["statusCode"] == 200 and body(r)["stopped"] == 1 and body(r)["data"][0]["id"] == RUN_ID
        assert table_store().get_run(RunKey("default", RUN_ID)).status is RunStatus.CANCELLED  # type: ignore[union-attr]
    elif name == "api/create_agent.json":
        agent = body(r)
        assert r["statusCode"] == 200 and agent["type"] == "agent" and agent["version"] == 1
        assert [tool["type"] for tool in agent["tools"]] == ["custom", "stepwise_toolset_20261201"]
    elif name == "api/create_agent_sandbox_toolset.json":
        assert r["statusCode"] == 400 and body(r)["error"]["type"] == "invalid_request_error"
        assert "agent_toolset_20260401" in body(r)["error"]["message"]
    elif name == "api/health.json":
        assert r["statusCode"] == 200
    elif name == "intake/sqs_batch.json":
        assert r == {"batchItemFailures": []}
        assert [e["name"] for e in aws.executions()] == [RUN_ID]
    elif name == "step/first_step.json":
        assert r["next"] == "tools" and r["tool_calls"][0]["name"] == "calculator"
    elif name == "tool/calculator.json":
        assert r == {"tool_use_id": "toolu_stub_01_00", "name": "calculator", "is_error": False}
    elif name == "finalize/succeeded.json":
        assert r == {"run_id": RUN_ID, "status": "SUCCEEDED"}
    elif name == "mark_failed/model_overloaded.json":
        assert r["status"] == "FAILED"
        assert (
            r["error"]["message"] == "Anthropic API 529 overloaded_error: Overloaded (before its first step completed)"
        )
    elif name == "authorizer/no_key.json":  # a key that no tenant has
        assert r == {"isAuthorized": False}
    elif name == "workflow_ended/timed_out.json":
        assert r == {"run_id": RUN_ID, "status": "TIMED_OUT"}
        run = table_store().get_run(RunKey("default", RUN_ID))
        assert run is not None and run.error is not None and run.error.code == "RUN_TIMEOUT"
        assert "States.Timeout" in run.error.message
    elif name == "gauges/scheduled.json":  # the seeded run, QUEUED: counted, and nothing else
        assert (r["runs"], r["sessions"], r["top_tenants"]) == (1, 0, [{"tenant": "default", "active": 1}])
        assert r["by_status"] == {"run:QUEUED": 1, "run:RUNNING": 0, "session:QUEUED": 0, "session:RUNNING": 0}
    elif name == "webhooks/announced_run_end.json":  # the tenant has no endpoint: fanned out to none
        assert r == {"batchItemFailures": []}
        assert aws.sqs.receive_message(QueueUrl=aws.webhooks_queue_url).get("Messages", []) == []
    else:
        pytest.fail(f"events/{name} has no expectation in check()")


ALL_EVENTS = sorted(str(p.relative_to(EVENTS)) for p in EVENTS.rglob("*.json"))


def seed(first_step_done: bool) -> None:
    store = table_store()
    store.create_run(
        Run(
            run_id=RUN_ID,
            tenant="default",
            status=RunStatus.QUEUED,
            input="What is 6 * 7?",
            model="claude-haiku-4-5",
            tools=["calculator"],
            budget=Budget(),
            created_at="2026-11-21T12:00:00.000+00:00",
            updated_at="2026-11-21T12:00:00.000+00:00",
        )
    )
    if first_step_done:
        importlib.import_module("functions.handlers.step").handler(
            {"tenant": "default", "run_id": RUN_ID, "step": 0}, LocalContext(function_name="step")
        )


def only_its_own_settings(function: str, topology: Topology, monkeypatch: pytest.MonkeyPatch) -> None:
    """Unset every STEPWISE_* variable the stack does not give ``function`` (the fixture set them all)."""
    (own,) = [
        variables
        for logical_id, variables in topology.environments.items()
        if topology.handlers.get(logical_id) == f"functions.handlers.{function}.handler"
    ]
    for variable in [v for v in os.environ if v.startswith("STEPWISE_") and v not in own]:
        monkeypatch.delenv(variable)
    wiring.reset()


@pytest.mark.parametrize("name", ALL_EVENTS)
def test_event_runs_through_its_handler(
    name: str, aws: Aws, context: LocalContext, stack_topology: Topology, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the run the events refer to (with its first step taken where the event needs it)
    function = name.split("/")[0]
    seeded = ("api/get_run.json", "api/get_steps.json", "api/cancel_run.json", "api/list_active.json",
              "api/cancel_active.json")  # fmt: skip
    if function != "api" or name in seeded:
        seed(first_step_done=name in ("tool/calculator.json", "api/get_steps.json"))
    # And the function given only what the stack gives it (the test's own choices: tenant, stub model)
    only_its_own_settings(function, stack_topology, monkeypatch)
    # When the event is handed to its function's handler
    handler = importlib.import_module(f"functions.handlers.{function}").handler
    result = handler(json.loads((EVENTS / name).read_text()), context)
    # Then it did what the event's name says
    check(name, result, aws)
