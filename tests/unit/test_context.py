"""Context management (functions/agent/conversation.py): a long run's oldest tool results are cleared when its
prompt nears the context window, in batches, deterministically, keeping every tool_use paired with a result."""

from __future__ import annotations

import json
from dataclasses import replace
from decimal import Decimal
from typing import Any

import pytest

from functions.agent.caching import count_breakpoints
from functions.agent.conversation import (
    CLEARED,
    ContextPolicy,
    build_conversation,
    cleared_before,
    estimate_tokens,
    model_request,
)
from functions.agent.models import (
    Budget,
    Run,
    RunStatus,
    StepDecision,
    StepRecord,
    ToolOutcome,
    Turn,
    Usage,
    UserEvent,
)
from functions.agent.ports import RunHistory
from functions.agent.sessions import SessionView
from functions.tools import builtin_registry

T0 = "2026-12-01T00:00:00.000+00:00"
BIG = "x" * 16_000  # what the model sees of a 100 KB result (results.VIEW_CHARS)
POLICY = ContextPolicy(trigger_tokens=30_000, target_tokens=15_000, keep_steps=2)


def run(steps: int) -> Run:
    return Run(
        run_id="run_1", tenant="t", status=RunStatus.RUNNING, input="read the reports", model="claude-haiku-4-5",
        tools=["calculator"], budget=Budget(max_steps=100), completed_steps=steps, created_at=T0, updated_at=T0,
    )  # fmt: skip


def history(steps: int, content: str = BIG) -> RunHistory:
    """``steps`` steps, each calling one tool whose result is ``content``."""
    records, results = [], {}
    for n in range(steps):
        call = {"type": "tool_use", "id": f"toolu_{n}", "name": "calculator", "input": {"expression": f"{n}+1"}}
        records.append(
            StepRecord(
                run_id="run_1",
                step=n,
                model="claude-haiku-4-5",
                provider="scripted",
                stop_reason="tool_use",
                content=[call],
                usage=Usage(input_tokens=10, output_tokens=2),
                cost_usd=Decimal("0.00002"),
                decision=StepDecision.TOOLS,
                started_at=T0,
                finished_at=T0,
                duration_ms=1,
            )
        )
        results[(n, f"toolu_{n}")] = ToolOutcome(tool_use_id=f"toolu_{n}", name="calculator", content=content)
    return RunHistory(run=run(steps), steps=records, tool_results=results)


