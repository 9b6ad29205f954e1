"""The conversation a step sends to the model, rebuilt from what the run has stored. Pure.

A long run or session outgrows the model's context window: each step adds its turn and its tool results. When the
prompt's estimate passes ``ContextPolicy.trigger_tokens``, the oldest tool results are cleared (their blocks stay,
with a note instead of the content, so every ``tool_use`` keeps its ``tool_result``) until it is back under
``target_tokens``; the last ``keep_steps`` steps' results are never cleared. Which results are cleared is a function
of the stored history alone, replayed step by step, so it only changes when a step crosses the trigger: between two
clearings every call's prompt extends the previous one, and the prompt cache keeps serving it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from functions.agent.caching import CacheTTL, place_cache_breakpoints
from functions.agent.ledger import BYTES_PER_TOKEN_ESTIMATE
from functions.agent.models import ModelRequest, StepRecord
from functions.agent.ports import RunHistory, Toolbox

DEFAULT_SYSTEM_PROMPT = (
    "You are a careful assistant running as a tool-using agent. Use the tools when they give a more "
    "reliable answer than you can, then answer the user's task concisely."
)
NO_RESULT = "no result was recorded for this tool call"
RESULT_FRAMING_BYTES = 80  # a tool_result block's keys and quotes around its id and content (JSON)
CLEARED = "[this tool result was cleared from the conversation to keep it within the model's context window]"


@dataclass(frozen=True)
class ContextPolicy:
    """When to clear old tool results, in estimated tokens (the ledger's over-estimate: 3 bytes a token).

    The defaults keep a prompt well inside a 200,000-token window: a trigger of 100,000 estimated tokens is about
    75,000 tokens of English. Clearing down to 60,000 frees 40,000 at once, so it happens rarely (every 8 steps or
    so with 16,000-character tool results) and the prompt cache is rebuilt only then."""

    trigger_tokens: int = 100_000
    target_tokens: int = 60_000
    keep_steps: int = 3  # the results of the latest steps that called tools are always sent whole

    def __post_init__(self) -> None:
        if not 0 < self.target_tokens <= self.trigger_tokens or self.keep_steps < 1:
            raise ValueError("ContextPolicy needs 0 < target_tokens <= trigger_tokens and keep_steps >= 1")


def estimate_tokens(value: Any) -> int:
    """The ledger's token estimate of any JSON value (a block, a message, the tools)."""
    return math.ceil(len(json.dumps(value, ensure_ascii=False).encode()) / BYTES_PER_TOKEN_ESTIMATE)


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


def _result(history: RunHistory, record: StepRecord, call_id: str, cleared: bool) -> tuple[str, bool]:
    """The content and error flag the call's tool_result carries (cleared: the note in place of the content)."""
    outcome = history.tool_results.get((record.step, call_id))
    if outcome is None:
        return NO_RESULT, True
    return (CLEARED if cleared else outcome.content), outcome.is_error


def _result_block(history: RunHistory, record: StepRecord, call_id: str, cleared: bool) -> dict[str, Any]:
    content, is_error = _result(history, record, call_id, cleared)
    return {"type": "tool_result", "tool_use_id": call_id, "content": content, "is_error": is_error}


def _result_tokens(history: RunHistory, record: StepRecord, call_id: str, cleared: bool) -> int:
    """``estimate_tokens`` of the result block, without serialising its content: the content's UTF-8 bytes plus the
    block's framing. (A replay estimates every result of the run at every step: JSON-encoding each would make a
    step's CPU grow with the run.)"""
    content, _ = _result(history, record, call_id, cleared)
    return math.ceil((len(content.encode()) + len(call_id) + RESULT_FRAMING_BYTES) / BYTES_PER_TOKEN_ESTIMATE)


def _kept(record: StepRecord) -> list[dict[str, Any]]:
    """The step's assistant turn as the conversation carries it: empty if redone by another model or empty.
    (The API refuses empty text blocks and empty assistant messages in a conversation.)"""
    if record.superseded:
        return []
    return [block for block in record.content if not (block.get("type") == "text" and not block.get("text"))]


def _call_ids(record: StepRecord) -> list[str]:
    """The ids of the step's tool calls, in order (``StepRecord.tool_calls``' ids, without building the calls: the
    conversation is rebuilt from every step at every step)."""
    return [block["id"] for block in record.content if block.get("type") == "tool_use"]


def cleared_before(history: RunHistory, policy: ContextPolicy, fixed_tokens: int = 0) -> int:
    """The step number below which tool results are cleared for the next call (0: none is).

    Replays the run's growth step by step: whenever the estimate passes the trigger, the oldest uncleared results
    go until it is under the target (or only the latest ``keep_steps`` steps' remain). ``fixed_tokens``: the
    system prompt and tools."""
    inputs = user_inputs(history)
    total = fixed_tokens
    with_results: list[tuple[int, int]] = []  # (step, tokens clearing its results saves), in step order
    cleared = 0  # how many of with_results are cleared
    for record in history.steps:
        total += sum(estimate_tokens(block) for block in inputs.get(record.step, []))
        content = _kept(record)
        if not content:
            continue
        total += estimate_tokens(content)
        calls = _call_ids(record)
        if calls:
            whole = sum(_result_tokens(history, record, call, False) for call in calls)
            short = sum(_result_tokens(history, record, call, True) for call in calls)
            total += whole
            with_results.append((record.step, whole - short))
        if total > policy.trigger_tokens:
            while total > policy.target_tokens and cleared < len(with_results) - policy.keep_steps:
                total -= with_results[cleared][1]
                cleared += 1
    return with_results[cleared - 1][0] + 1 if cleared else 0


def build_conversation(history: RunHistory, *, clear_before: int = 0) -> list[dict[str, Any]]:
    """The Messages API conversation: what the user said, then each kept step's turn and its tool results (those
    of steps below ``clear_before`` cleared)."""
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
        content = _kept(record)
        if not content:
            continue
        flush()
        messages.append({"role": "assistant", "content": content})
        user.extend(_result_block(history, record, call, record.step < clear_before) for call in _call_ids(record))
    user.extend(inputs.get(len(history.steps), []))
    flush()
    return messages


def model_request(
    history: RunHistory,
    model: str,
    *,
    system: str,
    toolbox: Toolbox,
    cache_ttl: CacheTTL | None,
    context: ContextPolicy | None = None,
) -> ModelRequest:
    """The next call of the run on ``model``, its oldest tool results cleared if the conversation nears the context
    window (``context``; None: never), with prompt-cache breakpoints placed (see caching.py)."""
    run = history.run
    agent = run.agent
    prompt = system if agent is None else agent.system  # a session's agent has its own (or none)
    tools = toolbox.schemas(run.tools) + (agent.definitions() if agent else [])
    clear = 0 if context is None else cleared_before(history, context, estimate_tokens([prompt, tools]))
    request = ModelRequest(
        model=model,
        system=prompt,
        messages=build_conversation(history, clear_before=clear),
        tools=tools,
        max_tokens=run.max_tokens_per_call,
        cleared_before=clear,
    )
    return place_cache_breakpoints(request, ttl=cache_ttl) if cache_ttl is not None else request
