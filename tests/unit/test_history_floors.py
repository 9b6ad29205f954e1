"""Where an incremental history read begins (functions/adapters/dynamodb_history.py)."""

from __future__ import annotations

from decimal import Decimal

from functions.adapters.dynamodb_history import event_floor, open_from
from functions.agent.models import StepDecision, StepRecord, ToolOutcome, Usage
from functions.agent.sessions import event_id


def test_the_event_floor_is_below_every_event_of_the_turn_before_and_above_every_earlier_one() -> None:
    floor = event_floor(5)
    assert event_id(3, 6, 99_999, 999) < floor <= event_id(4, 0)
    assert floor < event_id(4, 4) < event_id(5, 0) < event_id(6, 0)
    assert event_floor(0) == event_floor(1) <= event_id(0, 0) < event_id(1, 0)


def step(n: int, decision: StepDecision = StepDecision.TOOLS, calls: int = 1) -> StepRecord:
    content = [{"type": "tool_use", "id": f"t{n}_{i}", "name": "calculator", "input": {}} for i in range(calls)]
    return StepRecord(run_id="run_x", step=n, model="m", provider="p", stop_reason="tool_use", content=content,
                      usage=Usage(), cost_usd=Decimal(0), decision=decision, started_at="t", finished_at="t",
                      duration_ms=0)  # fmt: skip


def result(n: int, i: int = 0, *, final: bool = True) -> tuple[tuple[int, str], ToolOutcome]:
    return (n, f"t{n}_{i}"), ToolOutcome(tool_use_id=f"t{n}_{i}", name="calculator", content="2", final=final)


def test_open_steps_are_those_that_run_calls_without_all_their_final_results() -> None:
    steps = (step(0), step(1, StepDecision.REDO), step(2), step(3, StepDecision.ACTION, calls=2))
    tools = dict([result(0), result(2), result(3, 0)])
    assert open_from(steps, tools) == 3  # a redone step's calls never run; step 3 waits for one result
    tools.update([result(3, 1)])
    assert open_from(steps, tools) == 4  # all in: only steps not yet read can change
    tools.update([result(2, final=False)])
    assert open_from(steps, tools) == 2  # a provisional result is replaced by the final one
    assert open_from(steps, dict([result(0), result(2), result(3, 0)]), start=3) == 3
