"""Applying circuit transitions through the store (optimistic concurrency: re-read and re-apply on conflict)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from functions.agent.circuit import (
    Circuit,
    CircuitConfig,
    CircuitState,
    on_attempt,
    on_failure,
    on_release,
    on_success,
)
from functions.agent.ports import CircuitStore

MAX_CONFLICTS = 8
CLOSED_FRESH_SECONDS = 5.0  # how long a container lets calls through a circuit it read closed without reading it again
# A probe reports right after its call: one that has not within the call's timeout and this margin never will (its
# Lambda died), and the circuit lets another probe through (CircuitConfig.probe_timeout_seconds, wiring).
PROBE_REPORT_MARGIN_SECONDS = 30.0


@dataclass
class Breaker:
    store: CircuitStore
    config: CircuitConfig
    now: Callable[[], float]
    transitions: list[tuple[str, CircuitState]] = field(default_factory=list)  # for metrics and logs

    errors: int = 0  # circuit reads/writes that failed: the breaker fails open, it never fails a step
    seen: dict[str, CircuitState] = field(default_factory=dict)  # the state each circuit had when last read
    # A circuit read closed lets calls through for this long without being read again (0: read on every call): one
    # another container opens meanwhile is seen that much later. Only a closed circuit is kept, and only until this
    # container reports a failure of it; an open or half-open one is read on every call (its probes are written).
    closed_fresh_seconds: float = 0.0
    _closed_at: dict[str, float] = field(default_factory=dict)  # when each circuit was last read closed
    # the probes this breaker let through and has not reported: circuit -> when it went half-open (``release_probes``)
    probing: dict[str, float] = field(default_factory=dict)

    def _apply(self, key: str, change: Callable[[Circuit], tuple[bool, Circuit | None]]) -> tuple[bool, Circuit | None]:
        """(the change's answer, the circuit it stored or None)."""
        try:
            for _ in range(MAX_CONFLICTS):
                current = self.store.load(key)
                result, new = change(current)
                self.seen[key] = new.state if new is not None else current.state
                if new is None or self.store.save(new):
                    if new is not None and new.state is not current.state:
                        self.transitions.append((key, new.state))
                    return result, new
            self.errors += 1  # still contended: let this call through rather than fail the step
            return True, None
        except Exception:  # the circuit store is unavailable: a breaker must not take the run down with it
            self.errors += 1
            return True, None

    def allow(self, key: str) -> bool:
        now = self.now()
        read_closed = self._closed_at.get(key)
        if read_closed is not None and 0 <= now - read_closed < self.closed_fresh_seconds:
            self.seen[key] = CircuitState.CLOSED
            return True
        allowed, stored = self._apply(key, lambda c: on_attempt(c, self.config, now))
        if allowed and stored is not None and stored.state is CircuitState.HALF_OPEN:  # a probe: this call's
            self.probing[key] = stored.half_open_at
        if self.seen.get(key) is CircuitState.CLOSED:
            self._closed_at[key] = now
        else:
            self._closed_at.pop(key, None)
        return allowed

    def succeeded(self, key: str) -> None:
        self.probing.pop(key, None)
        if self.seen.get(key) is CircuitState.CLOSED:
            return  # a call let through a closed circuit was no probe: its success changes nothing, no read needed
        self._apply(key, lambda c: (True, on_success(c)))

    def failed(self, key: str) -> None:
        self.probing.pop(key, None)
        self._closed_at.pop(key, None)
        self._apply(key, lambda c: (True, on_failure(c, self.config, self.now())))

    def release_probes(self) -> None:
        """The probes let through since the last report of a call that made none (``on_release``): called when a
        step ends, however it ends. A Lambda that dies cannot; its probe's circuit waits ``probe_timeout_seconds``."""
        probing, self.probing = self.probing, {}
        for key, half_open_at in probing.items():
            self._apply(key, _releasing(half_open_at))

    def take_report(self) -> tuple[list[tuple[str, CircuitState]], int]:
        """The transitions made and the store errors met since the last report (one per invocation: the
        breaker lives as long as the container, its circuits' states in the store)."""
        report = (self.transitions, self.errors)
        self.transitions, self.errors, self.seen = [], 0, {}
        return report


def _releasing(half_open_at: float) -> Callable[[Circuit], tuple[bool, Circuit | None]]:
    return lambda circuit: (True, on_release(circuit, half_open_at))
