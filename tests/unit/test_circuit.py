"""Circuit breaker transitions (pure) and their application under concurrent writers."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from functions.agent.breaker import Breaker
from functions.agent.circuit import Circuit, CircuitConfig, CircuitState, on_attempt, on_failure, on_release, on_success

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


def test_a_probe_that_never_reports_does_not_hold_the_circuit_half_open() -> None:
    # Given a probe that was let through but never reported (a budget refusal, a crash, a fatal error)
    config = CircuitConfig(failure_threshold=1, cooldown_seconds=30, probe_timeout_seconds=240)
    probing = Circuit(key="k", state=CircuitState.HALF_OPEN, probes=1, half_open_at=100.0)
    # Then no second probe goes through while it may still be running, and a new one does after the deadline
    assert on_attempt(probing, config, 300.0) == (False, None)
    allowed, fresh = on_attempt(probing, config, 341.0)
    assert allowed and fresh is not None and fresh.half_open_at == 341.0 and fresh.probes == 1


def test_failures_within_the_window_count_even_with_successes_between() -> None:
    circuit = Circuit(key="k")
    for now in (0.0, 1.0, 2.0):
        circuit = on_failure(circuit, CONFIG, now) or circuit
        assert on_success(circuit) is None  # a success while closed changes nothing
    assert circuit.state is CircuitState.OPEN


def test_a_late_success_does_not_close_an_open_circuit() -> None:
    assert on_success(Circuit(key="k", state=CircuitState.OPEN, opened_at=5.0, failures=3)) is None


def test_a_breaker_whose_store_fails_lets_calls_through() -> None:
    class Broken:
        def load(self, key: str) -> Circuit:
            raise ConnectionError("table unavailable")

        def save(self, circuit: Circuit) -> bool:
            raise ConnectionError("table unavailable")

    breaker = Breaker(Broken(), CONFIG, now=lambda: 0.0)
    assert breaker.allow("k") is True
    breaker.failed("k")
    breaker.succeeded("k")
    assert breaker.errors == 3


def test_a_success_through_a_closed_circuit_costs_no_extra_read() -> None:
    reads: list[str] = []

    class Counting(MemoryCircuits):
        def load(self, key: str) -> Circuit:
            reads.append(key)
            return super().load(key)

    breaker = Breaker(Counting(), CONFIG, now=lambda: 0.0)
    assert breaker.allow("k")
    breaker.succeeded("k")
    assert reads == ["k"]  # the read made before the call; none after it


def test_a_circuit_read_closed_is_read_again_only_after_its_freshness() -> None:
    reads: list[str] = []

    class Counting(MemoryCircuits):
        def load(self, key: str) -> Circuit:
            reads.append(key)
            return super().load(key)

    store, clock = Counting(), {"now": 100.0}
    here = Breaker(store, CONFIG, now=lambda: clock["now"], closed_fresh_seconds=5)
    elsewhere = Breaker(store, CONFIG, now=lambda: clock["now"])  # another container
    assert here.allow("k") and here.allow("k") and len(reads) == 1  # kept closed: no second read
    for _ in range(CONFIG.failure_threshold):
        elsewhere.failed("k")  # opens it
    clock["now"] += 4
    assert here.allow("k")  # still within its freshness: the open circuit is not seen yet
    clock["now"] += 1.5
    assert not here.allow("k")  # read again: open
    assert not here.allow("k")  # an open circuit is read on every call


def test_a_failure_seen_here_makes_the_next_call_read_the_circuit() -> None:
    store, clock = MemoryCircuits(), {"now": 0.0}
    breaker = Breaker(store, CONFIG, now=lambda: clock["now"], closed_fresh_seconds=5)
    assert breaker.allow("k")
    for _ in range(CONFIG.failure_threshold):
        breaker.failed("k")
    assert not breaker.allow("k")  # opened by this container's failures: seen at once


def test_a_probe_that_made_no_call_gives_its_place_back() -> None:
    probing = Circuit(key="k", state=CircuitState.HALF_OPEN, probes=1, half_open_at=100.0)
    released = on_release(probing, 100.0)
    assert released is not None and released.state is CircuitState.HALF_OPEN and released.probes == 0
    assert on_attempt(released, CONFIG, 101.0)[0]  # the next caller probes
    # and nothing changes for a circuit that moved on since: probing afresh, closed, reopened
    assert on_release(probing.model_copy(update={"half_open_at": 150.0}), 100.0) is None
    assert on_release(Circuit(key="k"), 100.0) is None
    assert on_release(Circuit(key="k", state=CircuitState.OPEN, opened_at=120.0, half_open_at=100.0), 100.0) is None


def test_the_breaker_releases_only_the_probes_it_did_not_report() -> None:
    store = MemoryCircuits()
    clock = {"now": 0.0}
    breaker = Breaker(store, CONFIG, now=lambda: clock["now"])
    for key in ("a", "b"):
        for _ in range(3):
            breaker.failed(key)
    clock["now"] = 31.0
    assert breaker.allow("a") and breaker.allow("b")  # both let through as probes
    assert breaker.probing == {"a": 31.0, "b": 31.0}
    breaker.failed("b")  # b's call failed: reported, reopened
    breaker.release_probes()  # a's step ended without a call
    assert (store.load("a").state, store.load("a").probes) == (CircuitState.HALF_OPEN, 0)
    assert store.load("b").state is CircuitState.OPEN and breaker.probing == {}
    assert Breaker(store, CONFIG, now=lambda: 32.0).allow("a")  # another container probes a at once


def test_the_probe_after_a_given_back_one_is_timed_from_its_own_start() -> None:
    # Given a circuit half-open since 100 whose probe gave its place back
    config = CircuitConfig(failure_threshold=1, cooldown_seconds=30, probe_timeout_seconds=180)
    released = on_release(Circuit(key="k", state=CircuitState.HALF_OPEN, probes=1, half_open_at=100.0), 100.0)
    assert released is not None
    # When a caller probes at 400, long after the first probe's deadline
    allowed, probing = on_attempt(released, config, 400.0)
    assert allowed and probing is not None and (probing.probes, probing.half_open_at) == (1, 400.0)
    # Then the next caller waits for it, as for any probe still within its call timeout
    assert on_attempt(probing, config, 401.0) == (False, None)
    assert on_attempt(probing, config, 581.0)[0]