def results_of(messages: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [
        (block["tool_use_id"], block["content"])
        for message in messages
        if message["role"] == "user" and isinstance(message["content"], list)
        for block in message["content"]
        if block["type"] == "tool_result"
    ]


def test_a_conversation_under_the_trigger_is_sent_whole() -> None:
    # Given 3 steps of 16,000-character results (about 16,000 estimated tokens, under the 30,000 trigger)
    h = history(3)
    # Then nothing is cleared
    assert cleared_before(h, POLICY) == 0
    assert all(content == BIG for _, content in results_of(build_conversation(h)))


def test_past_the_trigger_the_oldest_results_are_cleared_to_the_target_and_every_call_keeps_its_result() -> None:
    # Given 6 steps of big results: about 32,000 estimated tokens, past the trigger
    h = history(6)
    bound = cleared_before(h, POLICY)
    messages = build_conversation(h, clear_before=bound)
    # Then the oldest results are cleared until the estimate is under the target, the latest ones sent whole
    sent = results_of(messages)
    assert [call for call, _ in sent] == [f"toolu_{n}" for n in range(6)]  # every tool_use still has its result
    assert [content == CLEARED for _, content in sent] == [n < bound for n in range(6)]
    assert 0 < bound <= 6 - POLICY.keep_steps
    assert estimate_tokens(messages) <= POLICY.target_tokens + 2_000  # (the per-message framing the replay ignores)
    assert estimate_tokens(build_conversation(h)) > POLICY.trigger_tokens


def test_the_latest_keep_steps_results_are_never_cleared_even_over_the_target() -> None:
    policy = ContextPolicy(trigger_tokens=1_000, target_tokens=500, keep_steps=3)
    bound = cleared_before(history(10), policy)
    assert bound == 7  # steps 7, 8 and 9 keep their results, however large


def test_clearing_moves_in_batches_so_the_prompt_between_two_clearings_only_grows() -> None:
    # Given a run growing one big result a step, for 60 steps
    bounds = [cleared_before(history(n), POLICY) for n in range(1, 61)]
    # Then the bound never moves back, moves rarely, and a step that does not move it sends the previous prompt
    # and more (what the prompt cache needs to serve the prefix)
    assert bounds == sorted(bounds)
    moves = [n for n in range(1, len(bounds)) if bounds[n] != bounds[n - 1]]
    assert 3 <= len(moves) <= 60 // 3
    for n in range(1, 60):
        if bounds[n] == bounds[n - 1]:
            before = build_conversation(history(n), clear_before=bounds[n - 1])
            after = build_conversation(history(n + 1), clear_before=bounds[n])
            assert after[: len(before) - 1] == before[:-1]  # the last user message gains the new step's result
    # And at every length the prompt stays within the trigger
    for n in (20, 40, 60):
        h = history(n)
        assert estimate_tokens(build_conversation(h, clear_before=cleared_before(h, POLICY))) <= POLICY.trigger_tokens


def test_a_300_step_conversation_of_100kb_results_stays_within_a_200k_window_with_the_default_policy() -> None:
    h = history(300)
    request = model_request(h, "claude-haiku-4-5", system="s", toolbox=builtin_registry(), cache_ttl="5m",
                            context=ContextPolicy())  # fmt: skip
    whole = estimate_tokens([request.system, request.tools, request.messages])
    assert request.cleared_before > 0 and whole <= ContextPolicy().trigger_tokens + 2_000
    assert whole < 200_000 * 3 / 4  # (the estimate is 3 bytes a token: 4 is typical, so the real count is lower)
    assert estimate_tokens(model_request(h, "m", system="s", toolbox=builtin_registry(), cache_ttl=None).messages) > (
        1_000_000
    )  # without the policy: several times any window


def test_a_call_with_no_policy_or_no_results_clears_nothing() -> None:
    h = history(12)
    assert model_request(h, "m", system="s", toolbox=builtin_registry(), cache_ttl=None).cleared_before == 0
    assert cleared_before(history(12, content="42"), POLICY) == 0


@pytest.mark.parametrize(("trigger", "target", "keep"), [(100, 200, 1), (100, 0, 1), (100, 50, 0)])
def test_a_policy_that_cannot_work_is_refused(trigger: int, target: int, keep: int) -> None:
    with pytest.raises(ValueError, match="ContextPolicy needs"):
        ContextPolicy(trigger_tokens=trigger, target_tokens=target, keep_steps=keep)


def test_each_call_sent_with_more_results_cleared_is_an_agent_thread_context_compacted_event() -> None:
    # Given a run whose steps 5 and 9 were the first sent with more of the oldest results cleared
    h = history(12)
    bounds = [0, 0, 0, 0, 0, 4, 4, 4, 4, 8, 8, 8]
    h = replace(h, steps=[r.model_copy(update={"cleared_before": b}) for r, b in zip(h.steps, bounds, strict=True)])
    events = SessionView(h).events()
    # Then one event says so for each, inside that step's model request span (after its start, before its end)
    compacted = [(i, e) for i, e in enumerate(events) if e["type"] == "agent.thread_context_compacted"]
    assert [e["cleared_before_step"] for _, e in compacted] == [4, 8]
    for i, event in compacted:
        assert events[i - 1]["type"] == "span.model_request_start" or events[i - 1]["type"].startswith("agent.")
        assert events[i + 1]["type"] == "span.model_request_end"
        assert event["id"][:-3] == events[i + 1]["id"][:-3]  # the same step's


def session(steps: int) -> RunHistory:
    """A session of ``steps`` steps, made anew: a turn every 10 steps (the user's message before its first step),
    each step calling one tool with a 16,000-character result, every third one saying something too."""
    made = history(steps)
    turns = list(range(0, steps, 10))
    said = {"type": "text", "text": "reading the next report"}
    records = [r.model_copy(update={"content": [dict(said), *r.content]}) if r.step % 3 == 0 else r for r in made.steps]
    events = [
        UserEvent(id=f"sevt_{k + 1:04d}_0", type="user.message", turn=k + 1, processed_at=T0,
                  body={"content": [{"type": "text", "text": f"Read reports {first} to {first + 9}."}]})
        for k, first in enumerate(turns)
    ]  # fmt: skip
    turned = made.run.model_copy(update={"turns": [Turn(first_step=first, started_at=T0) for first in turns]})
    return RunHistory(run=turned, steps=records, tool_results=made.tool_results, user_events=events)


def stored(h: RunHistory) -> str:
    """Everything a history holds, as JSON."""
    results = [[*key, outcome.model_dump(mode="json")] for key, outcome in h.tool_results.items()]
    return json.dumps([h.run.model_dump(mode="json"), [r.model_dump(mode="json") for r in h.steps], results,
                       [e.model_dump(mode="json") for e in h.user_events]])  # fmt: skip


def test_each_step_s_request_is_byte_identical_to_one_built_from_scratch() -> None:
    # Given a session growing one big result a step for 90 steps, its records, results and events the same objects
    # from step to step (as a container's history cache keeps them), its oldest results cleared many times
    whole = session(90)
    toolbox = builtin_registry()
    sent: list[str] = []
    for n in range(1, 91):
        turns = [turn for turn in whole.run.turns if turn.first_step < n]
        grown = RunHistory(run=whole.run.model_copy(update={"turns": turns, "completed_steps": n}),
                           steps=whole.steps[:n],
                           tool_results={k: v for k, v in whole.tool_results.items() if k[0] < n},
                           user_events=whole.user_events[: len(turns)])  # fmt: skip
        before = stored(grown)
        request = model_request(grown, "claude-haiku-4-5", system="s", toolbox=toolbox, cache_ttl="5m", context=POLICY)
        # Then it is the request built from a history made anew (nothing of an earlier step's request leaks into
        # this one, e.g. a marker placed on a shared block), and the history is left as it was
        fresh = session(90)
        anew = RunHistory(run=grown.run, steps=fresh.steps[:n], tool_results=dict(grown.tool_results),
                          user_events=fresh.user_events[: len(turns)])  # fmt: skip
        scratch = model_request(anew, "claude-haiku-4-5", system="s", toolbox=toolbox, cache_ttl="5m", context=POLICY)
        assert request.model_dump_json() == scratch.model_dump_json()
        assert stored(grown) == before
        assert count_breakpoints(request) == 4
        sent.append(request.model_dump_json())
    assert len({json.loads(request)["cleared_before"] for request in sent}) >= 5  # cleared several times
    assert sum('"cache_control"' in json.dumps(m) for m in json.loads(sent[-1])["messages"]) == 2
