"""Tool registry: a tool is a Python function with a pydantic input model.

The JSON schema the model sees is derived from the input model; input that fails validation
becomes an error result the model sees, never a crash.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from functions.agent.errors import UnknownToolError
from functions.agent.models import ToolCall, ToolError, ToolOutcome

MAX_RESULT_CHARS = 16_000


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    input_model: type[BaseModel]
    fn: Callable[[Any], str]  # receives an instance of input_model

    def schema(self) -> dict[str, Any]:
        schema = self.input_model.model_json_schema()
        schema.pop("title", None)
        return {"name": self.name, "description": self.description, "input_schema": schema}


class ToolRegistry:
    """The deployment's tools (the core's ``Toolbox`` port)."""

    def __init__(self, tools: Iterable[Tool] = ()) -> None:
        self._tools: dict[str, Tool] = {}
        for tool in tools:
            self.register(tool)

    def register(self, tool: Tool) -> None:
        if tool.name in self._tools:
            raise ValueError(f"tool {tool.name!r} is registered twice")
        self._tools[tool.name] = tool

    @property
    def names(self) -> list[str]:
        return sorted(self._tools)

    def check(self, names: Iterable[str]) -> list[str]:
        """Return the names, or raise UnknownToolError naming the unknown ones."""
        names = list(names)
        unknown = [name for name in names if name not in self._tools]
        if unknown:
            raise UnknownToolError(f"unknown tools: {', '.join(unknown)}; available: {', '.join(self.names)}")
        return names

    def schemas(self, names: Iterable[str]) -> list[dict[str, Any]]:
        return [self._tools[name].schema() for name in self.check(names)]

    def execute(self, call: ToolCall, allowed: Iterable[str]) -> ToolOutcome:
        started = time.perf_counter()

        def outcome(content: str, error: ToolError | None = None) -> ToolOutcome:
            if len(content) > MAX_RESULT_CHARS:
                content = content[:MAX_RESULT_CHARS] + f"... [truncated, {len(content)} chars]"
            return ToolOutcome(
                tool_use_id=call.id,
                name=call.name,
                content=content,
                is_error=error is not None,
                error_kind=error,
                duration_ms=int((time.perf_counter() - started) * 1000),
            )

        tool = self._tools.get(call.name)
        if tool is None or call.name not in set(allowed):
            return outcome(f"tool {call.name!r} is not available to this run", ToolError.UNAVAILABLE)
        try:
            arguments = tool.input_model.model_validate(call.input)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or 'input'}: {err['msg']}" for err in exc.errors()
            )
            return outcome(f"invalid input for {call.name}: {problems}", ToolError.INVALID_INPUT)
        try:
            return outcome(tool.fn(arguments))
        except ToolInputError as exc:
            return outcome(f"{call.name} failed: {exc}", ToolError.REJECTED)
        except Exception as exc:  # a tool bug must not lose the run: the model sees it and can recover
            return outcome(f"{call.name} raised {type(exc).__name__}: {exc}", ToolError.CRASHED)


class ToolInputError(ValueError):
    """A tool rejects its (schema-valid) input; the message goes back to the model."""
