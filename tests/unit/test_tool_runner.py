"""ToolRunner (functions/agent/tool.py): at most once for tools with side effects, retried otherwise; results
recorded once; large results kept whole in the result store with a view for the model; failures the workflow
caught become error results."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from pydantic import BaseModel

from functions.agent.errors import NotFoundError, ToolServerError
from functions.agent.models import AgentConfig, LambdaTool, McpTool, RunRequest, StepRef, ToolError
from functions.agent.results import MAX_RESULT_CHARS, VIEW_CHARS, bounded, whole_result
from functions.agent.tool import UNKNOWN_OUTCOME, ToolRunner, workflow_calls
from functions.tools import Tool, ToolRegistry, builtin_registry
from tests.fakes import core
from tests.fakes.memory_store import InMemoryRunStore
from tests.fakes.model import ScriptedModel, tool_response

TENANT = "acme"


class Nothing(BaseModel):
    pass


class Died(BaseException):
    """The invocation's runtime died (it never returns to the handler)."""


class MemoryResults:
    def __init__(self) -> None:
        self.objects: dict[str, str] = {}

    def put(self, key: str, content: str) -> None:
        self.objects[key] = content

    def get(self, key: str) -> str | None:
        return self.objects.get(key)


class FakeMcp:
    def __init__(self, answer: tuple[str, bool] | ToolServerError) -> None:
        self.answer, self.calls = answer, []  # type: ignore[var-annotated]

    def call(self, url: str, name: str, arguments: dict[str, Any], *, timeout: float) -> tuple[str, bool]:
        self.calls.append((url, name, arguments))
        if isinstance(self.answer, ToolServerError):
            raise self.answer
        return self.answer


def registry(counts: dict[str, int], dying: set[str]) -> ToolRegistry:
    def work(name: str) -> Any:
        def fn(_: Nothing) -> str:
            counts[name] = counts.get(name, 0) + 1
            if name in dying:
                dying.discard(name)
                raise Died(name)
            return f"{name} #{counts[name]}"

        return fn

    return ToolRegistry([
        *builtin_registry().tools,
        Tool(name="book", description="side effects", input_model=Nothing, fn=work("book"), idempotent=False),
        Tool(name="look", description="read-only", input_model=Nothing, fn=work("look")),
        Tool(name="big", description="1 MB", input_model=Nothing, fn=lambda _: "y" * 1_000_000),
    ])  # fmt: skip


def started(store: InMemoryRunStore, toolbox: ToolRegistry, *calls: str, agent: AgentConfig | None = None) -> StepRef:
    """A run whose step 0 asked for ``calls`` (each ``name``, its id ``t_<name>``)."""
    new_id = lambda: f"run_{len(store.runs) + 1:026x}"  # noqa: E731
    run = (
        core.submitter(store, toolbox=toolbox, new_id=new_id)
        .submit(TENANT, RunRequest(input="go", tools=toolbox.names))
        .run
    )
    if agent is not None:
        store.runs[run.key] = run.model_copy(update={"agent": agent})
    response = tool_response(*((f"t_{name}", name, {}) for name in calls))
    core.runner(store, ScriptedModel(response), toolbox=toolbox).run(StepRef(run.key, 0))
    return StepRef(run.key, 0)


def test_a_tool_with_side_effects_whose_invocation_dies_after_its_work_is_not_run_again() -> None:
    store, counts, dying = InMemoryRunStore(), {}, {"book"}
    toolbox = registry(counts, dying)
    ref = started(store, toolbox, "book")
    runner = ToolRunner(store=store, toolbox=toolbox)

    with pytest.raises(Died):
        runner.run(ref, "t_book")  # the first invocation: the booking is made, then the runtime dies
    retried = runner.run(ref, "t_book")  # the workflow retries the invocation

    assert counts == {"book": 1}
    assert (retried.is_error, retried.error_kind, retried.content, retried.final) == (
        True, ToolError.UNKNOWN_OUTCOME, UNKNOWN_OUTCOME, True,
    )  # fmt: skip
    assert store.tools[(ref.key, 0, "t_book")] == retried  # recorded once, final
    assert runner.run(ref, "t_book") == retried  # and a third invocation answers the same


def test_an_idempotent_tool_whose_invocation_dies_is_run_again() -> None:
    store, counts, dying = InMemoryRunStore(), {}, {"look"}
    toolbox = registry(counts, dying)
    ref = started(store, toolbox, "look")
    runner = ToolRunner(store=store, toolbox=toolbox)

    with pytest.raises(Died):
        runner.run(ref, "t_look")
    retried = runner.run(ref, "t_look")

    assert counts == {"look": 2}
    assert (retried.is_error, retried.content) == (False, "look #2")


