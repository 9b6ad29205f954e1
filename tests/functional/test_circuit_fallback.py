"""The primary model failing 100 %: the shared circuit opens at the threshold, runs go on on the fallback,
and the circuit closes again once the primary recovers. Real DynamoDB adapters (moto), core step logic."""

from __future__ import annotations

from datetime import timedelta

import boto3
import pytest

from functions.adapters.dynamodb_circuits import DynamoDBCircuitStore
from functions.adapters.dynamodb_store import DynamoDBRunStore
from functions.agent.breaker import Breaker
from functions.agent.circuit import CircuitConfig, CircuitState
from functions.agent.errors import RetryableModelError
from functions.agent.models import ModelRequest, ModelResponse, RunRequest, RunStatus, StepRef, Usage
from functions.agent.pricing import default_price_book
from functions.agent.step import StepOutcome
from tests.fakes import core
from tests.fakes.clock import FixedClock
from tests.fakes.model import text_response
from tests.functional.conftest import TABLE, Aws

PRICES = default_price_book()
PRIMARY, FALLBACK = "claude-sonnet-5-5", "claude-haiku-4-5"  # routing.json: sonnet 5.5 falls back to haiku


class Provider:
    """The primary model is down until ``recovered``; the fallback always answers."""

    provider = "scripted"

    def __init__(self) -> None:
        self.recovered = False
        self.calls: list[str] = []

    def create(self, request: ModelRequest) -> ModelResponse:
        self.calls.append(request.model)
        if request.model == PRIMARY and not self.recovered:
            raise RetryableModelError("529 overloaded_error")
        return text_response(f"answered by {request.model}", usage=Usage(input_tokens=100, output_tokens=10))


def run_to_end(store: DynamoDBRunStore, breaker: Breaker, model: Provider, clock: FixedClock, i: int) -> list[str]:
    """One run as the state machine drives it: a RetryableModelError is retried with attempt + 1."""
    submitter = core.submitter(store, clock=clock, new_id=lambda: f"run_{i:026d}", default_model=PRIMARY)
    key = submitter.submit("t", RunRequest(input="Say hello.", model=PRIMARY)).run.key
    runner = core.runner(store, model, clock=clock, breaker=breaker)
    outcome: StepOutcome | None = None
    for attempt in range(6):
        try:
            outcome = runner.run(StepRef(key, 0), attempt=attempt)
            break
        except RetryableModelError:
            continue
    assert outcome is not None and outcome.status is RunStatus.SUCCEEDED, outcome
    record = store.load_history(key).steps[0]
    assert outcome.fallback is (record.requested_model != PRIMARY)  # the step function's Fallbacks metric
    return [str(record.requested_model), str(record.route_reason)]


def test_the_circuit_opens_runs_use_the_fallback_and_it_closes_after_recovery(aws: Aws) -> None:
    clock = FixedClock(tick=timedelta(seconds=1))
    store = DynamoDBRunStore(TABLE, boto3.client("dynamodb"))
    circuits = DynamoDBCircuitStore(TABLE, boto3.client("dynamodb"))
    config = CircuitConfig(failure_threshold=3, window_seconds=300, cooldown_seconds=60)
    breaker = Breaker(circuits, config, now=lambda: clock.now().timestamp())
    model = Provider()
    key = f"anthropic:{PRIMARY}"

    # Given the primary failing every call: the first runs retry it, then fall back after two retries
    first = run_to_end(store, breaker, model, clock, 1)
    second = run_to_end(store, breaker, model, clock, 2)
    # Then the circuit opened after exactly `failure_threshold` failed calls to the primary
    assert model.calls.count(PRIMARY) == 3
    assert circuits.load(key).state is CircuitState.OPEN
    assert first[0] == FALLBACK and "fallback (retry 2 of claude-sonnet-5-5)" in first[1]

    # And later runs go straight to the fallback: no call to the primary while it is open
    calls_before = len(model.calls)
    third = run_to_end(store, breaker, model, clock, 3)
    assert model.calls[calls_before:] == [FALLBACK]
    assert third[0] == FALLBACK and "circuit open for claude-sonnet-5-5" in third[1]
    assert second[0] == FALLBACK

    # When the primary recovers and the cooldown has passed, a probe goes to it and closes the circuit
    model.recovered = True
    clock.current += timedelta(seconds=61)
    fourth = run_to_end(store, breaker, model, clock, 4)
    assert fourth[0] == PRIMARY and model.calls[-1] == PRIMARY
    assert circuits.load(key).state is CircuitState.CLOSED
    assert [state for _, state in breaker.transitions] == [
        CircuitState.OPEN,
        CircuitState.HALF_OPEN,
        CircuitState.CLOSED,
    ]


