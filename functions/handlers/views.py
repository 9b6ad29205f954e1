"""Public views of stored records (the GET /runs/{id}/steps body)."""

from __future__ import annotations

import json
from typing import Any

from functions.agent.ports import RunHistory

PREVIEW_CHARS = 2_000


def _truncate(text: str, limit: int = PREVIEW_CHARS) -> str:
    return text if len(text) <= limit else text[:limit] + f"... [{len(text) - limit} more chars]"


def steps_view(history: RunHistory) -> list[dict[str, Any]]:
    steps = []
    for record in history.steps:
        tool_calls = []
        for call in record.tool_calls():
            outcome = history.tool_results.get((record.step, call.id))
            tool_calls.append(
                {
                    "id": call.id,
                    "name": call.name,
                    "input": _truncate(json.dumps(call.input)),
                    "result": None
                    if outcome is None
                    else {
                        "content": _truncate(outcome.content),
                        "is_error": outcome.is_error,
                        "duration_ms": outcome.duration_ms,
                    },
                }
            )
        text = "".join(b.get("text", "") for b in record.content if b.get("type") == "text")
        steps.append(
            {
                "step": record.step,
                "model": record.model,
                "requested_model": record.requested_model,
                "route_reason": record.route_reason,
                "superseded": record.superseded,
                "cleared_before": record.cleared_before,
                "provider": record.provider,
                "stop_reason": record.stop_reason,
                "decision": record.decision.value,
                "text": _truncate(text),
                "tool_calls": tool_calls,
                "usage": record.usage.public(),
                "cost_usd": float(record.cost_usd),
                "started_at": record.started_at,
                "finished_at": record.finished_at,
                "duration_ms": record.duration_ms,
                "error": record.error.model_dump() if record.error else None,
            }
        )
    return steps
