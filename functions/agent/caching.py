"""Prompt-caching breakpoints placed automatically on a ModelRequest. Pure: no provider SDK, no I/O.

The Messages API caches the prompt prefix that ends at a content block marked with
``cache_control: {"type": "ephemeral", "ttl": "5m" | "1h"}``. The prefix is read in API order: tool
definitions, then the system prompt, then the messages. A request may carry at most 4 such markers, and
every ``"1h"`` marker must come before every ``"5m"`` one.

:func:`place_cache_breakpoints` places them automatically (its docstring states the rules);
:func:`count_breakpoints` counts the markers a request carries, :func:`marker_ttls` their TTLs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

from functions.agent.models import ModelRequest

CacheTTL = Literal["5m", "1h"]
MAX_BREAKPOINTS = 4
_UNCACHEABLE_TYPES = frozenset({"thinking", "redacted_thinking"})

# Position of a block in API prompt order: (part, index...) with part 0 tools, 1 system, 2 messages.
# A message block sorts after the blocks nested in it (e.g. a tool_result's content): its marker ends there.
_Position = tuple[int, ...]
_END = 1 << 30


def cache_control(ttl: CacheTTL = "5m") -> dict[str, str]:
    """The marker placed on a block."""
    return {"type": "ephemeral", "ttl": ttl}


def count_breakpoints(request: ModelRequest) -> int:
    """How many blocks of the request carry a ``cache_control`` marker (tools, system, messages)."""
    return sum(1 for _ in _markers(request))


def marker_ttls(request: ModelRequest) -> frozenset[str]:
    """The TTLs of the request's ``cache_control`` markers: the cache writes its prompt can be billed for."""
    return frozenset(ttl for _, ttl in _markers(request))


def place_cache_breakpoints(request: ModelRequest, *, ttl: CacheTTL = "5m") -> ModelRequest:
    """A copy of ``request`` with prompt-cache breakpoints placed automatically.

    Returns a new request with markers (``cache_control(ttl)``) on, in priority order:

    1. **system**: the last cacheable block of the system prompt (a ``str`` system becomes one text block).
       Its prefix holds the tool definitions and the system prompt: the part that is the same on every step.
    2. **tools**: the last tool definition (caches the tool prefix alone; it still hits when only the system
       prompt changes).
    3. **latest turn**: the last cacheable content block of the latest message (a ``str`` content becomes one
       text block). Writes the whole conversation so the next step can read it.
    4. **previous turn**: the last cacheable content block of the user message before the latest message (needs
       at least three messages). The previous step wrote the prefix ending there, so this step reads it from
       the cache and writes only the new turn.

    Rules:

    - Never more than 4 markers in total: markers already present in the request are counted first and kept
      as they are; placements that do not fit are dropped from the lowest priority up.
    - A target block that already carries ``cache_control`` is left untouched and uses no extra slot.
    - Empty parts are skipped: no tools, no or empty system, empty content. Blocks that cannot carry a marker
      are passed over for the nearest earlier block of the same part: ``thinking`` / ``redacted_thinking``
      blocks and empty text blocks.
    - A placement that would break the TTL order against a marker already present (a new ``"5m"`` before an
      existing ``"1h"``, or a new ``"1h"`` after an existing ``"5m"``) is dropped. With one TTL for all markers
      the order always holds.
    - The input request is never mutated: the result is a new request that shares the input's unmarked blocks and
      copies what it marks (the block, and the list and message holding it). Copying only those keeps the cost of
      a step independent of the conversation's length (a deep copy of a 300-step conversation was most of the
      time spent building its request).
    """
    placed = request.model_copy(update={"messages": list(request.messages), "tools": list(request.tools)})
    existing = list(_markers(placed))
    slots = MAX_BREAKPOINTS - len(existing)
    for target in _targets(placed):
        if slots <= 0:
            break
        if target is None:
            continue
        if target.block.get("cache_control") is not None:  # already marked (and already counted)
            continue
        if not _ttl_order_allows(target.position, ttl, existing):
            continue
        target.mark({**target.block, "cache_control": cache_control(ttl)})
        existing.append((target.position, ttl))
        slots -= 1
    return placed


@dataclass
class _Target:
    """A block that may receive a marker: ``mark`` puts its marked copy in the request in its place (a ``str``
    system or content becomes a list of that one block), copying the list and message that hold it."""

    position: _Position
    block: dict[str, Any]
    mark: Callable[[dict[str, Any]], None]


