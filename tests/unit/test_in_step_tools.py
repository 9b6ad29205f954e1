"""Fast tools run inside the step that asked for them (StepRunner.run with ``in_step``, ToolRunner.run_in_step):
through the same ToolRunner.run the tool function uses, so a call is run at most once, stored once and bounded the
same way; the workflow skips its Tools map when no call is left for it. A replayed step (a retry, a duplicate)
leaves every call to the Map, whose failure records cover a step that died among its tools."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from pydantic import BaseModel

from functions.agent.models import (
    AgentConfig,
    CustomTool,
    LambdaTool,
    RunRequest,
    RunStatus,
    StepDecision,
    StepRef,
    ToolError,
    ToolOutcome,
)
from functions.agent.tool import IN_STEP_SECONDS, UNKNOWN_OUTCOME, ToolRunner
from functions.tools import Tool, ToolRegistry, builtin_registry
from functions.tools.registry import FAST_MAX_TIMEOUT_SECONDS
from tests.fakes import core
from tests.fakes.clock import FixedClock
from tests.fakes.memory_store import InMemoryRunStore
from tests.fakes.model import ScriptedModel, text_response, tool_response

TENANT = "acme"
CALC = ("t_calc", "calculator", {"expression": "6*7"})
TIME = ("t_time", "current_time", {"timezone": "Asia/Tokyo"})


class Nothing(BaseModel):
    pass


class Died(BaseException):
    """The invocation's runtime died (it never returns to the handler)."""


def toolbox(counts: dict[str, int], dying: set[str] | None = None) -> ToolRegistry:
    """The built-ins, a fast tool with side effects (``stamp``) and a slow one (``look``: not fast)."""

    def work(name: str) -> Any:
        def fn(_: Nothing) -> str:
            counts[name] = counts.get(name, 0) + 1
            if dying is not None and name in dying:
                dying.discard(name)
                raise Died(name)
            return f"{name} #{counts[name]}"

        return fn

    return ToolRegistry([
        *builtin_registry().tools,
        Tool(name="stamp", description="fast, side effects", input_model=Nothing, fn=work("stamp"), idempotent=False,
             timeout_seconds=1, fast=True),
        Tool(name="look", description="slow", input_model=Nothing, fn=work("look")),
    ])  # fmt: skip


def submitted(store: InMemoryRunStore, tools: ToolRegistry, agent: AgentConfig | None = None) -> StepRef:
    run = core.submitter(store, toolbox=tools).submit(TENANT, RunRequest(input="go", tools=tools.names)).run
    if agent is not None:
        store.runs[run.key] = run.model_copy(update={"agent": agent})
    return StepRef(run.key, 0)


def steps(store: InMemoryRunStore, tools: ToolRegistry, *answers: Any) -> Any:
    """A StepRunner over a scripted model that runs fast calls in the step."""
    runner = ToolRunner(store=store, toolbox=tools, clock=FixedClock())
    return core.runner(store, ScriptedModel(*answers), toolbox=tools, tools=runner)


def test_a_step_whose_calls_are_fast_built_ins_runs_them_and_goes_on_to_the_next_step() -> None:
    store, tools = InMemoryRunStore(), toolbox({})
    ref = submitted(store, tools)
    runner = steps(store, tools, tool_response(CALC, TIME), text_response("42, and it is evening in Tokyo"))

    outcome = runner.run(ref, in_step=True)

    state = outcome.state()
    assert (state["next"], state["step"], state["tool_calls"]) == ("step", 1, [])  # Route: straight to Step
    assert [o.tool_use_id for o in outcome.ran_in_step] == ["t_calc", "t_time"]
    calc = store.tools[(ref.key, 0, "t_calc")]
    assert (calc.content, calc.is_error, calc.final) == ("42", False, True)  # stored as the tool function stores it
    # the next step gives the model both results
    finished = runner.run(StepRef(ref.key, 1), in_step=True)
    assert finished.status is RunStatus.SUCCEEDED
    sent = runner.model.requests[1].messages[-1]["content"]
    results = [(b["tool_use_id"], b["content"]) for b in sent if b["type"] == "tool_result"]
    assert [use for use, _ in results] == ["t_calc", "t_time"] and results[0][1] == "42"


def test_without_in_step_every_call_goes_to_the_map_as_before() -> None:
    store, tools = InMemoryRunStore(), toolbox({})
    ref = submitted(store, tools)

    outcome = steps(store, tools, tool_response(CALC)).run(ref)  # an execution of an earlier definition

    assert outcome.state()["next"] == "tools" and [c["id"] for c in outcome.state()["tool_calls"]] == ["t_calc"]
    assert outcome.ran_in_step == [] and (ref.key, 0, "t_calc") not in store.tools


def test_a_mixed_step_runs_the_fast_calls_and_leaves_the_others_to_the_map() -> None:
    store, counts = InMemoryRunStore(), dict[str, int]()
    tools = toolbox(counts)
    ref = submitted(store, tools)

    outcome = steps(store, tools, tool_response(CALC, ("t_look", "look", {}))).run(ref, in_step=True)

    state = outcome.state()
    assert state["next"] == "tools" and [c["id"] for c in state["tool_calls"]] == ["t_look"]
    assert [o.tool_use_id for o in outcome.ran_in_step] == ["t_calc"] and counts == {}
    # the Map's tool function runs the rest, through the same runner
    assert ToolRunner(store=store, toolbox=tools).run(ref, "t_look").content == "look #1"


