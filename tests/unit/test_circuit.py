"""Circuit breaker transitions (pure) and their application under concurrent writers."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from functions.agent.breaker import Breaker
from functions.agent.circuit import Circuit, CircuitConfig, CircuitState, on_attempt, on_failure, on_success

CONFIG = CircuitConfig(failure_threshold=3, window_seconds=60, cooldown_seconds=30, half_open_probes=1)


class MemoryCircuits:
    """Versioned like the DynamoDB store: a save wins only against the version it read."""

    def __init__(self) -> None:
        self.items: dict[str, Circuit] = {}
        self.lock = threading.Lock()
        self.conflicts = 0

    def load(self, key: str) -> Circuit:
        return self.items.get(key, Circuit(key=key))

    def save(self, circuit: Circuit) -> bool:
        with self.lock:
            if self.items.get(circuit.key, Circuit(key=circuit.key)).version != circuit.version:
                self.conflicts += 1
                return False
            self.items[circuit.key] = circuit.model_copy(update={"version": circuit.version + 1})
            return True


def test_failures_within_the_window_open_the_circuit_at_the_threshold() -> None:
    circuit = Circuit(key="anthropic:m")
    for now in (0.0, 1.0):
        circuit = on_failure(circuit, CONFIG, now) or circuit
        assert circuit.state is CircuitState.CLOSED
    circuit = on_failure(circuit, CONFIG, 2.0) or circuit
    assert circuit.state is CircuitState.OPEN and circuit.opened_at == 2.0


def test_failures_spread_beyond_the_window_do_not_open_it() -> None:
    circuit = Circuit(key="k")
    for now in (0.0, 61.0, 122.0, 183.0):
        circuit = on_failure(circuit, CONFIG, now) or circuit
    assert circuit.state is CircuitState.CLOSED and circuit.failures == 1


def test_open_refuses_until_the_cooldown_then_lets_one_probe_through() -> None:
    circuit = Circuit(key="k", state=CircuitState.OPEN, opened_at=100.0)
    assert on_attempt(circuit, CONFIG, 129.0) == (False, None)
    allowed, probing = on_attempt(circuit, CONFIG, 130.0)
    assert allowed and probing is not None and probing.state is CircuitState.HALF_OPEN
    assert on_attempt(probing, CONFIG, 131.0) == (False, None)  # one probe at a time


def test_a_probe_closes_on_success_and_reopens_on_failure() -> None:
    probing = Circuit(key="k", state=CircuitState.HALF_OPEN, probes=1, opened_at=100.0)
    closed = on_success(probing)
    reopened = on_failure(probing, CONFIG, 140.0)
    assert closed is not None and closed.state is CircuitState.CLOSED and closed.failures == 0
    assert reopened is not None and reopened.state is CircuitState.OPEN and reopened.opened_at == 140.0
    assert on_success(Circuit(key="k")) is None  # nothing to store for a healthy circuit


def test_concurrent_failures_lose_no_update() -> None:
    # Given 40 Lambdas recording a failure on one circuit at the same moment (threshold high: stays closed)
    store = MemoryCircuits()
    breaker = Breaker(store, CircuitConfig(failure_threshold=1_000), now=lambda: 5.0)
    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(lambda _: breaker.failed("anthropic:m"), range(40)))
    # Then every one was counted, whatever the conflicts
    assert store.load("anthropic:m").failures == 40


def test_the_breaker_records_transitions_for_metrics() -> None:
    store = MemoryCircuits()
    clock = {"now": 0.0}
    breaker = Breaker(store, CONFIG, now=lambda: clock["now"])
    for _ in range(3):
        breaker.failed("k")
    assert not breaker.allow("k")
    clock["now"] = 31.0
    assert breaker.allow("k")
    breaker.succeeded("k")
    assert breaker.transitions == [("k", CircuitState.OPEN), ("k", CircuitState.HALF_OPEN), ("k", CircuitState.CLOSED)]
