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


def user_inputs(history: RunHistory) -> dict[int, list[dict[str, Any]]]:
    """What the user said before each step: a session's messages at the first step of the turn they started
    (two turns may start at one step, when the first took none), a /runs run's input before step 0."""
    run = history.run
    if not run.turns:
        return {0: [{"type": "text", "text": run.input}]}
    firsts = {number: turn.first_step for number, turn in enumerate(run.turns, start=1)}
    inputs: dict[int, list[dict[str, Any]]] = {}
    for event in history.user_events:
        if event.type == "user.message" and event.turn in firsts:
            inputs.setdefault(firsts[event.turn], []).extend(event.body["content"])
    return inputs


def build_conversation(history: RunHistory) -> list[dict[str, Any]]:
    """The Messages API conversation: what the user said, then each kept step's turn and its tool results."""
    inputs = user_inputs(history)
    messages: list[dict[str, Any]] = []
    user: list[dict[str, Any]] = []  # the next user message's blocks: tool results first, then what was said

    def flush() -> None:
        if user:
            alone = len(user) == 1 and user[0]["type"] == "text" and not history.run.turns
            messages.append({"role": "user", "content": user[0]["text"] if alone else list(user)})
            user.clear()

    for record in history.steps:
        user.extend(inputs.get(record.step, []))
        # the API refuses empty text blocks and empty assistant messages in a conversation
        content = [block for block in record.content if not (block.get("type") == "text" and not block.get("text"))]
        if record.superseded or not content:  # redone by another model; or an empty answer
            continue
        flush()
        messages.append({"role": "assistant", "content": content})
        for call in record.tool_calls():
            outcome = history.tool_results.get((record.step, call.id))
            user.append(
                {
                    "type": "tool_result",
                    "tool_use_id": call.id,
                    "content": outcome.content if outcome else NO_RESULT,
                    "is_error": outcome.is_error if outcome else True,
                }
            )
    user.extend(inputs.get(len(history.steps), []))
    flush()
    return messages


def model_request(
    history: RunHistory, model: str, *, system: str, toolbox: Toolbox, cache_ttl: CacheTTL | None
) -> ModelRequest:
    """The next call of the run on ``model``, with prompt-cache breakpoints placed (see caching.py)."""
    run = history.run
    agent = run.agent
    request = ModelRequest(
        model=model,
        system=system if agent is None else agent.system,  # a session's agent has its own (or none)
        messages=build_conversation(history),
        tools=toolbox.schemas(run.tools) + (agent.definitions() if agent else []),
        max_tokens=run.max_tokens_per_call,
    )
    return place_cache_breakpoints(request, ttl=cache_ttl) if cache_ttl is not None else request