def test_a_tool_with_side_effects_that_returns_replaces_its_provisional_result() -> None:
    store, counts = InMemoryRunStore(), {}
    toolbox = registry(counts, set())
    ref = started(store, toolbox, "book")

    outcome = ToolRunner(store=store, toolbox=toolbox).run(ref, "t_book")

    assert (outcome.content, outcome.is_error, outcome.final) == ("book #1", False, True)
    assert store.tools[(ref.key, 0, "t_book")].content == "book #1"


def test_a_failure_the_workflow_caught_becomes_the_calls_error_result() -> None:
    store, counts, dying = InMemoryRunStore(), {}, {"book"}
    toolbox = registry(counts, dying)
    ref = started(store, toolbox, "book", "look")
    runner = ToolRunner(store=store, toolbox=toolbox)
    with pytest.raises(Died):
        runner.run(ref, "t_book")

    # a started call with side effects whose retries ran out: its outcome is unknown
    book = runner.record_failure(ref, "t_book", {"Error": "Sandbox.Timedout", "Cause": "timed out"}, execution=None)
    # a call that never stored anything: the failure, named
    look = runner.record_failure(ref, "t_look", {"Error": "States.Timeout", "Cause": "hung"}, execution=None)

    assert (book.error_kind, book.content, book.final) == (ToolError.UNKNOWN_OUTCOME, UNKNOWN_OUTCOME, True)
    assert (look.error_kind, look.content) == (ToolError.TIMED_OUT, "look failed (States.Timeout): hung")
    # a result stored before the failure was caught is kept
    assert runner.record_failure(ref, "t_look", {"Error": "X"}, execution=None) == look


def test_a_result_above_the_view_is_kept_whole_and_the_model_sees_a_bounded_view() -> None:
    store, results = InMemoryRunStore(), MemoryResults()
    toolbox = registry({}, set())
    ref = started(store, toolbox, "big")

    outcome = ToolRunner(store=store, toolbox=toolbox, results=results).run(ref, "t_big")

    key = f"{TENANT}/{ref.key.run_id}/00000/t_big/{hashlib.sha256(b'y' * 1_000_000).hexdigest()[:16]}"
    assert outcome.stored == key and results.objects[key] == "y" * 1_000_000
    assert outcome.size == 1_000_000
    assert outcome.content.startswith("y" * VIEW_CHARS + "\n[showing 16,000 of 1,000,000 characters; the whole")
    assert outcome.content.endswith(f"GET /runs/{ref.key.run_id}/tool_results/t_big]")
    first = whole_result(store.load_history(ref.key), results, "t_big")
    assert (first["size"], len(first["content"]), first["step"], first["next_offset"]) == (
        1_000_000, 200_000, 0, 200_000,
    )  # fmt: skip
    rest = whole_result(store.load_history(ref.key), results, "t_big", offset=200_000, limit=800_000)
    assert first["content"] + rest["content"] == "y" * 1_000_000 and rest["next_offset"] is None
    # expired from the bucket: said so, not an empty result
    results.objects.clear()
    with pytest.raises(NotFoundError, match="no longer kept"):
        whole_result(store.load_history(ref.key), results, "t_big")
    with pytest.raises(NotFoundError, match="no result for tool call t_other"):
        whole_result(store.load_history(ref.key), results, "t_other")


def test_a_result_beyond_what_is_kept_is_cut_and_says_so() -> None:
    store, results = InMemoryRunStore(), MemoryResults()
    huge = Tool(name="huge", description="d", input_model=Nothing, fn=lambda _: "z" * (MAX_RESULT_CHARS + 10))
    toolbox = ToolRegistry([huge])
    ref = started(store, toolbox, "huge")

    outcome = ToolRunner(store=store, toolbox=toolbox, results=results).run(ref, "t_huge")

    assert outcome.size == MAX_RESULT_CHARS + 10
    kept = results.objects[str(outcome.stored)]
    assert kept.endswith(f"[cut at {MAX_RESULT_CHARS:,} of {MAX_RESULT_CHARS + 10:,} characters]")


MCP_AGENT = AgentConfig(
    mcp_tools=[McpTool(name="reserve", server="inv", input_schema={"type": "object"}),
               McpTool(name="lookup", server="inv", input_schema={"type": "object"}, idempotent=True)],
    mcp_servers={"inv": "https://mcp.example.com/mcp"},
)  # fmt: skip


def test_an_mcp_call_goes_to_its_server_with_the_models_input() -> None:
    store, mcp = InMemoryRunStore(), FakeMcp(("reserved", False))
    toolbox = builtin_registry()
    ref = started(store, toolbox, "reserve", agent=MCP_AGENT)

    outcome = ToolRunner(store=store, toolbox=toolbox, mcp=mcp).run(ref, "t_reserve")

    assert mcp.calls == [("https://mcp.example.com/mcp", "reserve", {})]
    assert (outcome.content, outcome.is_error) == ("reserved", False)


