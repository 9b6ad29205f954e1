"""Circuit breaker per provider + model, shared by every Lambda through the store.

closed --(failure_threshold retryable failures within window_seconds)--> open
open --(cooldown_seconds passed: the next caller becomes a probe)--> half_open
half_open --(a probe succeeds)--> closed;  half_open --(a probe fails)--> open
half_open --(no probe reported within probe_timeout_seconds: a new probe goes through)--> half_open
half_open --(a probe let through makes no call after all, or a fatal one: it gives its place back)--> half_open, the
    next caller probes, timed afresh

Successes while closed do not reset the count: it is failures within the window, whatever succeeded between.
A success reported while open (a call that started before the circuit opened) changes nothing.

Pure transitions; the store applies them with a version check, so concurrent Lambdas never lose an update.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field


class CircuitState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitConfig(BaseModel):
    model_config = ConfigDict(defer_build=True)
    failure_threshold: int = Field(default=5, ge=1)
    window_seconds: float = Field(default=60, gt=0)
    cooldown_seconds: float = Field(default=30, gt=0)
    half_open_probes: int = Field(default=1, ge=1)
    # a probe that never reports (a refused budget, a crash, a fatal error) must not hold the circuit half-open
    probe_timeout_seconds: float = Field(default=240, gt=0)


class Circuit(BaseModel):
    model_config = ConfigDict(defer_build=True)
    key: str  # "provider:model"
    state: CircuitState = CircuitState.CLOSED
    failures: int = 0
    window_start: float = 0.0
    opened_at: float = 0.0
    half_open_at: float = 0.0
    probes: int = 0
    version: int = 0  # 0: never stored


def circuit_key(provider: str, model: str) -> str:
    return f"{provider}:{model}"


def on_attempt(circuit: Circuit, config: CircuitConfig, now: float) -> tuple[bool, Circuit | None]:
    """May a call go through? Returns (allowed, the new state to store or None if unchanged)."""
    if circuit.state is CircuitState.CLOSED:
        return True, None
    if circuit.state is CircuitState.OPEN:
        if now - circuit.opened_at < config.cooldown_seconds:
            return False, None
        return True, circuit.model_copy(update={"state": CircuitState.HALF_OPEN, "probes": 1, "half_open_at": now})
    if circuit.probes == 0:  # every probe gave its place back (on_release): this one starts afresh, timed from now
        return True, circuit.model_copy(update={"probes": 1, "half_open_at": now})
    if circuit.probes < config.half_open_probes:
        return True, circuit.model_copy(update={"probes": circuit.probes + 1})
    if now - circuit.half_open_at > config.probe_timeout_seconds:  # the probes never reported: probe again
        return True, circuit.model_copy(update={"probes": 1, "half_open_at": now})
    return False, None


def on_release(circuit: Circuit, half_open_at: float) -> Circuit | None:
    """A probe let through when the circuit went half-open at ``half_open_at`` made no call after all (its step
    ended first: a budget refusal, a cancel, a lost write race, a cached answer), or made one whose answer says
    nothing of the provider's health (a fatal error: a request the API rejects): it gives its place back, so the next
    caller probes (``on_attempt``) instead of every caller waiting ``probe_timeout_seconds`` for a report that will
    not come. A circuit that has moved on since (closed, reopened, probing afresh) is not this probe's to change."""
    if circuit.state is not CircuitState.HALF_OPEN or circuit.half_open_at != half_open_at or circuit.probes < 1:
        return None
    return circuit.model_copy(update={"probes": circuit.probes - 1})


def on_success(circuit: Circuit) -> Circuit | None:
    """Only a probe's success closes the circuit; failures within the window keep counting otherwise."""
    if circuit.state is not CircuitState.HALF_OPEN:
        return None
    return circuit.model_copy(update={"state": CircuitState.CLOSED, "failures": 0, "probes": 0, "window_start": 0.0})


def on_failure(circuit: Circuit, config: CircuitConfig, now: float) -> Circuit | None:
    """A retryable failure (throttling, overload, 5xx, timeout). Fatal errors say nothing about health."""
    if circuit.state is CircuitState.HALF_OPEN:
        return circuit.model_copy(update={"state": CircuitState.OPEN, "opened_at": now, "probes": 0})
    if circuit.state is CircuitState.OPEN:
        return None
    in_window = now - circuit.window_start <= config.window_seconds
    failures = circuit.failures + 1 if in_window else 1
    window_start = circuit.window_start if in_window else now
    if failures >= config.failure_threshold:
        return circuit.model_copy(
            update={"state": CircuitState.OPEN, "failures": failures, "window_start": window_start, "opened_at": now}
        )
    return circuit.model_copy(update={"failures": failures, "window_start": window_start})