def test_the_dynamodb_circuit_store_refuses_a_stale_write(aws: Aws) -> None:
    circuits = DynamoDBCircuitStore(TABLE, boto3.client("dynamodb"))
    fresh = circuits.load("anthropic:m")
    assert circuits.save(fresh.model_copy(update={"failures": 1, "window_start": 1.5}))
    assert not circuits.save(fresh.model_copy(update={"failures": 7}))  # read before the first write
    stored = circuits.load("anthropic:m")
    assert (stored.failures, stored.window_start, stored.version) == (1, 1.5, 1)


class ProbeReady:
    """The primary's circuit opened long enough ago that the next caller is let through as its probe; the primary
    has recovered. ``store``: the run store (a subclass of the DynamoDB one may make it fail)."""

    def __init__(self, store: DynamoDBRunStore) -> None:
        self.clock = FixedClock(tick=timedelta(seconds=1))
        self.store = store
        self.circuits = DynamoDBCircuitStore(TABLE, boto3.client("dynamodb"))
        config = CircuitConfig(failure_threshold=3, cooldown_seconds=60)
        self.breaker = Breaker(self.circuits, config, now=lambda: self.clock.now().timestamp())
        self.model = Provider()
        self.model.recovered = True
        self.key = f"anthropic:{PRIMARY}"
        opened_at = self.clock.now().timestamp() - 120
        update = {"state": CircuitState.OPEN, "failures": 3, "opened_at": opened_at}
        assert self.circuits.save(self.circuits.load(self.key).model_copy(update=update))

    def step(self, request: RunRequest) -> StepOutcome:
        """Submit ``request`` and take its first step."""
        submitter = core.submitter(
            self.store, clock=self.clock, new_id=lambda: "run_" + "0" * 26, default_model=PRIMARY
        )
        key = submitter.submit("t", request).run.key
        return core.runner(self.store, self.model, clock=self.clock, breaker=self.breaker).run(StepRef(key, 0))


def test_a_probe_whose_step_makes_no_call_lets_the_next_caller_probe(aws: Aws) -> None:
    world = ProbeReady(DynamoDBRunStore(TABLE, boto3.client("dynamodb")))
    # Given a step let through as the primary's probe whose budget cannot cover the call: it ends, calling nothing
    refused = world.step(RunRequest(input="Say hello.", model=PRIMARY, budget={"max_usd": 0.000001}))
    assert refused.status is RunStatus.BUDGET_EXCEEDED and world.model.calls == []
    circuit = world.circuits.load(world.key)
    assert (circuit.state, circuit.probes) == (CircuitState.HALF_OPEN, 0)  # its place given back
    # Then the next run's step probes the primary (not the fallback, as it would while the probe held the circuit)
    assert run_to_end(world.store, world.breaker, world.model, world.clock, 2)[0] == PRIMARY
    assert world.circuits.load(world.key).state is CircuitState.CLOSED


def test_a_probe_reports_its_success_before_its_answer_is_stored(aws: Aws) -> None:
    class DiesStoring(DynamoDBRunStore):
        def save_pending(self, *args: object, **kwargs: object) -> None:
            raise MemoryError("the step Lambda dies as it stores the answer")

    world = ProbeReady(DiesStoring(TABLE, boto3.client("dynamodb")))
    # Given the probe's call answered, and its Lambda died before the answer was stored
    with pytest.raises(MemoryError):
        world.step(RunRequest(input="Say hello.", model=PRIMARY))
    # Then the circuit closed all the same: every container calls the primary again
    assert world.model.calls == [PRIMARY]
    assert world.circuits.load(world.key).state is CircuitState.CLOSED
