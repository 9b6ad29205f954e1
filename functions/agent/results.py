"""Large tool results: the model sees a bounded view; the whole result is kept in the result store. Pure.

A result above ``VIEW_CHARS`` is stored whole (up to ``MAX_RESULT_CHARS``) under a tenant-scoped key; the table and
every state of the workflow carry only the view and the key, so nothing between states grows with a result."""

from __future__ import annotations

from functions.agent.models import StepRef, ToolOutcome
from functions.agent.ports import ResultStore

VIEW_CHARS = 16_000  # what the model (and the table) get of a result
MAX_RESULT_CHARS = 5_000_000  # what is kept of one: a larger result is cut here (and says so)


def result_key(ref: StepRef, tool_use_id: str) -> str:
    """Tenant first: a deployment can scope access (and find a tenant's objects) by prefix."""
    return f"{ref.key.tenant}/{ref.key.run_id}/{ref.step:05d}/{tool_use_id}"


def bounded(outcome: ToolOutcome, ref: StepRef, results: ResultStore | None, where: str) -> ToolOutcome:
    """``outcome`` as it is stored: whole if small; else a view, with the whole result put in ``results``.

    ``where`` says how to read the whole result (an API path), for the note the model sees."""
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
    key = result_key(ref, outcome.tool_use_id)
    results.put(key, kept)
    note = f"\n[showing {VIEW_CHARS:,} of {size:,} characters; the whole result: {where}]"
    return outcome.model_copy(update={"content": content[:VIEW_CHARS] + note, "size": size, "stored": key})