def test_a_fast_call_with_side_effects_in_a_step_that_died_is_not_run_again_by_the_map() -> None:
    store, counts, dying = InMemoryRunStore(), dict[str, int](), {"stamp"}
    tools = toolbox(counts, dying)
    ref = submitted(store, tools)
    runner = steps(store, tools, tool_response(("t_stamp", "stamp", {}), CALC))

    with pytest.raises(Died):  # the step invocation dies while its fast call runs (after its work)
        runner.run(ref, in_step=True)
    retried = runner.run(ref, attempt=1, in_step=True)  # Step Functions retries the step: a replay

    assert retried.replayed and retried.ran_in_step == []
    assert [c["id"] for c in retried.state()["tool_calls"]] == ["t_stamp", "t_calc"]  # all to the Map
    mapped = ToolRunner(store=store, toolbox=tools)
    stamp = mapped.run(ref, "t_stamp")
    assert (stamp.error_kind, stamp.content, counts) == (ToolError.UNKNOWN_OUTCOME, UNKNOWN_OUTCOME, {"stamp": 1})
    assert mapped.run(ref, "t_calc").content == "42"


class FlakyStore(InMemoryRunStore):
    """A store whose next ``failures`` saves of a tool result fail (the table is unavailable)."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    def save_tool_result(self, ref: StepRef, outcome: ToolOutcome) -> ToolOutcome:
        if self.failures and outcome.final:
            self.failures -= 1
            raise RuntimeError("the table is unavailable")
        return super().save_tool_result(ref, outcome)


def test_a_fast_call_whose_run_raises_is_left_to_the_map() -> None:
    store = FlakyStore(failures=1)
    tools = toolbox({})
    ref = submitted(store, tools)

    outcome = steps(store, tools, tool_response(CALC, TIME)).run(ref, in_step=True)

    assert [o.tool_use_id for o in outcome.ran_in_step] == ["t_time"]
    assert outcome.state()["next"] == "tools" and [c["id"] for c in outcome.state()["tool_calls"]] == ["t_calc"]
    assert ToolRunner(store=store, toolbox=tools).run(ref, "t_calc").content == "42"


def test_the_calls_a_step_runs_fit_in_its_time_for_tools_the_rest_go_to_the_map() -> None:
    store, tools = InMemoryRunStore(), toolbox({})
    ref = submitted(store, tools)
    calls = [(f"t_{i}", "calculator", {"expression": f"{i}+1"}) for i in range(8)]
    core.runner(store, ScriptedModel(tool_response(*calls)), toolbox=tools).run(ref)
    record = store.get_step(ref.key, 0)
    assert record is not None
    slow_clock = FixedClock(tick=timedelta(seconds=3))  # each call seems to take 3 s of the 10

    ran, left = ToolRunner(store=store, toolbox=tools, clock=slow_clock).run_in_step(
        ref, record.tool_calls(), None, execution=None
    )

    # a call starts only if its timeout still fits: 3 + 2 and 6 + 2 do, 9 + 2 does not
    assert IN_STEP_SECONDS == 10 and FAST_MAX_TIMEOUT_SECONDS == 2
    assert [o.tool_use_id for o in ran] == ["t_0", "t_1"] and [c.id for c in left] == [f"t_{i}" for i in range(2, 8)]


def test_a_sessions_calls_that_wait_for_its_client_are_never_run_in_the_step() -> None:
    agent = AgentConfig(
        custom_tools=[CustomTool(name="get_weather", description="d", input_schema={"type": "object"})],
        ask=["current_time"],  # approval-gated
        lambda_tools=[LambdaTool(name="refund", description="d", input_schema={"type": "object"}, function="fn")],
    )
    store, tools = InMemoryRunStore(), toolbox({})
    ref = submitted(store, tools, agent)
    answer = tool_response(CALC, TIME, ("t_weather", "get_weather", {}), ("t_refund", "refund", {}))

    outcome = steps(store, tools, answer).run(ref, in_step=True)

    assert outcome.decision is StepDecision.ACTION and outcome.status is RunStatus.IDLE
    assert [o.tool_use_id for o in outcome.ran_in_step] == ["t_calc"]  # the fast call no one has to approve
    assert [c["id"] for c in outcome.state()["tool_calls"]] == ["t_refund"]  # the Lambda tool: the Map
    assert outcome.state()["next"] == "action"
    # with nothing left for the Map, the turn idles at once (Route -> Finalize)
    only_client = steps(InMemoryRunStore(), tools, tool_response(TIME, ("t_weather", "get_weather", {})))
    store2 = only_client.store
    idle = only_client.run(submitted(store2, tools, agent), in_step=True)
    assert (idle.state()["next"], idle.state()["status"], idle.ran_in_step) == ("idle", "IDLE", [])


def test_a_fast_tool_has_a_short_timeout() -> None:
    with pytest.raises(ValueError, match="fast tool's timeout_seconds must be at most 2"):
        Tool(name="slow", description="d", input_model=Nothing, fn=lambda _: "", timeout_seconds=5, fast=True)
    assert builtin_registry().in_step_seconds("calculator") == FAST_MAX_TIMEOUT_SECONDS
    assert toolbox({}).in_step_seconds("look") is None
