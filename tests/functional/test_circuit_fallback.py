"""The primary model failing 100 %: the shared circuit opens at the threshold, runs go on on the fallback,
and the circuit closes again once the primary recovers. Real DynamoDB adapters (moto), core step logic."""

from __future__ import annotations

from datetime import timedelta

import boto3

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
