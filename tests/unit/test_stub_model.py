"""The offline stub model: asks for the built-in tools like a model would, answers from their results, labelled."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from functions.adapters.stub_model import STUB_LABEL, STUB_PROVIDER, OfflineStubModel, find_expressions
from functions.agent.models import ModelRequest, ModelResponse
from functions.tools import builtin_registry

REGISTRY = builtin_registry(now=lambda: datetime(2026, 1, 15, 12, 0, tzinfo=UTC))
ALL_TOOLS = REGISTRY.names


def ask(text: str, tools: list[str] | None = None) -> ModelResponse:
    request = ModelRequest(
        model="claude-haiku-4-5",
        system="You are a helpful agent.",
        messages=[{"role": "user", "content": text}],
        tools=REGISTRY.schemas(ALL_TOOLS if tools is None else tools),
        max_tokens=256,
    )
    return OfflineStubModel().create(request)


def follow_up(text: str, tools: list[str] | None = None) -> tuple[ModelResponse, ModelResponse]:
    """Ask, run the requested tools through the real registry, and send their results back like the service does."""
    allowed = ALL_TOOLS if tools is None else tools
    first = ask(text, allowed)
    results: list[dict[str, Any]] = []
    for call in first.tool_calls():
        outcome = REGISTRY.execute(call, allowed)
        results.append(
            {"type": "tool_result", "tool_use_id": call.id, "content": outcome.content, "is_error": outcome.is_error}
        )
    request = ModelRequest(
        model="claude-haiku-4-5",
        messages=[
            {"role": "user", "content": text},
            {"role": "assistant", "content": first.content},
            {"role": "user", "content": results},
        ],
        tools=REGISTRY.schemas(allowed),
        max_tokens=256,
    )
    return first, OfflineStubModel().create(request)


@pytest.mark.parametrize(
    ("text", "expression"),
    [
        ("What is 12*(3+4)?", "12*(3+4)"),
        ("Compute 17 * 23.", "17 * 23"),
        ("What is 2^10?", "2**10"),
        ("Please give me sqrt(16)", "sqrt(16)"),
        ("How much is 1.5 / 3", "1.5 / 3"),
    ],
)
def test_asks_for_the_calculator_with_the_arithmetic_it_finds(text: str, expression: str) -> None:
    response = ask(text)

    assert response.stop_reason == "tool_use"
    calls = response.tool_calls()
    assert [(c.name, c.input) for c in calls] == [("calculator", {"expression": expression})]
    assert calls[0].id.startswith("toolu_stub_")
    assert STUB_LABEL in response.text()


def test_finds_several_expressions() -> None:
    calls = ask("Compute 2^10 and sqrt(16) please.").tool_calls()

    assert [c.input["expression"] for c in calls] == ["2**10", "sqrt(16)"]
    assert len({c.id for c in calls}) == 2  # ids are unique within the turn


def test_plain_numbers_are_not_arithmetic() -> None:
    assert find_expressions("I have 3 apples and 42 pears") == []
    assert find_expressions("what is 6 * 7") == ["6 * 7"]


@pytest.mark.parametrize(
    ("text", "zone"),
    [
        ("What time is it in Europe/Berlin?", "Europe/Berlin"),
        ("What is the date today in America/New_York?", "America/New_York"),
        ("What time is it now?", "UTC"),
    ],
)
def test_asks_for_current_time_when_asked_the_time(text: str, zone: str) -> None:
    response = ask(text)

    assert response.stop_reason == "tool_use"
    assert [(c.name, c.input) for c in response.tool_calls()] == [("current_time", {"timezone": zone})]


def test_answers_from_calculator_results_with_the_label() -> None:
    first, answer = follow_up("What is 12*(3+4)?")

    assert first.stop_reason == "tool_use"
    assert answer.stop_reason == "end_turn"
    assert answer.tool_calls() == []
    text = answer.text()
    assert text.startswith(STUB_LABEL)
    assert 'calculator({"expression": "12*(3+4)"}) = 84' in text


def test_answers_from_current_time_results() -> None:
    _, answer = follow_up("What time is it in Asia/Tokyo?")

    assert STUB_LABEL in answer.text()
    assert "2026-01-15T21:00:00+09:00" in answer.text()


def test_reports_failed_tool_results_as_failures() -> None:
    _, answer = follow_up("What is 1/0?")

    assert "failed: calculator failed: division by zero" in answer.text()
    assert STUB_LABEL in answer.text()


@pytest.mark.parametrize("text", ["Tell me a joke", "Summarise the French revolution", "hello"])
def test_says_clearly_that_no_model_was_called_when_nothing_matches(text: str) -> None:
    response = ask(text)

    assert response.stop_reason == "end_turn"
    assert response.tool_calls() == []
    assert response.text().startswith(STUB_LABEL)
    assert "no model was called" in response.text()
    assert "ANTHROPIC_API_KEY" in response.text()


def test_respects_the_allowed_tools() -> None:
    # Given a run without the calculator
    # When asked arithmetic, it does not ask for the calculator
    response = ask("What is 2+2?", tools=["current_time"])

    assert "calculator" not in [c.name for c in response.tool_calls()]
    assert response.stop_reason == "end_turn"
    assert "no model was called" in response.text()


def test_respects_the_allowed_tools_for_time() -> None:
    response = ask("What is 2+2 and what time is it?", tools=["calculator"])

    assert [c.name for c in response.tool_calls()] == ["calculator"]


def test_no_tools_at_all_means_no_tool_calls() -> None:
    response = ask("What time is it? And 3*3?", tools=[])

    assert response.tool_calls() == []
    assert response.stop_reason == "end_turn"


def test_provider_model_and_usage() -> None:
    response = ask("What is 3*3?")
    _, answer = follow_up("What is 3*3?")

    for r in (response, answer):
        assert r.provider == STUB_PROVIDER == "offline-stub"
        assert OfflineStubModel.provider == "offline-stub"
        assert r.model == "claude-haiku-4-5"
        assert r.usage.input_tokens > 0
        assert r.usage.output_tokens > 0
        assert r.usage.cache_creation_input_tokens == 0
        assert r.usage.cache_read_input_tokens == 0
    # The follow-up prompt is longer, so its estimated input is larger
    assert answer.usage.input_tokens > response.usage.input_tokens
