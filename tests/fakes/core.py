"""The core's use cases built from in-memory fakes, the way functions/adapters/wiring.py builds them."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from itertools import count
from typing import Any

from functions.agent.intake import Intake
from functions.agent.lifecycle import Lifecycle
from functions.agent.models import RunKey, StepRef, ToolOutcome
from functions.agent.ports import Clock, ModelClient, ResponseCache, RunQueue, RunStore, Toolbox, Workflow
from functions.agent.pricing import PriceBook, default_price_book
from functions.agent.step import StepConfig, StepOutcome, StepRunner
from functions.agent.submit import SubmitConfig, Submitter
from functions.agent.tool import ToolRunner, run_tool
from functions.agent.webhooks import WebhookNotifier
from functions.tools import builtin_registry
from tests.fakes.clock import FixedClock
from tests.fakes.services import RecordingQueue, RecordingWorkflow

PRICES = default_price_book()
DEFAULT_MODEL = "claude-haiku-4-5"


def sequential_ids() -> Callable[[], str]:
    numbers: Iterator[int] = count(1)
    return lambda: f"run_{next(numbers):026x}"


def submitter(
    store: RunStore,
    *,
    queue: RunQueue | None = None,
    toolbox: Toolbox | None = None,
    prices: PriceBook = PRICES,
    clock: Clock | None = None,
    new_id: Callable[[], str] | None = None,
    default_model: str = DEFAULT_MODEL,
    notifier: WebhookNotifier | None = None,
    **config: Any,
) -> Submitter:
    return Submitter(
        store=store,
        queue=queue or RecordingQueue(),
        toolbox=toolbox or builtin_registry(),
        prices=prices,
        clock=clock or FixedClock(),
        new_id=new_id or sequential_ids(),
        config=SubmitConfig(default_model=default_model, **config),
        notifier=notifier,
    )


def runner(
    store: RunStore,
    model: ModelClient,
    *,
    toolbox: Toolbox | None = None,
    prices: PriceBook = PRICES,
    clock: Clock | None = None,
    response_cache: ResponseCache | None = None,
    breaker: Any = None,
    tenant_limits: Any = None,
    tools: ToolRunner | None = None,
    **config: Any,
) -> StepRunner:
    """A StepRunner; ``config`` are StepConfig fields (limits, prompt_cache_ttl, routing, system, ...)."""
    return StepRunner(
        store=store,
        model=model,
        toolbox=toolbox or builtin_registry(),
        prices=prices,
        clock=clock or FixedClock(),
        config=StepConfig(**config),
        response_cache=response_cache,
        breaker=breaker,
        tenant_limits=tenant_limits,
        tools=tools,
    )


def lifecycle(
    store: RunStore,
    queue: RunQueue | None = None,
    clock: Clock | None = None,
    notifier: WebhookNotifier | None = None,
) -> Lifecycle:
    return Lifecycle(store=store, clock=clock or FixedClock(), queue=queue, notifier=notifier)


def intake(
    store: RunStore,
    workflow: Workflow | None = None,
    queue: RunQueue | None = None,
    notifier: WebhookNotifier | None = None,
) -> Intake:
    queue = queue or RecordingQueue()
    return Intake(store=store, workflow=workflow or RecordingWorkflow(), queue=queue,
                  lifecycle=lifecycle(store, queue, notifier=notifier))  # fmt: skip


def run_tools(store: RunStore, outcome: StepOutcome, toolbox: Toolbox | None = None) -> list[ToolOutcome]:
    """What the workflow's Tools map does after a step that asked for tools."""
    toolbox = toolbox or builtin_registry()
    return [run_tool(store, toolbox, outcome.ref, call.id) for call in outcome.tool_calls]


def drive(store: RunStore, model: ModelClient, key: RunKey, *, max_steps: int = 100, **config: Any) -> StepOutcome:
    """What the state machine does for one run: Step, Tools, Step, ... then Finalize."""
    steps, number = runner(store, model, **config), 0
    for _ in range(max_steps):
        outcome = steps.run(StepRef(key, number))
        if outcome.status is not None:
            lifecycle(store).end(key, outcome.status, outcome.error)
            return outcome
        run_tools(store, outcome)
        number = outcome.next_step
    raise AssertionError(f"run {key} did not finish in {max_steps} steps")
