"""Sessions (functions/agent/sessions.py, conversation.py): the conversation across turns, the events read off
a session's history, and why a turn idled."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from functions.agent.conversation import build_conversation
from functions.agent.models import (
    AgentConfig,
    Budget,
    CustomTool,
    Run,
    RunError,
    RunStatus,
    StepDecision,
    StepRecord,
    ToolError,
    ToolOutcome,
    Turn,
    Usage,
    UserEvent,
)
from functions.agent.ports import RunHistory
from functions.agent.sessions import SessionView, event_id, stop_reason

AGENT = AgentConfig(
    system="s", custom_tools=[CustomTool(name="get_weather", description="d", input_schema={"type": "object"})],
    ask=["calculator"],
)  # fmt: skip
T0, T1, T2, T3 = (f"2026-12-01T00:00:0{n}.000+00:00" for n in range(4))


def step(n: int, content: list[dict[str, Any]], *, superseded: bool = False) -> StepRecord:
    return StepRecord(
        run_id="sesn_1", step=n, model="claude-haiku-4-5", provider="anthropic",
        stop_reason="tool_use" if any(b["type"] == "tool_use" for b in content) else "end_turn", content=content,
        usage=Usage(input_tokens=10, output_tokens=2), cost_usd=Decimal("0.00002"), decision=StepDecision.FINISH,
        superseded=superseded, started_at=T0, finished_at=T1, duration_ms=1000,
    )  # fmt: skip


def use(call_id: str, name: str) -> dict[str, Any]:
    return {"type": "tool_use", "id": call_id, "name": name, "input": {}}


def said(turn: int, text: str, rev: int = 0) -> UserEvent:
    content = [{"type": "text", "text": text}]
    return UserEvent(
        id=event_id(turn, 0, rev), type="user.message", turn=turn, processed_at=T0, body={"content": content}
    )


def session(status: RunStatus, turns: list[Turn], steps: int, **extra: Any) -> Run:
    return Run(
        run_id="sesn_1", tenant="t", status=status, input="", model="claude-haiku-4-5", tools=["calculator"],
        budget=Budget(max_steps=25), completed_steps=steps, agent=AGENT, session={"rev": 1, **extra}, turns=turns,
        created_at=T0, updated_at=T3,
    )  # fmt: skip


def result(call_id: str, content: str, **extra: Any) -> ToolOutcome:
    return ToolOutcome(tool_use_id=call_id, name="x", content=content, **extra)


def test_each_turn_continues_the_conversation_with_tool_results_before_what_the_user_said() -> None:
    # Given turn 1 (a tool call, its result, an answer) and turn 2 whose first step was refused, and turn 3
    history = RunHistory(
        run=session(
            RunStatus.SUCCEEDED,
            [Turn(first_step=0, started_at=T0), Turn(first_step=2, started_at=T1), Turn(first_step=2, started_at=T2)],
            steps=3,
        ),
        steps=[
            step(0, [use("toolu_a", "calculator")]),
            step(1, [{"type": "text", "text": "42"}]),
            step(2, [{"type": "text", "text": "hello again"}]),
        ],
        tool_results={(0, "toolu_a"): result("toolu_a", "42")},
        user_events=[said(1, "6*7?"), said(2, "are you there?"), said(3, "hello?")],
    )
    # Then the model sees one alternating conversation; two turns that began at one step are one user message
    messages = build_conversation(history)
    assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant", "user", "assistant"]
    assert messages[0]["content"] == [{"type": "text", "text": "6*7?"}]
    assert messages[2]["content"] == [
        {"type": "tool_result", "tool_use_id": "toolu_a", "content": "42", "is_error": False}
    ]
    assert messages[4]["content"] == [{"type": "text", "text": "are you there?"}, {"type": "text", "text": "hello?"}]


def test_a_message_after_a_stopped_tool_step_follows_the_calls_results() -> None:
    # A turn refused by its budget after its tools ran: the next message goes after the results, in one message
    history = RunHistory(
        run=session(
            RunStatus.BUDGET_EXCEEDED, [Turn(first_step=0, started_at=T0), Turn(first_step=1, started_at=T1)], steps=1
        ),
        steps=[step(0, [use("toolu_a", "calculator")])],
        tool_results={(0, "toolu_a"): result("toolu_a", "42")},
        user_events=[said(1, "6*7?"), said(2, "go on")],
    )
    last = build_conversation(history)[-1]
    assert [block["type"] for block in last["content"]] == ["tool_result", "text"]


def test_an_empty_answer_is_left_out_of_the_next_turns_conversation() -> None:
    history = RunHistory(
        run=session(RunStatus.SUCCEEDED, [Turn(first_step=0, started_at=T0), Turn(first_step=1, started_at=T1)], 2),
        steps=[step(0, [{"type": "text", "text": ""}]), step(1, [{"type": "text", "text": "ok"}])],
        user_events=[said(1, "hi"), said(2, "hello?")],
    )
    assert build_conversation(history) == [
        {"role": "user", "content": [{"type": "text", "text": "hi"}, {"type": "text", "text": "hello?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "ok"}]},
    ]


def test_a_superseded_step_is_left_out_and_what_preceded_it_moves_on() -> None:
    history = RunHistory(
        run=session(RunStatus.SUCCEEDED, [Turn(first_step=0, started_at=T0)], steps=2),
        steps=[
            step(0, [{"type": "text", "text": "cheap"}], superseded=True),
            step(1, [{"type": "text", "text": "ok"}]),
        ],
        user_events=[said(1, "hi")],
    )
    assert build_conversation(history) == [
        {"role": "user", "content": [{"type": "text", "text": "hi"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "ok"}]},
    ]


def waiting_history(**session_extra: Any) -> RunHistory:
    return RunHistory(
        run=session(RunStatus.IDLE, [Turn(first_step=0, started_at=T0)], steps=1, **session_extra),
        steps=[
            step(
                0,
                [
                    {"type": "text", "text": "using tools"},
                    use("toolu_c", "calculator"),
                    use("toolu_w", "get_weather"),
                    use("toolu_t", "current_time"),
                ],
            )
        ],
        tool_results={(0, "toolu_t"): result("toolu_t", "noon")},
        user_events=[said(1, "hi")],
    )


def test_event_ids_sort_as_turn_section_and_position_do() -> None:
    positions = [(2, 0, 0, 0), (1, 6, 0, 0), (1, 3, 10, 600), (1, 3, 9, 999), (10, 0, 0, 0), (1, 3, 10, 10)]
    by_id = sorted(positions, key=lambda p: event_id(*p))
    assert by_id == sorted(positions)


def test_an_idle_turn_waits_for_its_approval_and_its_client_tool_in_event_order() -> None:
    view = SessionView(waiting_history())
    events = view.events()
    assert [e["type"] for e in events] == [
        "user.message", "session.status_running", "span.model_request_start", "agent.message", "agent.tool_use",
        "agent.custom_tool_use", "agent.tool_use", "span.model_request_end", "agent.tool_result",
        "session.status_idle",
    ]  # fmt: skip
    calc, weather, clock = (e for e in events if e["type"] in ("agent.tool_use", "agent.custom_tool_use"))
    assert calc["evaluated_permission"] == "ask" and clock["evaluated_permission"] == "allow"
    assert events[-1]["stop_reason"] == {"type": "requires_action", "event_ids": [calc["id"], weather["id"]]}
    assert view.waiting() == {calc["id"]: (0, 0, "toolu_c", "ask"), weather["id"]: (0, 1, "toolu_w", "custom")}
    end = next(e for e in events if e["type"] == "span.model_request_end")
    assert end["model_request_start_id"] == events[2]["id"] and end["cost_usd"] == "0.00002"


def test_answered_calls_stop_waiting() -> None:
    history = waiting_history(approved=[{"id": "toolu_c", "name": "calculator", "step": 0}])
    history.tool_results[(0, "toolu_w")] = result("toolu_w", "sunny")
    assert SessionView(history).waiting() == {}


def test_an_approved_call_run_by_the_next_turn_is_an_event_of_that_turn_and_a_denial_is_not_a_result() -> None:
    history = waiting_history()
    run = history.run.model_copy(
        update={
            "status": RunStatus.SUCCEEDED,
            "turns": [
                Turn(first_step=0, started_at=T0, ended_status=RunStatus.IDLE, ended_at=T1),
                Turn(first_step=1, started_at=T2, tools=[{"id": "toolu_c", "name": "calculator", "step": 0}]),
            ],
        }
    )
    history.run = run
    history.tool_results[(0, "toolu_c")] = result("toolu_c", "42")
    history.tool_results[(0, "toolu_w")] = result("toolu_w", "no", is_error=True, error_kind=ToolError.DENIED)
    events = SessionView(history).events()
    results = [e for e in events if e["type"] == "agent.tool_result"]
    assert [r["content"][0]["text"] for r in results] == ["noon", "42"]
    assert results[1]["id"].startswith("sevt_0002")  # turn 2 ran it, after its status_running
    order = [e["type"] for e in events if e["id"].startswith("sevt_0002")]
    assert order[:2] == ["session.status_running", "agent.tool_result"]
    first_idle = next(e for e in events if e["type"] == "session.status_idle")
    assert first_idle["stop_reason"]["type"] == "requires_action" and len(first_idle["stop_reason"]["event_ids"]) == 2


@pytest.mark.parametrize(
    ("status", "error", "expected"),
    [
        (RunStatus.SUCCEEDED, None, "end_turn"),
        (RunStatus.CANCELLED, RunError(code="CANCELLED", message="interrupted"), "end_turn"),
        (RunStatus.BUDGET_EXCEEDED, RunError(code="MAX_USD", message="m"), "budget_reached"),
        (RunStatus.FAILED, RunError(code="REFUSAL", message="m"), "refusal"),
        (RunStatus.FAILED, RunError(code="MODEL_400", message="m"), "retries_exhausted"),
        (RunStatus.TIMED_OUT, RunError(code="RUN_TIMEOUT", message="m"), "retries_exhausted"),
        (RunStatus.IDLE, None, "requires_action"),
    ],
)
def test_why_a_turn_idled(status: RunStatus, error: RunError | None, expected: str) -> None:
    assert stop_reason(status, error, [])["type"] == expected


def test_a_failed_turn_reports_a_session_error_before_it_idles() -> None:
    history = waiting_history()
    history.run = history.run.model_copy(
        update={"status": RunStatus.FAILED, "error": RunError(code="MODEL_500", message="boom")}
    )
    events = SessionView(history).events()
    assert [e["type"] for e in events][-2:] == ["session.error", "session.status_idle"]
    assert events[-2]["error"] == {"type": "model_request_failed_error", "message": "MODEL_500: boom",
                                   "retry_status": {"type": "exhausted"}}  # fmt: skip
