"""A tool's definition is built once per container, not on every step."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from functions.tools.registry import Tool, ToolRegistry

built: list[str] = []


class Question(BaseModel):
    text: str

    @classmethod
    def model_json_schema(cls, *args: Any, **kwargs: Any) -> dict[str, Any]:
        built.append(cls.__name__)
        return super().model_json_schema(*args, **kwargs)


def test_schemas_are_built_once_and_each_caller_gets_its_own_top_level() -> None:
    ask = Tool(name="ask", description="Ask.", input_model=Question, fn=lambda _: "")
    registry = ToolRegistry([ask])
    first = registry.schemas(["ask"])
    first[0]["cache_control"] = {"type": "ephemeral"}  # what prompt caching adds to the last definition
    second = registry.schemas(["ask"])
    assert built == ["Question"]
    assert second == [ask.schema()]  # as built: without the marker a caller added to its copy
