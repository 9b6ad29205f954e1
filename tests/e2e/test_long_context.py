"""A run whose tool results outgrow the model's context window completes on the local stack: its oldest results are
cleared (functions/agent/conversation.py) before the prompt reaches the window, and the fake Messages API, which
refuses a prompt over 200,000 tokens as the real one does, never has to refuse one."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from functions.adapters import wiring
from functions.agent.conversation import CLEARED
from stepwise.local.stack import LocalStack
from tests.e2e.conftest import http, wait
from tests.e2e.test_managed_agents import answer, tool_use
from tests.fakes.anthropic_server import CONTEXT_WINDOW, FakeAnthropic, prompt_tokens
from tests.fakes.report_tool import big_report

pytestmark = pytest.mark.e2e
STEPS = 60


@pytest.fixture
def report_tool(monkeypatch: pytest.MonkeyPatch, fake_api: FakeAnthropic) -> Iterator[FakeAnthropic]:
    monkeypatch.setattr(wiring, "deployer_tools", lambda: [big_report.__stepwise_tool__])  # type: ignore[attr-defined]
    wiring.reset()
    yield fake_api


def cleared_results(request: dict[str, Any]) -> int:
    return sum(
        1
        for message in request["messages"]
        if isinstance(message["content"], list)
        for block in message["content"]
        if block.get("type") == "tool_result" and block.get("content") == CLEARED
    )


def test_a_60_step_run_of_100_kb_results_never_sends_a_prompt_over_the_window(
    stack: LocalStack, report_tool: FakeAnthropic
) -> None:
    # Given a model that reads one 100 KB report a step for 59 steps (the model sees 16,000 characters of each:
    # 59 of them are about 240,000 of the fake's tokens, past its 200,000-token window), then answers
    report_tool.script = [tool_use((f"toolu_{n}", "big_report", {"n": n})) for n in range(STEPS - 1)]
    report_tool.script.append(answer("All 59 reports read."))
    # When the run goes
    status, created = http(stack, "POST", "/runs", {"input": "Read the reports.", "tools": ["big_report"],
                                                    "budget": {"max_steps": STEPS}})  # fmt: skip
    assert status == 202, created
    run = wait(stack, created["run_id"], timeout=600)
    # Then it finished, each step called the model once, and no prompt was refused or near the window
    assert run["status"] == "SUCCEEDED" and run["steps"] == STEPS, run
    sizes = [prompt_tokens(request) for request in report_tool.requests]
    assert len(sizes) == STEPS and max(sizes) < CONTEXT_WINDOW * 0.7
    # And the prompts were big enough to need it: the oldest results were cleared, more as the run grew
    cleared = [cleared_results(request) for request in report_tool.requests]
    assert cleared[:10] == [0] * 10 and cleared[-1] >= STEPS // 2 and cleared == sorted(cleared)
    assert (STEPS - 1) * 16_000 / 4 > CONTEXT_WINDOW  # whole, the last prompt would not have fit
    # And each step says from which step its call's results were cleared
    _, steps = http(stack, "GET", f"/runs/{created['run_id']}/steps")
    bounds = [step["cleared_before"] for step in steps["steps"]]
    assert bounds == sorted(bounds) and bounds[-1] == cleared[-1] and bounds[0] == 0
