"""Large tool results: the model sees a bounded view; the whole result is kept in the result store. Pure.

A result above ``VIEW_CHARS`` is stored whole (up to ``MAX_RESULT_CHARS``) under a tenant-scoped key; the table and
every state of the workflow carry only the view and the key, so nothing between states grows with a result."""

from __future__ import annotations

import hashlib
from typing import Any

from functions.agent.errors import NotFoundError, clip
from functions.agent.models import StepRef, ToolOutcome
from functions.agent.ports import ResultStore, RunHistory

VIEW_CHARS = 16_000  # what the model (and the table) get of a result
MAX_RESULT_CHARS = 5_000_000  # what is kept of one: a larger result is cut here (and says so)
# what one read of a whole result returns: even as JSON-escaped non-ASCII text, well inside Lambda's 6 MB response
PAGE_CHARS = 200_000  # (14 bytes a character at worst: JSON-escaped twice, outside the Basic Multilingual Plane)


def result_key(ref: StepRef, tool_use_id: str, content: str) -> str:
    """Tenant first: a deployment can scope access (and find a tenant's objects) by prefix. The content's digest
    last: two invocations of one call that got different results never overwrite each other's object (the table
    keeps the first result stored, and its key)."""
    digest = hashlib.sha256(content.encode()).hexdigest()[:16]
    return f"{ref.key.tenant}/{ref.key.run_id}/{ref.step:05d}/{tool_use_id}/{digest}"


def bounded(outcome: ToolOutcome, ref: StepRef, results: ResultStore | None, where: str) -> ToolOutcome:
    """``outcome`` as it is stored: whole if small; else a view, with the whole result put in ``results``.

    ``where`` says how to read the whole result (an API path), for the note the model sees."""
    if outcome.stored is not None:  # already a view of a stored result
        return outcome
    content = outcome.content
    size = len(content)
    if size <= VIEW_CHARS:
        return outcome.model_copy(update={"size": size})
    kept = content[:MAX_RESULT_CHARS]
    if size > MAX_RESULT_CHARS:
        kept += f"\n[cut at {MAX_RESULT_CHARS:,} of {size:,} characters]"
    if results is None:  # no store configured: the view is all that is kept, and it says so
        note = f"\n[showing {VIEW_CHARS:,} of {size:,} characters; the rest was not kept]"
        return outcome.model_copy(update={"content": content[:VIEW_CHARS] + note, "size": size})
    key = result_key(ref, outcome.tool_use_id, kept)
    results.put(key, kept)
    note = f"\n[showing {VIEW_CHARS:,} of {size:,} characters; the whole result: {where}]"
    return outcome.model_copy(update={"content": content[:VIEW_CHARS] + note, "size": size, "stored": key})


def whole_result(
    history: RunHistory, results: ResultStore | None, tool_use_id: str, *, offset: int = 0, limit: int = PAGE_CHARS
) -> dict[str, Any]:
    """A page of the whole result of a call of the run (the model's ``tool_use_id``; the latest step's, were one
    repeated): ``limit`` characters from ``offset``, and the next page's offset (None after the last).

    Raises NotFoundError: no such call has a result, or its whole result has expired from the result store."""
    found = [(step, outcome) for (step, use), outcome in history.tool_results.items() if use == tool_use_id]
    found = [(step, outcome) for step, outcome in found if outcome.final]
    if not found:
        raise NotFoundError(f"run {history.run.run_id} has no result for tool call {clip(tool_use_id)}")
    step, outcome = max(found, key=lambda pair: pair[0])
    content = outcome.content
    if outcome.stored is not None:
        whole = results.get(outcome.stored) if results is not None else None
        if whole is None:
            raise NotFoundError(f"the whole result of tool call {clip(tool_use_id)} is no longer kept (it expired)")
        content = whole
    end = offset + limit
    return {
        "tool_use_id": tool_use_id,
        "name": outcome.name,
        "step": step,
        "is_error": outcome.is_error,
        "size": outcome.size or len(content),
        "offset": offset,
        "content": content[offset:end],
        "next_offset": end if end < len(content) else None,
    }
