"""The conversation a step sends to the model, rebuilt from what the run has stored. Pure."""

from __future__ import annotations

from typing import Any

from functions.agent.caching import CacheTTL, place_cache_breakpoints
from functions.agent.models import ModelRequest
from functions.agent.ports import RunHistory, Toolbox

DEFAULT_SYSTEM_PROMPT = (
    "You are a careful assistant running as a tool-using agent. Use the tools when they give a more "
    "reliable answer than you can, then answer the user's task concisely."
)
NO_RESULT = "no result was recorded for this tool call"


def build_conversation(history: RunHistory) -> list[dict[str, Any]]:
    """The Messages API conversation: the run's input, then each kept step's turn and its tool results."""
    messages: list[dict[str, Any]] = [{"role": "user", "content": history.run.input}]
    for record in history.steps:
        if record.superseded:  # recorded and charged, but redone by another model
            continue
        messages.append({"role": "assistant", "content": record.content})
        calls = record.tool_calls()
        if not calls:
            continue
        results = []
        for call in calls:
            outcome = history.tool_results.get((record.step, call.id))
            results.append(
                {
                    "type": "tool_result",
                    "tool_use_id": call.id,
                    "content": outcome.content if outcome else NO_RESULT,
                    "is_error": outcome.is_error if outcome else True,
                }
            )
        messages.append({"role": "user", "content": results})
    return messages


def model_request(
    history: RunHistory, model: str, *, system: str, toolbox: Toolbox, cache_ttl: CacheTTL | None
) -> ModelRequest:
    """The next call of the run on ``model``, with prompt-cache breakpoints placed (see caching.py)."""
    run = history.run
    request = ModelRequest(
        model=model,
        system=system,
        messages=build_conversation(history),
        tools=toolbox.schemas(run.tools),
        max_tokens=run.max_tokens_per_call,
    )
    return place_cache_breakpoints(request, ttl=cache_ttl) if cache_ttl is not None else request