@pytest.mark.parametrize(
    ("answer", "kind", "content"),
    [
        (("no such SKU", True), ToolError.FAILED, "no such SKU"),
        (ToolServerError("ConnectError: refused", before_sending=True), ToolError.FAILED,
         "MCP server 'inv': ConnectError: refused"),
        (ToolServerError("RemoteProtocolError: the connection dropped"), ToolError.UNKNOWN_OUTCOME,
         "MCP server 'inv': RemoteProtocolError: the connection dropped (the outcome is unknown; not run again)"),
        (ToolServerError("no answer within 30 s", timed_out=True), ToolError.TIMED_OUT,
         "MCP server 'inv': no answer within 30 s (the outcome is unknown; not run again)"),
    ],
)  # fmt: skip
def test_an_mcp_failure_is_the_calls_error_result(answer: Any, kind: ToolError, content: str) -> None:
    store = InMemoryRunStore()
    toolbox = builtin_registry()
    ref = started(store, toolbox, "reserve", agent=MCP_AGENT)

    outcome = ToolRunner(store=store, toolbox=toolbox, mcp=FakeMcp(answer)).run(ref, "t_reserve")

    assert (outcome.is_error, outcome.error_kind, outcome.content) == (True, kind, content)


def test_lambda_tool_calls_carry_what_the_map_invokes_them_with() -> None:
    agent = AgentConfig(lambda_tools=[
        LambdaTool(name="refund", description="d", input_schema={}, function="refund-order", timeout_seconds=20),
        LambdaTool(name="rate", description="d", input_schema={}, function="rates", idempotent=True),
    ])  # fmt: skip
    calls = tool_response(("t1", "refund", {"order": "A"}), ("t2", "rate", {}), ("t3", "calculator", {})).tool_calls()

    assert workflow_calls(calls, agent) == [
        {"id": "t1", "name": "refund", "kind": "lambda_once", "function": "refund-order", "input": {"order": "A"},
         "timeout_seconds": 20},
        {"id": "t2", "name": "rate", "kind": "lambda", "function": "rates", "input": {}, "timeout_seconds": 30},
        {"id": "t3", "name": "calculator", "kind": "stepwise"},
    ]  # fmt: skip


def test_what_a_lambda_tool_returned_is_recorded_as_text() -> None:
    store = InMemoryRunStore()
    toolbox = builtin_registry()
    agent = AgentConfig(lambda_tools=[LambdaTool(name="refund", description="d", input_schema={}, function="f")])
    ref = started(store, toolbox, "refund", agent=agent)
    runner = ToolRunner(store=store, toolbox=toolbox)

    outcome = runner.record_lambda_result(ref, "t_refund", {"refund_id": "RF-1"}, execution=None)

    assert (outcome.content, outcome.is_error) == ('{"refund_id": "RF-1"}', False)
    # a Lambda tool with side effects that died: the outcome is unknown
    ref2 = started(store, toolbox, "refund", agent=agent)
    died = runner.record_failure(ref2, "t_refund", {"Error": "Sandbox.Timedout"}, execution=None)
    assert died.error_kind is ToolError.UNKNOWN_OUTCOME
    # the Lambda service failing around it: it may have run; a throttle (refused before it ran): it did not
    around = runner.record_failure(started(store, toolbox, "refund", agent=agent), "t_refund",
                                   {"Error": "Lambda.ServiceException"}, execution=None)  # fmt: skip
    throttled = runner.record_failure(started(store, toolbox, "refund", agent=agent), "t_refund",
                                      {"Error": "Lambda.TooManyRequestsException"}, execution=None)  # fmt: skip
    assert (around.error_kind, throttled.error_kind) == (ToolError.UNKNOWN_OUTCOME, ToolError.FAILED)
    # it ran, but its result could not be recorded: unknown, never "failed"
    lost = runner.record_failure(started(store, toolbox, "refund", agent=agent), "t_refund",
                                 {"Error": "States.TaskFailed"}, execution=None, ran=True)  # fmt: skip
    assert lost.error_kind is ToolError.UNKNOWN_OUTCOME and "ran, but its result could not be recorded" in lost.content
    raised = runner.record_failure(started(store, toolbox, "refund", agent=agent), "t_refund",
                                   {"Error": "ValueError", "Cause": '{"errorMessage": "no such order"}'},
                                   execution=None)  # fmt: skip
    assert (raised.error_kind, raised.content) == (
        ToolError.FAILED, "refund failed (ValueError): no such order",  # the message, never the stack trace
    )  # fmt: skip


def test_a_view_is_never_stored_again_over_its_whole_result() -> None:
    store, results = InMemoryRunStore(), MemoryResults()
    toolbox = registry({}, set())
    ref = started(store, toolbox, "big")
    view = ToolRunner(store=store, toolbox=toolbox, results=results).run(ref, "t_big")
    objects = dict(results.objects)

    again = bounded(view, ref, results, "elsewhere")

    assert again == view and results.objects == objects