def _targets(request: ModelRequest) -> Iterator[_Target | None]:
    """Candidate blocks in priority order: system, tools, latest turn, previous user turn."""
    yield _system_target(request)
    yield _tool_target(request)
    if not request.messages:
        return
    latest = len(request.messages) - 1
    yield _message_target(request, latest)
    if latest >= 2:
        previous = next((i for i in range(latest - 1, -1, -1) if request.messages[i].get("role") == "user"), None)
        if previous is not None:
            yield _message_target(request, previous)


def _system_target(request: ModelRequest) -> _Target | None:
    system = request.system
    if isinstance(system, list):
        index = _last_cacheable(system)
        if index is None:
            return None

        def mark_in_list(block: dict[str, Any]) -> None:
            request.system = _replaced(system, index, block)

        return _Target((1, index), system[index], mark_in_list)
    if not system:
        return None

    def mark(block: dict[str, Any]) -> None:
        request.system = [block]

    return _Target((1, 0), {"type": "text", "text": system}, mark)


def _tool_target(request: ModelRequest) -> _Target | None:
    index = _last_cacheable(request.tools)
    if index is None:
        return None

    def mark(block: dict[str, Any]) -> None:
        request.tools[index] = block  # the request's own list (place_cache_breakpoints copied it)

    return _Target((0, index), request.tools[index], mark)


def _message_target(request: ModelRequest, at: int) -> _Target | None:
    message = request.messages[at]
    content = message.get("content")
    if isinstance(content, list):
        index = _last_cacheable(content)
        if index is None:
            return None

        def mark_in_list(block: dict[str, Any]) -> None:
            request.messages[at] = {**message, "content": _replaced(content, index, block)}

        return _Target((2, at, index, _END), content[index], mark_in_list)
    if not isinstance(content, str) or not content:
        return None

    def mark(block: dict[str, Any]) -> None:
        request.messages[at] = {**message, "content": [block]}

    return _Target((2, at, 0, _END), {"type": "text", "text": content}, mark)


def _replaced(blocks: list[dict[str, Any]], index: int, block: dict[str, Any]) -> list[dict[str, Any]]:
    """A copy of ``blocks`` with ``block`` at ``index``."""
    copied = list(blocks)
    copied[index] = block
    return copied


def _last_cacheable(blocks: list[dict[str, Any]]) -> int | None:
    """The index of the last block that can carry a marker."""
    return next((index for index in range(len(blocks) - 1, -1, -1) if _cacheable(blocks[index])), None)


def _cacheable(block: Any) -> bool:
    if not isinstance(block, dict) or block.get("type") in _UNCACHEABLE_TYPES:
        return False
    return not (block.get("type") == "text" and not block.get("text"))


def _ttl_order_allows(position: _Position, ttl: CacheTTL, existing: list[tuple[_Position, str]]) -> bool:
    """Every "1h" marker must precede every "5m" marker in prompt order."""
    if ttl == "1h":
        return not any(other_ttl != "1h" and other < position for other, other_ttl in existing)
    return not any(other_ttl == "1h" and other > position for other, other_ttl in existing)


def _markers(request: ModelRequest) -> Iterator[tuple[_Position, str]]:
    """Position and TTL of every marker in the request, in prompt order (a marker without a TTL is "5m")."""
    for index, tool in enumerate(request.tools):
        yield from _marker_of(tool, (0, index))
    if isinstance(request.system, list):
        for index, block in enumerate(request.system):
            yield from _marker_of(block, (1, index))
    for m, message in enumerate(request.messages):  # (every step reads every block: no call per block)
        content = message.get("content")
        if not isinstance(content, list):
            continue
        for b, block in enumerate(content):
            if not isinstance(block, dict):
                continue
            if block.get("cache_control") is not None:
                yield from _marker_of(block, (2, m, b, _END))
            nested = block.get("content")
            if isinstance(nested, list):  # e.g. the blocks of a tool_result
                for n, inner in enumerate(nested):
                    yield from _marker_of(inner, (2, m, b, n))


def _marker_of(block: Any, position: _Position) -> Iterator[tuple[_Position, str]]:
    if isinstance(block, dict):
        marker = block.get("cache_control")
        if marker is not None:
            ttl = marker.get("ttl", "5m") if isinstance(marker, dict) else "5m"
            yield position, str(ttl)
