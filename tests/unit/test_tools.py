"""Built-in tools and the tool registry: safe arithmetic, the injected clock, schemas and error results."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import BaseModel

from functions.agent.models import ToolCall, ToolError, ToolOutcome
from functions.agent.results import VIEW_CHARS
from functions.tools import Tool, ToolRegistry, UnknownToolError, builtin_registry
from functions.tools.builtins import MAX_EXPRESSION_CHARS, CalculatorInput

FIXED_NOW = datetime(2026, 1, 15, 12, 0, 0, tzinfo=UTC)
ALL_TOOLS = ["calculator", "current_time"]


@pytest.fixture
def registry() -> ToolRegistry:
    return builtin_registry(now=lambda: FIXED_NOW)


def call(
    registry: ToolRegistry, name: str, tool_input: dict[str, Any], allowed: list[str] | None = None
) -> ToolOutcome:
    return registry.execute(
        ToolCall(id="toolu_1", name=name, input=tool_input), ALL_TOOLS if allowed is None else allowed
    )


def calc(registry: ToolRegistry, expression: str) -> ToolOutcome:
    return call(registry, "calculator", {"expression": expression})


# --- calculator: arithmetic -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("1 + 2", "3"),
        ("2 + 3 * 4", "14"),  # precedence
        ("(2 + 3) * 4", "20"),  # parentheses
        ("2 ** 3 ** 2", "512"),  # ** is right-associative
        ("-3 + 1", "-2"),  # unary minus
        ("-(2 + 3)", "-5"),
        ("+7", "7"),
        ("10 - 2 - 3", "5"),  # left-associative
        ("10 / 4", "2.5"),  # true division gives a float
        ("8 / 2", "4"),  # an integral float is shown as an int
        ("7 // 2", "3"),
        ("7 % 3", "1"),
        ("2 ** -2", "0.25"),
        ("sqrt(16)", "4"),
        ("sqrt(2)", "1.4142135623730951"),
        ("abs(-2.5)", "2.5"),
        ("round(2.567, 2)", "2.57"),
        ("round(2.5)", "2"),
        ("min(3, 1, 2)", "1"),
        ("max(1, 5, 3)", "5"),
        ("max(1, sqrt(81)) * 2", "18"),
        ("  12 * (3 + 4)  ", "84"),  # surrounding blanks are ignored
        ("1.5 * 2", "3"),
    ],
)
def test_calculator_computes_correct_results(registry: ToolRegistry, expression: str, expected: str) -> None:
    # When the calculator evaluates the expression
    outcome = calc(registry, expression)

    # Then it returns the exact result as text, not an error
    assert outcome.is_error is False, outcome.content
    assert outcome.content == expected
    assert outcome.tool_use_id == "toolu_1"
    assert outcome.name == "calculator"


@pytest.mark.parametrize(
    "expression",
    [
        "__import__('os')",
        "__import__('os').system('true')",
        "().__class__",
        "(1).__class__.__bases__",
        "open('x')",
        "print(1)",
        "eval('1+1')",
        "lambda: 1",
        "[x for x in (1, 2)]",
        "{x: 1 for x in (1,)}",
        "x",
        "math.sqrt(4)",  # attribute call, even of an allowed function name
        "sqrt(x=4)",  # keyword arguments
        "'a' * 3",  # strings are not numbers
        "True + 1",  # booleans are not numbers
        "1j * 2",  # complex numbers
        "1 if 1 else 2",
        "1 < 2",
        "~1",
        "not 1",
        "[1, 2]",
        "max(*(1, 2))",
    ],
)
def test_calculator_rejects_anything_but_arithmetic(registry: ToolRegistry, expression: str) -> None:
    # When the expression contains names, attributes, calls or syntax other than arithmetic
    outcome = calc(registry, expression)

    # Then it becomes an error result with a clear message, never an evaluation or a crash
    assert outcome.is_error is True
    assert outcome.content.startswith("calculator failed: ")
    assert "unsupported element" in outcome.content
    assert "only numbers, operators and sqrt, abs, round, min, max" in outcome.content


def test_calculator_reports_syntax_errors(registry: ToolRegistry) -> None:
    outcome = calc(registry, "2 +* (3")

    assert outcome.is_error is True
    assert outcome.content.startswith("calculator failed: not an arithmetic expression")


@pytest.mark.parametrize("expression", ["1 / 0", "1 // 0", "5 % 0", "1.0 / 0.0", "1 / (2 - 2)"])
def test_calculator_refuses_division_by_zero(registry: ToolRegistry, expression: str) -> None:
    outcome = calc(registry, expression)

    assert outcome.is_error is True
    assert outcome.content == "calculator failed: division by zero"


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("2 ** 10 ** 10", "exponent 10000000000 is larger than 1000"),
        ("2 ** 1001", "exponent 1001 is larger than 1000"),
        ("2 ** -5000", "exponent -5000 is larger than 1000"),
        ("10 ** 101", "result is too large"),
        ("10 ** 100 * 10", "result is too large"),
        ("-(10 ** 100) - 1", "result is too large"),
        ("10.0 ** 400", "result is too large"),  # float overflow
        ("(-8) ** 0.5", "result is not a real number"),
        ("sqrt(-1)", "sqrt: math domain error"),
        ("min()", "min:"),
    ],
)
def test_calculator_refuses_huge_or_invalid_results(registry: ToolRegistry, expression: str, message: str) -> None:
    # When the result would be huge (or not real), the calculator refuses instead of computing it
    outcome = calc(registry, expression)

    assert outcome.is_error is True
    assert outcome.content.startswith("calculator failed: ")
    assert message in outcome.content


def test_calculator_accepts_results_up_to_the_bound(registry: ToolRegistry) -> None:
    outcome = calc(registry, "10 ** 100")

    assert outcome.is_error is False
    assert outcome.content == "1" + "0" * 100


@pytest.mark.parametrize("expression", ["1e200", "1e400", "-1e400", "1e400 - 1e400"])
def test_calculator_refuses_huge_literals(registry: ToolRegistry, expression: str) -> None:
    outcome = calc(registry, expression)

    assert outcome.is_error is True
    assert "too large" in outcome.content or "not a number" in outcome.content


@pytest.mark.parametrize("expression", ["round(1, -10 ** 6)", "round(1, -10 ** 100)", "round(2.5, 0.5)"])
def test_calculator_refuses_round_with_huge_or_fractional_ndigits(registry: ToolRegistry, expression: str) -> None:
    # round(1, -n) builds 10**n: unbounded ndigits would be a denial of service
    outcome = calc(registry, expression)

    assert outcome.is_error is True
    assert "ndigits must be a whole number" in outcome.content


def test_calculator_limits_expression_length(registry: ToolRegistry) -> None:
    # Given an expression one character longer than the limit
    too_long = "1+" * (MAX_EXPRESSION_CHARS // 2) + "1"
    assert len(too_long) == MAX_EXPRESSION_CHARS + 1

    # When it is executed
    outcome = calc(registry, too_long)

    # Then validation refuses it before any evaluation
    assert outcome.is_error is True
    assert outcome.content.startswith("invalid input for calculator: expression:")
    assert str(MAX_EXPRESSION_CHARS) in outcome.content

    # And an expression exactly at the limit is evaluated
    at_limit = "1+" * (MAX_EXPRESSION_CHARS // 2 - 1) + "1" + " "
    assert len(at_limit) == MAX_EXPRESSION_CHARS
    assert calc(registry, at_limit).content == str(MAX_EXPRESSION_CHARS // 2)


@pytest.mark.parametrize(
    ("tool_input", "problem"),
    [
        ({}, "expression: Field required"),
        ({"expr": "1+1"}, "expression: Field required"),
        ({"expression": 5}, "expression: Input should be a valid string"),
        ({"expression": None}, "expression: Input should be a valid string"),
        ({"expression": ["1+1"]}, "expression: Input should be a valid string"),
        ({"expression": {"op": "+", "args": [1, 1]}}, "expression: Input should be a valid string"),
        ({"expression": ""}, "expression: String should have at least 1 character"),
    ],
)
def test_invalid_input_becomes_an_error_result(
    registry: ToolRegistry, tool_input: dict[str, Any], problem: str
) -> None:
    # When the model sends input that does not match the tool's schema
    outcome = call(registry, "calculator", tool_input)

    # Then it sees an error result naming the problem, and nothing raises
    assert outcome.is_error is True
    assert outcome.content.startswith("invalid input for calculator: ")
    assert problem in outcome.content


def test_unknown_tool_is_an_error_result(registry: ToolRegistry) -> None:
    outcome = call(registry, "shell", {"command": "rm -rf /"}, allowed=["shell", *ALL_TOOLS])

    assert outcome.is_error is True
    assert outcome.content == "tool 'shell' is not available to this run"


def test_tool_not_allowed_for_the_run_is_an_error_result(registry: ToolRegistry) -> None:
    # Given a run that may only use current_time
    # When the model calls the (registered) calculator
    outcome = call(registry, "calculator", {"expression": "1+1"}, allowed=["current_time"])

    # Then it is refused and the tool is not run
    assert outcome.is_error is True
    assert outcome.content == "tool 'calculator' is not available to this run"


def test_a_tool_raising_unexpectedly_becomes_an_error_result_naming_the_exception() -> None:
    # Given a buggy tool
    class Empty(BaseModel):
        pass

    def broken(_: Empty) -> str:
        raise KeyError("missing")

    registry = ToolRegistry([Tool(name="broken", description="always fails", input_model=Empty, fn=broken)])

    # When it is executed
    outcome = call(registry, "broken", {}, allowed=["broken"])

    # Then the run does not crash: the model sees the exception type and message
    assert outcome.is_error is True
    assert outcome.content == "broken raised KeyError: 'missing'"


def test_the_registry_returns_a_long_result_whole_with_its_size() -> None:
    class Empty(BaseModel):
        pass

    size = VIEW_CHARS + 500
    registry = ToolRegistry([Tool(name="big", description="returns a lot", input_model=Empty, fn=lambda _: "x" * size)])

    outcome = call(registry, "big", {}, allowed=["big"])

    # the view the model sees is cut where the result is stored (functions/agent/results.py), not here
    assert outcome.is_error is False
    assert outcome.content == "x" * size
    assert outcome.size == size


def test_a_tool_that_overruns_its_timeout_gets_a_timed_out_result() -> None:
    class Empty(BaseModel):
        pass

    release = threading.Event()
    slow = Tool(name="slow", description="waits", input_model=Empty, fn=lambda _: release.wait(5) and "late",
                idempotent=False, timeout_seconds=0.05)  # fmt: skip
    try:
        outcome = call(ToolRegistry([slow]), "slow", {}, allowed=["slow"])
    finally:
        release.set()

    assert outcome.is_error is True
    assert outcome.error_kind is ToolError.TIMED_OUT
    assert outcome.content == "slow did not finish within 0.05 s; it may have had its effect, and is not run again"


def test_a_tool_that_returns_no_text_is_a_crash_result() -> None:
    class Empty(BaseModel):
        pass

    registry = ToolRegistry([Tool(name="number", description="d", input_model=Empty, fn=lambda _: 5)])

    outcome = call(registry, "number", {}, allowed=["number"])

    assert (outcome.is_error, outcome.error_kind, outcome.content) == (
        True, ToolError.CRASHED, "number returned int, not text",
    )  # fmt: skip


def test_timeouts_are_bounded_by_the_tool_function() -> None:
    class Empty(BaseModel):
        pass

    with pytest.raises(ValueError, match="timeout_seconds must be in"):
        Tool(name="forever", description="d", input_model=Empty, fn=lambda _: "", timeout_seconds=3600)


# --- current_time -----------------------------------------------------------------------------------------


def test_current_time_uses_the_injected_clock_in_utc_by_default(registry: ToolRegistry) -> None:
    outcome = call(registry, "current_time", {})

    assert outcome.is_error is False
    assert outcome.content == "2026-01-15T12:00:00+00:00"


@pytest.mark.parametrize(
    ("zone", "expected"),
    [
        ("UTC", "2026-01-15T12:00:00+00:00"),
        ("Asia/Tokyo", "2026-01-15T21:00:00+09:00"),
        ("Europe/Berlin", "2026-01-15T13:00:00+01:00"),
        ("America/New_York", "2026-01-15T07:00:00-05:00"),
        ("Asia/Kolkata", "2026-01-15T17:30:00+05:30"),
    ],
)
def test_current_time_converts_time_zones(registry: ToolRegistry, zone: str, expected: str) -> None:
    outcome = call(registry, "current_time", {"timezone": zone})

    assert outcome.is_error is False
    assert outcome.content == expected


def test_current_time_follows_daylight_saving_time() -> None:
    summer = builtin_registry(now=lambda: datetime(2026, 7, 1, 12, 0, tzinfo=UTC))

    outcome = call(summer, "current_time", {"timezone": "Europe/Berlin"})

    assert outcome.content == "2026-07-01T14:00:00+02:00"


def test_current_time_reads_the_clock_on_every_call() -> None:
    instants = iter([datetime(2026, 1, 1, 0, 0, tzinfo=UTC), datetime(2026, 1, 1, 0, 5, tzinfo=UTC)])
    registry = builtin_registry(now=lambda: next(instants))

    first = call(registry, "current_time", {})
    second = call(registry, "current_time", {})

    assert (first.content, second.content) == ("2026-01-01T00:00:00+00:00", "2026-01-01T00:05:00+00:00")


@pytest.mark.parametrize("zone", ["Mars/Olympus_Mons", "Not a zone", "../../etc/passwd", "/etc/localtime"])
def test_current_time_refuses_unknown_zones(registry: ToolRegistry, zone: str) -> None:
    outcome = call(registry, "current_time", {"timezone": zone})

    assert outcome.is_error is True
    assert outcome.content == f"current_time failed: unknown time zone {zone!r}"


# --- registry: schemas, check, registration ---------------------------------------------------------------


def test_schemas_are_derived_from_the_pydantic_input_model(registry: ToolRegistry) -> None:
    (schema,) = registry.schemas(["calculator"])

    assert schema["name"] == "calculator"
    assert schema["description"] == "Evaluate an arithmetic expression exactly and return the number."
    input_schema = schema["input_schema"]
    assert input_schema["type"] == "object"
    assert input_schema["required"] == ["expression"]
    expression = input_schema["properties"]["expression"]
    assert expression["type"] == "string"
    assert expression["maxLength"] == MAX_EXPRESSION_CHARS
    assert expression["description"] == CalculatorInput.model_fields["expression"].description
    assert "title" not in input_schema


def test_schemas_keep_the_requested_order_and_defaults(registry: ToolRegistry) -> None:
    schemas = registry.schemas(["current_time", "calculator"])

    assert [s["name"] for s in schemas] == ["current_time", "calculator"]
    time_schema = schemas[0]["input_schema"]
    assert "required" not in time_schema  # timezone is optional
    assert time_schema["properties"]["timezone"]["default"] == "UTC"


def test_schemas_of_unknown_tools_raise(registry: ToolRegistry) -> None:
    with pytest.raises(UnknownToolError, match="web_search"):
        registry.schemas(["calculator", "web_search"])


def test_check_returns_known_names_and_names_every_unknown_one(registry: ToolRegistry) -> None:
    assert registry.check(["current_time", "calculator"]) == ["current_time", "calculator"]
    assert registry.check(iter(["calculator"])) == ["calculator"]

    with pytest.raises(UnknownToolError) as raised:
        registry.check(["calculator", "shell", "browser"])

    message = str(raised.value)
    assert "unknown tools: shell, browser" in message
    assert "available: calculator, current_time" in message


def test_names_are_sorted(registry: ToolRegistry) -> None:
    assert registry.names == ["calculator", "current_time"]


def test_registering_a_duplicate_name_raises() -> None:
    registry = builtin_registry()
    again = Tool(name="calculator", description="another", input_model=CalculatorInput, fn=lambda _: "0")

    with pytest.raises(ValueError, match="'calculator' is registered twice"):
        registry.register(again)

    with pytest.raises(ValueError, match="registered twice"):
        ToolRegistry([again, again])


def test_a_call_that_times_out_before_a_worker_is_free_never_runs_later() -> None:
    from functions.tools import registry as registry_module

    class Empty(BaseModel):
        pass

    release, ran = threading.Event(), []
    busy = [registry_module._WORKERS.submit(release.wait, 5) for _ in range(registry_module._WORKERS._max_workers)]
    book = Tool(name="book", description="side effects", input_model=Empty, fn=lambda _: ran.append(1) or "booked",
                idempotent=False, timeout_seconds=0.05)  # fmt: skip
    try:
        outcome = call(ToolRegistry([book]), "book", {}, allowed=["book"])
    finally:
        release.set()
    for future in busy:
        future.result(timeout=5)

    assert (outcome.error_kind, outcome.content) == (ToolError.TIMED_OUT, "book did not start within 0.05 s")
    registry_module._WORKERS.submit(lambda: None).result(timeout=5)  # the pool has moved on
    assert ran == []
