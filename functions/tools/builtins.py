"""Built-in tools: ``calculator`` (safe arithmetic, no eval) and ``current_time``."""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable
from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field

from functions.tools.registry import FAST_MAX_TIMEOUT_SECONDS, Tool, ToolInputError, ToolRegistry

MAX_EXPRESSION_CHARS = 500
MAX_EXPONENT = 1_000
MAX_MAGNITUDE = 10**100
MAX_ROUND_DIGITS = 100

_BINARY: dict[type[ast.operator], Callable[[float, float], float]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: dict[type[ast.unaryop], Callable[[float], float]] = {ast.UAdd: operator.pos, ast.USub: operator.neg}
_FUNCTIONS: dict[str, Callable[..., float]] = {
    "sqrt": math.sqrt,
    "abs": abs,
    "round": round,
    "min": min,
    "max": max,
}


class CalculatorInput(BaseModel):
    model_config = ConfigDict(defer_build=True)
    expression: str = Field(
        min_length=1,
        max_length=MAX_EXPRESSION_CHARS,
        description="Arithmetic expression: numbers, + - * / // % **, parentheses, sqrt abs round min max.",
    )


class CurrentTimeInput(BaseModel):
    model_config = ConfigDict(defer_build=True)
    timezone: str = Field(
        default="UTC", min_length=1, max_length=64, description="IANA time zone name, e.g. Europe/Berlin"
    )


def evaluate(expression: str) -> float | int:
    """Evaluate arithmetic by walking the AST. Raises ToolInputError for anything else."""
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError as exc:
        raise ToolInputError(f"not an arithmetic expression: {exc.msg}") from exc
    return _eval(tree.body)


def _eval(node: ast.expr) -> float | int:
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float) and not isinstance(node.value, bool):
        return _bounded(node.value)
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _eval(node.left), _eval(node.right)
        if isinstance(node.op, ast.Pow) and abs(right) > MAX_EXPONENT:
            raise ToolInputError(f"exponent {right} is larger than {MAX_EXPONENT}")
        try:
            result = _BINARY[type(node.op)](left, right)
        except ZeroDivisionError as exc:
            raise ToolInputError("division by zero") from exc
        except OverflowError as exc:
            raise ToolInputError("result is too large") from exc
        return _bounded(result)
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_eval(node.operand))
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in _FUNCTIONS
        and not node.keywords
    ):
        args = [_eval(arg) for arg in node.args]
        if (
            node.func.id == "round"
            and len(args) == 2
            and not (isinstance(args[1], int) and abs(args[1]) <= MAX_ROUND_DIGITS)
        ):
            raise ToolInputError(
                f"round: ndigits must be a whole number between -{MAX_ROUND_DIGITS} and {MAX_ROUND_DIGITS}"
            )
        try:
            return _bounded(_FUNCTIONS[node.func.id](*args))
        except (TypeError, ValueError) as exc:
            raise ToolInputError(f"{node.func.id}: {exc}") from exc
    raise ToolInputError(
        f"unsupported element {ast.unparse(node)!r}: only numbers, operators and {', '.join(_FUNCTIONS)}"
    )


def _bounded(value: float | int) -> float | int:
    if isinstance(value, complex):
        raise ToolInputError("result is not a real number")
    if isinstance(value, float) and not math.isfinite(value):
        raise ToolInputError("result is too large" if math.isinf(value) else "result is not a number")
    if abs(value) > MAX_MAGNITUDE:
        raise ToolInputError("result is too large")
    return value


def calculator(arguments: CalculatorInput) -> str:
    result = evaluate(arguments.expression)
    if isinstance(result, float) and result.is_integer() and abs(result) < 2**53:
        result = int(result)
    return str(result)


def make_current_time(now: Callable[[], datetime]) -> Callable[[CurrentTimeInput], str]:
    def current_time(arguments: CurrentTimeInput) -> str:
        try:
            zone = ZoneInfo(arguments.timezone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ToolInputError(f"unknown time zone {arguments.timezone!r}") from exc
        return now().astimezone(zone).isoformat(timespec="seconds")

    return current_time


def builtin_registry(now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> ToolRegistry:
    return ToolRegistry(
        [
            Tool(
                name="calculator",
                description="Evaluate an arithmetic expression exactly and return the number.",
                input_model=CalculatorInput,
                fn=calculator,
                timeout_seconds=FAST_MAX_TIMEOUT_SECONDS,
                fast=True,
            ),
            Tool(
                name="current_time",
                description="Return the current date and time in ISO 8601 for a time zone.",
                input_model=CurrentTimeInput,
                fn=make_current_time(now),
                timeout_seconds=FAST_MAX_TIMEOUT_SECONDS,
                fast=True,
            ),
        ]
    )
