"""A run's history read incrementally: a container keeps what it has read of a run and asks DynamoDB only for
the items that may have changed since (functions/adapters/dynamodb_store.py ``load_history``).

A run's partition (keys in dynamodb_store.py) sorts ``EVENT#`` < ``PENDING#`` < ``RUN`` < ``STEP#`` < ``TOOL#``.
What may change after it is first written, and how each is read again:

    RUN        every step writes it: read every time, first (as a full read does)
    PENDING#   put, put again, deleted by the settlement: all of them read every time (at most one per unsettled
               step, so few); they sort just below RUN, so the same descending Query reads them right after it
    EVENT#     put once; an interrupt is deleted by the request that stored it when the turn idled on its own (see
               functions/agent/sessions.py ``TurnInterrupts``): the events of the turn before the one cached and
               every later one are read again (ids sort by turn: ``event_floor``), in the same Query
    STEP#      never changed: step n is put with the run's ``steps`` = n + 1, in one transaction (the ledger's
               settlement), so the run item read first says how many there are; only those not cached are read
    TOOL#      a provisional result (``final`` false) is replaced by the final one; a final one never changes. A
               call gets its result after its step is stored (the workflow's Map, an end's ``settle_calls``, a
               session's client): the results of every "open" step are read again, the steps from the lowest one
               that runs calls (TOOLS, ACTION) and has a call without a final result, or any result not final
               (``open_from``); a step whose calls never run (REDO, FINISH) gets none

So a step reads the run item, the pending answers, the last two turns' events and the items written since the
container last read the run: no more as the run grows. A container that has not read the run (or has forgotten
it: the cache holds at most ``max_bytes`` of items, least recently used first out) reads the whole partition.
The one cost that can grow is a step that runs calls and never gets all its results (the ends give every call
its result: functions/agent/lifecycle.py ``settle_calls``): from it on, tool results are read again each time.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from functions.agent.models import RunKey, StepDecision, StepRecord, ToolOutcome, UserEvent

DEFAULT_MAX_BYTES = 16 * 1024 * 1024  # of items as stored (parsed, they take a few times that in memory)
RUNS_CALLS = frozenset({StepDecision.TOOLS, StepDecision.ACTION})  # steps whose calls run (see lifecycle.turn_calls)


def item_bytes(item: dict[str, Any]) -> int:
    """An item's size as DynamoDB counts it (attribute names and values; numbers approximated by their digits)."""
    return sum(len(name.encode()) + _value_bytes(value) for name, value in item.items())


def _value_bytes(value: dict[str, Any]) -> int:
    ((kind, inner),) = value.items()
    if kind in ("S", "B"):
        return len(inner.encode()) if isinstance(inner, str) else len(inner)
    if kind == "N":
        return len(inner.lstrip("-").replace(".", "")) // 2 + 1
    if kind in ("BOOL", "NULL"):
        return 1
    if kind in ("SS", "NS", "BS"):
        return sum(len(str(v).encode()) for v in inner)
    if kind == "L":
        return 3 + sum(1 + _value_bytes(v) for v in inner)
    return 3 + sum(len(k.encode()) + 1 + _value_bytes(v) for k, v in inner.items())  # M


def event_floor(turn: int) -> str:
    """The lowest event id of the turn before ``turn``: functions/agent/sessions.py ``event_id`` sorts by turn first
    (``sevt_{turn:04d}...``); ids below it are events of earlier turns, which never change."""
    return f"sevt_{max(turn - 1, 0):04d}"


def open_from(steps: tuple[StepRecord, ...], tools: dict[tuple[int, str], ToolOutcome], start: int = 0) -> int:
    """The lowest step whose tool results may still change: one that runs calls and has a call without a final
    result, or has a result that is not final; else the step after the last. Steps below ``start`` are known not to
    (a step that is not open never opens again)."""
    provisional = min((step for (step, _), outcome in tools.items() if not outcome.final), default=len(steps))
    for record in steps[start:]:
        if record.step >= provisional:
            break
        if record.decision in RUNS_CALLS and any(
            (found := tools.get((record.step, call.id))) is None or not found.final for call in record.tool_calls()
        ):
            return record.step
    return min(provisional, len(steps))


@dataclass(frozen=True)
class CachedHistory:
    """What a container keeps of one run: the items that never change once read (see the module's docstring), and
    where the items that may change begin. Never mutated: each read makes a new one."""

    created_at: str  # the run's: a run made again under the same key is another run
    turn: int  # the run's turn when read (where the events read again begin: ``event_floor``)
    steps: tuple[StepRecord, ...]
    tools: dict[tuple[int, str], ToolOutcome]
    events: tuple[UserEvent, ...]
    sizes: dict[str, int] = field(default_factory=dict)  # item bytes by sort key (for the cache's bound)
    open: int = 0  # no step below this one is open (``open_from``)

    @property
    def size(self) -> int:
        return sum(self.sizes.values())


class HistoryCache:
    """The runs a container has read, least recently used first out beyond ``max_bytes`` of items. Thread-safe
    (the local stack runs many invocations of one function in one process)."""

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.max_bytes = max_bytes
        self._runs: OrderedDict[tuple[str, RunKey], CachedHistory] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, table: str, key: RunKey) -> CachedHistory | None:
        with self._lock:
            found = self._runs.get((table, key))
            if found is not None:
                self._runs.move_to_end((table, key))
            return found

    def put(self, table: str, key: RunKey, cached: CachedHistory) -> None:
        with self._lock:
            old = self._runs.pop((table, key), None)
            self._bytes -= old.size if old is not None else 0
            if cached.size > self.max_bytes:
                return
            self._runs[(table, key)] = cached
            self._bytes += cached.size
            while self._bytes > self.max_bytes:
                _, evicted = self._runs.popitem(last=False)
                self._bytes -= evicted.size

    def forget(self, table: str, key: RunKey) -> None:
        with self._lock:
            old = self._runs.pop((table, key), None)
            self._bytes -= old.size if old is not None else 0

    def clear(self) -> None:
        with self._lock:
            self._runs.clear()
            self._bytes = 0

    def __len__(self) -> int:
        return len(self._runs)
