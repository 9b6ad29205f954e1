"""Domain models: request validation, usage arithmetic, terminal statuses."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from functions.agent.models import (
    MAX_INPUT_CHARS,
    MAX_METADATA_BYTES,
    MAX_STEPS_LIMIT,
    TERMINAL_STATUSES,
    Budget,
    ModelResponse,
    RunRequest,
    RunStatus,
    Usage,
)


def errors_of(body: dict[str, Any]) -> list[dict[str, Any]]:
    with pytest.raises(ValidationError) as raised:
        RunRequest.model_validate(body)
    return raised.value.errors()


# --- RunRequest -------------------------------------------------------------------------------------------


def test_defaults() -> None:
    request = RunRequest.model_validate({"input": "What is 2+2?"})

    assert request.input == "What is 2+2?"
    assert request.model is None
    assert request.tools is None
    assert request.metadata == {}
    assert request.max_tokens_per_call == 1024
    assert request.budget == Budget(max_usd=None, max_steps=10, max_tokens=None)


@pytest.mark.parametrize("blank", ["", " ", "\n\t  "])
def test_blank_input_is_rejected(blank: str) -> None:
    errors = errors_of({"input": blank})

    assert [e["loc"] for e in errors] == [("input",)]


def test_missing_or_oversized_input_is_rejected() -> None:
    assert errors_of({})[0]["type"] == "missing"
    assert errors_of({"input": "x" * (MAX_INPUT_CHARS + 1)})[0]["type"] == "string_too_long"
    assert RunRequest(input="x" * MAX_INPUT_CHARS).input == "x" * MAX_INPUT_CHARS


def test_blank_message_is_explained() -> None:
    (error,) = errors_of({"input": "   "})

    assert "input must not be blank" in error["msg"]


@pytest.mark.parametrize(
    "body",
    [
        {"input": "hi", "prompt": "hi"},
        {"input": "hi", "budget": {"max_steps": 3, "max_dollars": 1}},
    ],
)
def test_extra_fields_are_rejected(body: dict[str, Any]) -> None:
    errors = errors_of(body)

    assert [e["type"] for e in errors] == ["extra_forbidden"]


@pytest.mark.parametrize("steps", [1, 2, 50, MAX_STEPS_LIMIT])
def test_max_steps_within_bounds_is_accepted(steps: int) -> None:
    assert RunRequest.model_validate({"input": "hi", "budget": {"max_steps": steps}}).budget.max_steps == steps


@pytest.mark.parametrize("steps", [0, -1, MAX_STEPS_LIMIT + 1, 1000])
def test_max_steps_out_of_bounds_is_rejected(steps: int) -> None:
    (error,) = errors_of({"input": "hi", "budget": {"max_steps": steps}})

    assert error["loc"] == ("budget", "max_steps")


def test_max_steps_limit_is_100() -> None:
    assert MAX_STEPS_LIMIT == 100


@pytest.mark.parametrize("budget", [{"max_usd": 0}, {"max_usd": -1}, {"max_tokens": 0}])
def test_budget_limits_must_be_positive(budget: dict[str, Any]) -> None:
    (error,) = errors_of({"input": "hi", "budget": budget})

    assert error["loc"][0] == "budget"


def test_metadata_up_to_the_limit_is_accepted() -> None:
    # {"k": "<value>"} serialises to 9 characters plus the value
    metadata = {"k": "v" * (MAX_METADATA_BYTES - 9)}
    assert len('{"k": ""}') + MAX_METADATA_BYTES - 9 == MAX_METADATA_BYTES

    assert RunRequest(input="hi", metadata=metadata).metadata == metadata


def test_metadata_over_4096_bytes_is_rejected() -> None:
    metadata = {"k": "v" * (MAX_METADATA_BYTES - 8)}

    (error,) = errors_of({"input": "hi", "metadata": metadata})

    assert error["loc"] == ("metadata",)
    assert f"at most {MAX_METADATA_BYTES} bytes" in error["msg"]
    assert MAX_METADATA_BYTES == 4096


@pytest.mark.parametrize("max_tokens", [0, 64_001])
def test_max_tokens_per_call_bounds(max_tokens: int) -> None:
    (error,) = errors_of({"input": "hi", "max_tokens_per_call": max_tokens})

    assert error["loc"] == ("max_tokens_per_call",)


# --- Usage ------------------------------------------------------------------------------------------------


def test_usage_addition_sums_every_field() -> None:
    a = Usage(input_tokens=1, output_tokens=2, cache_creation_input_tokens=3, cache_read_input_tokens=4,
              cache_creation_1h_input_tokens=1)  # fmt: skip
    b = Usage(input_tokens=10, output_tokens=20, cache_creation_input_tokens=30, cache_read_input_tokens=40,
              cache_creation_1h_input_tokens=5)  # fmt: skip

    total = a + b

    assert total == Usage(input_tokens=11, output_tokens=22, cache_creation_input_tokens=33,
                          cache_read_input_tokens=44, cache_creation_1h_input_tokens=6)  # fmt: skip
    assert a.input_tokens == 1  # operands are unchanged
    assert Usage() + a == a


def test_usage_total_tokens_counts_input_output_and_cache_tokens_once() -> None:
    usage = Usage(input_tokens=100, output_tokens=20, cache_creation_input_tokens=300, cache_read_input_tokens=4000,
                  cache_creation_1h_input_tokens=300)  # fmt: skip

    # The 1 h split is part of cache_creation_input_tokens and must not be counted twice
    assert usage.total_tokens == 4420
    assert Usage().total_tokens == 0


def test_usage_is_frozen_and_public_has_the_four_contract_fields() -> None:
    usage = Usage(input_tokens=1, output_tokens=2, cache_creation_input_tokens=3, cache_read_input_tokens=4)

    with pytest.raises(ValidationError):
        usage.input_tokens = 5  # type: ignore[misc]
    assert usage.public() == {
        "input_tokens": 1,
        "output_tokens": 2,
        "cache_creation_input_tokens": 3,
        "cache_read_input_tokens": 4,
    }


# --- RunStatus --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "terminal"),
    [
        (RunStatus.QUEUED, False),
        (RunStatus.RUNNING, False),
        (RunStatus.WAITING_APPROVAL, False),
        (RunStatus.SUCCEEDED, True),
        (RunStatus.FAILED, True),
        (RunStatus.CANCELLED, True),
        (RunStatus.BUDGET_EXCEEDED, True),
        (RunStatus.TIMED_OUT, True),
    ],
)
def test_run_status_terminal(status: RunStatus, terminal: bool) -> None:
    assert status.terminal is terminal


def test_every_status_is_classified() -> None:
    assert {s for s in RunStatus if s.terminal} == TERMINAL_STATUSES
    assert len(RunStatus) == 9  # IDLE: a session turn waiting for its client
    assert RunStatus("SUCCEEDED") is RunStatus.SUCCEEDED


# --- ModelResponse ----------------------------------------------------------------------------------------


def test_model_response_extracts_tool_calls_and_text() -> None:
    response = ModelResponse(
        content=[
            {"type": "text", "text": "Let me "},
            {"type": "tool_use", "id": "toolu_1", "name": "calculator", "input": {"expression": "1+1"}},
            {"type": "text", "text": "compute."},
            {"type": "tool_use", "id": "toolu_2", "name": "current_time"},
        ],
        stop_reason="tool_use",
        usage=Usage(),
        model="m",
        provider="p",
    )

    calls = response.tool_calls()

    assert [(c.id, c.name, c.input) for c in calls] == [
        ("toolu_1", "calculator", {"expression": "1+1"}),
        ("toolu_2", "current_time", {}),
    ]
    assert response.text() == "Let me compute."


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({"input": "\u200b"}, "input must not be blank"),  # a zero-width space
        ({"input": "\x00\u2028"}, "input must not be blank"),
        ({"input": "x", "response_cache": "yes"}, "response_cache"),  # strictly a boolean
        ({"input": "x", "response_cache": 1}, "response_cache"),
        ({"input": "x", "budget": {"max_usd": 1e200}}, "max_usd"),  # more than any table can mean
        ({"input": "x", "budget": {"max_tokens": 10**30}}, "max_tokens"),
    ],
)
def test_run_requests_are_bounded_everywhere(body: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValidationError, match=problem):
        RunRequest.model_validate(body)
