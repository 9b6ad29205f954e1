"""Exact-match response cache: the key is the normalised request; a hit is served without a model call."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from functions.agent.models import ModelRequest, ModelResponse, Usage

PROVIDER = "response-cache"
CACHEABLE_STOPS = frozenset({"end_turn", "tool_use", "stop_sequence"})


def _strip_cache_control(value: Any) -> Any:
    """Prompt-cache breakpoints change billing, not the answer: they are not part of the key."""
    if isinstance(value, dict):
        return {k: _strip_cache_control(v) for k, v in value.items() if k != "cache_control"}
    if isinstance(value, list):
        return [_strip_cache_control(v) for v in value]
    return value


def _blocks(content: Any) -> Any:
    """A string and the one-text-block list holding it are the same prompt."""
    return [{"type": "text", "text": content}] if isinstance(content, str) else content


def cache_key(request: ModelRequest) -> str:
    normalised = {
        "model": request.model,
        "system": _strip_cache_control(_blocks(request.system)) if request.system else None,
        "messages": _strip_cache_control([{**m, "content": _blocks(m["content"])} for m in request.messages]),
        "tools": _strip_cache_control(request.tools),
        "max_tokens": request.max_tokens,
    }
    canonical = json.dumps(normalised, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def cacheable(response: ModelResponse) -> bool:
    return response.stop_reason in CACHEABLE_STOPS and response.provider != PROVIDER


def as_hit(cached: ModelResponse) -> ModelResponse:
    """The cached answer as this step's response: no tokens used, served by the cache."""
    return cached.model_copy(update={"usage": Usage(), "provider": PROVIDER})
