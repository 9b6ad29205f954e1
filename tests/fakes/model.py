"""A scripted ModelClient: returns (or raises) the next scripted item and records every request."""

from __future__ import annotations

from typing import Any

from functions.agent.ledger import estimate_prompt_tokens
from functions.agent.models import ModelRequest, ModelResponse, Usage


def text_response(text: str, *, usage: Usage | None = None, stop_reason: str = "end_turn") -> ModelResponse:
    return ModelResponse(
        content=[{"type": "text", "text": text}],
        stop_reason=stop_reason,
        usage=usage or Usage(input_tokens=100, output_tokens=20),
        model="claude-haiku-4-5",
        provider="scripted",
    )


def tool_response(*calls: tuple[str, str, dict[str, Any]], usage: Usage | None = None) -> ModelResponse:
    return ModelResponse(
        content=[
            {"type": "tool_use", "id": call_id, "name": name, "input": tool_input}
            for call_id, name, tool_input in calls
        ],
        stop_reason="tool_use",
        usage=usage or Usage(input_tokens=100, output_tokens=30),
        model="claude-haiku-4-5",
        provider="scripted",
    )


class ScriptedModel:
    provider = "scripted"

    def __init__(self, *script: ModelResponse | Exception) -> None:
        self.script = list(script)
        self.requests: list[ModelRequest] = []

    def create(self, request: ModelRequest) -> ModelResponse:
        self.requests.append(request)
        if not self.script:
            raise AssertionError("the scripted model was called more often than scripted")
        item = self.script.pop(0)
        if isinstance(item, Exception):
            raise item
        return item


def billed(usage: Usage, request: ModelRequest) -> tuple[Usage, bool]:
    """What a provider bills for a call that wants ``usage``: never more output than the request's max_tokens
    (then its answer is cut off: the bool), never more input than its prompt (the core's estimate, an upper
    bound by design, stands in for the tokenizer)."""
    output = min(usage.output_tokens, request.max_tokens)
    prompt = estimate_prompt_tokens(request)
    return usage.model_copy(update={"input_tokens": min(usage.input_tokens, prompt), "output_tokens": output}), (
        output < usage.output_tokens
    )
