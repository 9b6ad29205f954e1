"""Use cases of the agent core. Each receives its ports as parameters and only orchestrates."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from functions.agent.breaker import Breaker
from functions.agent.budgets import BudgetLimits, estimate_prompt_tokens
from functions.agent.caching import CacheTTL, place_cache_breakpoints
from functions.agent.circuit import circuit_key
from functions.agent.errors import (
    BudgetRefusedError,
    FatalModelError,
    RetryableModelError,
    RunAlreadyExistsError,
    RunNotActiveError,
    RunNotFoundError,
    StepAlreadySavedError,
    StepwiseError,
    UnknownModelError,
)
from functions.agent.models import (
    ModelRequest,
    ModelResponse,
    Reservation,
    Run,
    RunError,
    RunRequest,
    RunStatus,
    StepDecision,
    StepRecord,
    ToolCall,
    ToolOutcome,
)
from functions.agent.ports import Clock, ModelClient, ResponseCache, RunHistory, RunQueue, RunStore, Workflow
from functions.agent.pricing import PriceBook
from functions.agent.response_cache import as_hit, cache_key, cacheable
from functions.agent.routing import Route, RoutingConfig, choose, default_routing, escalation, supersedes
from functions.tools.registry import ToolRegistry

DEFAULT_SYSTEM_PROMPT = (
    "You are a careful assistant running as a tool-using agent. Use the tools when they give a more "
    "reliable answer than you can, then answer the user's task concisely."
)


class RequestRejectedError(StepwiseError):
    """The request is well-formed JSON but cannot be accepted (unknown model or tool)."""


class IdempotencyConflictError(StepwiseError):
    """The Idempotency-Key was used before with a different request body."""


class EnqueueError(StepwiseError):
    """The intake queue refused the run."""

    def __init__(self, message: str, *, retry_with_key: bool) -> None:
        super().__init__(message)
        self.retry_with_key = retry_with_key


class RunConflictError(StepwiseError):
    """The run is not in a state that allows the operation (e.g. cancelling a finished run)."""


def _iso(clock: Clock) -> str:
    return clock.now().isoformat(timespec="milliseconds")


def request_hash(request: RunRequest) -> str:
    canonical = json.dumps(request.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def run_id_for_key(tenant: str, idempotency_key: str) -> str:
    """A run id derived from the tenant and the client's Idempotency-Key: the same key names the same run."""
    return "run_" + hashlib.sha256(f"{tenant}\x00{idempotency_key}".encode()).hexdigest()[:26]


@dataclass(frozen=True)
class Accepted:
    run: Run
    replayed: bool


def create_run(
    *,
    store: RunStore,
    queue: RunQueue,
    registry: ToolRegistry,
    prices: PriceBook,
    clock: Clock,
    new_id: Callable[[], str],
    tenant: str,
    request: RunRequest,
    default_model: str,
    idempotency_key: str | None = None,
    routing: RoutingConfig | None = None,
    providers: set[str] | None = None,
) -> Accepted:
    """Validate, persist as QUEUED and enqueue. Bad input raises before anything is written.

    ``model`` may name a routing policy instead of a model; every model it (or its downgrade) may use
    must have a price."""
    model = request.model or default_model
    usable = (routing or default_routing()).models_of(model) + (request.fallbacks or [])
    unpriced = [m for m in usable if not prices.knows(m)]
    today = clock.now().date().isoformat()
    retired = [m for m in usable if m not in unpriced and (eol := prices.price(m).end_of_life) and eol < today]
    if retired and model in retired:
        raise RequestRejectedError(f"model {model!r} reached end-of-life on {prices.price(model).end_of_life}")
    unserved = [
        m for m in usable if m not in unpriced and providers is not None and prices.price(m).provider not in providers
    ]
    if unserved:
        raise RequestRejectedError(
            f"model {unserved[0]!r} is served by {prices.price(unserved[0]).provider}, which this deployment "
            "does not call (deploy with -c bedrock_fallback=true)"
        )
    if unpriced:
        what = "model" if unpriced == [model] else f"routing policy {model!r} uses model"
        raise RequestRejectedError(f"unknown {what} {', '.join(map(repr, unpriced))}: no price is configured for it")
    tools = registry.check(request.tools if request.tools is not None else registry.names)
    digest = request_hash(request)
    run_id = run_id_for_key(tenant, idempotency_key) if idempotency_key else new_id()
    now = _iso(clock)
    run = Run(
        run_id=run_id,
        tenant=tenant,
        status=RunStatus.QUEUED,
        input=request.input,
        model=model,
        tools=tools,
        budget=request.budget,
        metadata=request.metadata,
        max_tokens_per_call=request.max_tokens_per_call,
        response_cache=request.response_cache,
        fallbacks=request.fallbacks,
        request_hash=digest,
        created_at=now,
        updated_at=now,
    )
    try:
        store.create_run(run)
    except RunAlreadyExistsError:
        existing = store.get_run(tenant, run_id)
        if existing is None:  # pragma: no cover - a put that failed on existence cannot read nothing back
            raise
        if existing.request_hash != digest:
            raise IdempotencyConflictError("Idempotency-Key was already used with a different request body") from None
        if existing.status is RunStatus.QUEUED:
            # The first attempt may have died between the write and the send; intake is idempotent.
            try:
                queue.enqueue(tenant, run_id)
            except Exception as exc:
                raise EnqueueError(f"the run could not be queued: {exc}", retry_with_key=True) from exc
        return Accepted(existing, replayed=True)
    try:
        queue.enqueue(tenant, run_id)
    except Exception as exc:
        if idempotency_key is None:  # nobody can resume it: end it with the reason
            store.finish_run(
                tenant, run_id, RunStatus.FAILED, error=RunError(code="ENQUEUE_FAILED", message=str(exc)[:500])
            )
        # With a key the run stays QUEUED: retrying the request with the same key enqueues it again.
        raise EnqueueError(f"the run could not be queued: {exc}", retry_with_key=idempotency_key is not None) from exc
    return Accepted(run, replayed=False)


def start_run(
    *,
    store: RunStore,
    workflow: Workflow,
    tenant: str,
    run_id: str,
    last_attempt: bool = False,
    queue: RunQueue | None = None,
) -> str:
    """Intake: start the run's execution once. Returns what happened, for the log.

    On the last delivery before the dead-letter queue a failure to start also ends the run, with the reason,
    so no run waits in QUEUED for a workflow that will never come.
    """
    run = store.get_run(tenant, run_id)
    if run is None:
        return "missing"
    if run.status is not RunStatus.QUEUED:
        return f"skipped:{run.status.value}"
    try:
        started = workflow.start(tenant, run_id)
    except Exception as exc:
        if last_attempt:
            reason = RunError(code="INTAKE_FAILED", message=f"the workflow could not be started: {exc}"[:1000])
            store.finish_run(tenant, run_id, RunStatus.FAILED, error=reason)
        raise
    if queue is not None:  # a watchdog for the run: it must keep moving or end (see watch_run)
        queue.schedule_watch(tenant, run_id)
    return "started" if started else "duplicate"


def watch_run(*, store: RunStore, workflow: Workflow, queue: RunQueue, tenant: str, run_id: str) -> str:
    """Stuck-run detection. A run that has not ended must have a running execution; if its execution is
    gone or ended without ending the run (a lost event, a failed finaliser), the run ends here with why."""
    run = store.get_run(tenant, run_id)
    if run is None or run.status.terminal:
        return "ended"
    execution = workflow.status(run_id)
    if execution == "RUNNING":
        queue.schedule_watch(tenant, run_id)
        return "running"
    status = {"TIMED_OUT": RunStatus.TIMED_OUT, "ABORTED": RunStatus.CANCELLED}.get(execution or "", RunStatus.FAILED)
    what = f"its execution ended {execution}" if execution else "it has no execution"
    reason = RunError(code="STUCK", message=f"the run was {run.status.value} but {what}; ended by the run watchdog")
    finalize_run(store=store, tenant=tenant, run_id=run_id, status=status, error=reason, queue=queue)
    return f"stuck:{execution}"


def cancel_run(*, store: RunStore, workflow: Workflow, queue: RunQueue, tenant: str, run_id: str) -> Run:
    """Cancel a run. A reservation it holds may cover a model call still in flight: it stays until that call
    settles it, or until the delayed release (after the call can no longer be running) frees it."""
    run = store.get_run(tenant, run_id)
    if run is None:
        raise RunNotFoundError(run_id)
    if run.status.terminal:
        raise RunConflictError(f"run {run_id} already ended with status {run.status.value}")
    cancelled = store.finish_run(
        tenant,
        run_id,
        RunStatus.CANCELLED,
        error=RunError(code="CANCELLED", message="cancelled by request"),
        release=False,
    )
    if not cancelled:  # it ended between the read and the write
        ended = store.get_run(tenant, run_id)
        raise RunConflictError(f"run {run_id} already ended with status {ended.status.value if ended else 'unknown'}")
    workflow.stop(run_id, "cancelled by request")
    if run.reservation is not None:
        queue.schedule_release(tenant, run_id, run.reservation.step)
    final = store.get_run(tenant, run_id)
    assert final is not None
    return final


# ---------------------------------------------------------------------------------------------- steps


@dataclass(frozen=True)
class StepOutcome:
    """What the workflow needs to route the run. Kept small: everything else is in the store."""

    run_id: str
    tenant: str
    step: int
    decision: StepDecision
    tool_calls: list[ToolCall] = field(default_factory=list)
    status: RunStatus | None = None
    error: RunError | None = None
    replayed: bool = False
    record: StepRecord | None = None
    budget_percent: dict[str, float] = field(default_factory=dict)  # before this step's call (for metrics)
    wait_seconds: int = 0  # with decision WAIT
    waits: int = 0  # consecutive waits of this step so far

    def state(self) -> dict[str, Any]:
        waiting = self.decision is StepDecision.WAIT
        return {
            "run_id": self.run_id,
            "tenant": self.tenant,
            "completed_step": self.step,
            "step": self.step if waiting else self.step + 1,
            "wait_seconds": self.wait_seconds,
            "waits": self.waits if waiting else 0,
            "next": self.decision.value,
            "tool_calls": [{"id": call.id, "name": call.name} for call in self.tool_calls],
            "status": self.status.value if self.status else None,
            "error": self.error.model_dump() if self.error else None,
        }


def check_limits(run: Run) -> RunError | None:
    """The run's own budget, checked before every model call."""
    budget = run.budget
    if run.steps >= budget.max_steps:
        return RunError(code="MAX_STEPS", message=f"run reached max_steps={budget.max_steps} without a final answer")
    if budget.max_tokens is not None and run.usage.total_tokens >= budget.max_tokens:
        return RunError(
            code="MAX_TOKENS",
            message=f"run used {run.usage.total_tokens} tokens, budget max_tokens={budget.max_tokens}",
        )
    if budget.max_usd is not None and run.cost_usd >= budget.max_usd:
        return RunError(code="MAX_USD", message=f"run spent ${run.cost_usd:.6f}, budget max_usd=${budget.max_usd}")
    return None


def build_conversation(history: RunHistory) -> list[dict[str, Any]]:
    """The Messages API conversation, rebuilt from the run's input, steps and tool results."""
    messages: list[dict[str, Any]] = [{"role": "user", "content": history.run.input}]
    for record in history.steps:
        if record.superseded:
            continue
        messages.append({"role": "assistant", "content": record.content})
        calls = record.tool_calls()
        if not calls:
            continue
        results = []
        for call in calls:
            outcome = history.tool_results.get((record.step, call.id))
            results.append(
                {
                    "type": "tool_result",
                    "tool_use_id": call.id,
                    "content": outcome.content if outcome else "no result was recorded for this tool call",
                    "is_error": outcome.is_error if outcome else True,
                }
            )
        messages.append({"role": "user", "content": results})
    return messages


def decide(response: ModelResponse, max_tokens: int) -> tuple[StepDecision, RunStatus | None, RunError | None]:
    """Route on the model's stop reason. Anything but a clean finish or a tool request ends the run with a reason."""
    stop = response.stop_reason
    if stop == "max_tokens":
        return (
            StepDecision.FINISH,
            RunStatus.FAILED,
            RunError(
                code="MAX_TOKENS_PER_CALL",
                message=f"the model's output was cut off at max_tokens_per_call={max_tokens}",
            ),
        )
    if stop == "tool_use" and response.tool_calls():
        return StepDecision.TOOLS, None, None
    if stop in ("end_turn", "stop_sequence"):
        return StepDecision.FINISH, RunStatus.SUCCEEDED, None
    if stop == "refusal":
        return StepDecision.FINISH, RunStatus.FAILED, RunError(code="REFUSAL", message="the model declined the task")
    return (
        StepDecision.FINISH,
        RunStatus.FAILED,
        RunError(code="UNEXPECTED_STOP", message=f"the model stopped with an unsupported stop_reason {stop!r}"),
    )


def _outcome_of(record: StepRecord, tenant: str, replayed: bool) -> StepOutcome:
    return StepOutcome(
        run_id=record.run_id,
        tenant=tenant,
        step=record.step,
        decision=record.decision,
        tool_calls=record.tool_calls() if record.decision is StepDecision.TOOLS else [],
        status=record.status,
        error=record.error,
        replayed=replayed,
        record=record,
    )


def execute_step(
    *,
    store: RunStore,
    model: ModelClient,
    registry: ToolRegistry,
    prices: PriceBook,
    clock: Clock,
    tenant: str,
    run_id: str,
    step: int,
    system: str = DEFAULT_SYSTEM_PROMPT,
    limits: BudgetLimits | None = None,
    cache_ttl: CacheTTL | None = None,
    routing: RoutingConfig | None = None,
    response_cache: ResponseCache | None = None,
    response_cache_default: bool = False,
    breaker: Breaker | None = None,
    attempt: int = 0,
    waits: int = 0,
) -> StepOutcome:
    """One model call of a run: reserve its worst-case cost against every budget, call the model, store the
    answer, then save the step and settle the real cost in one transaction. Safe to retry at any point: a
    saved step is replayed, a stored answer is settled without calling the model again, a reservation (and
    the route it was made for) is reused."""
    limits = limits or BudgetLimits()
    routing = routing or default_routing()
    history = store.load_history(tenant, run_id)
    run = history.run

    def finish(status: RunStatus, error: RunError | None, **extra: Any) -> StepOutcome:
        """This step ends the run (the Finalize state records the status)."""
        return StepOutcome(run_id, tenant, step, StepDecision.FINISH, status=status, error=error, **extra)

    if step < len(history.steps):  # retried after the answer was saved: never call the model again
        return _outcome_of(history.steps[step], tenant, replayed=True)
    if run.status.terminal:
        return finish(run.status, run.error)
    if step != run.steps:
        raise StepwiseError(f"step {step} requested but run {run_id} has completed {run.steps} steps")
    held = run.reservation if run.reservation is not None and run.reservation.step == step else None
    if held is None:  # a step that already reserved goes on with its call, whatever the limits say now
        exceeded = check_limits(run)
        if exceeded:
            return finish(RunStatus.BUDGET_EXCEEDED, exceeded)

    percent = budget_usage(store=store, limits=limits, tenant=tenant, day=clock.now().date().isoformat())
    if run.budget.max_usd is not None:
        percent["Run"] = float(run.cost_usd / Decimal(str(run.budget.max_usd)) * 100)
    route = (
        Route(held.model, held.reason, cheap=held.cheap)
        if held
        else choose(
            config=routing, run_model=run.model, steps=history.steps, tool_results=history.tool_results,
            budget_percent=percent,
        )
    )  # fmt: skip

    def request_for(chosen: Route) -> ModelRequest:
        request = ModelRequest(
            model=chosen.model,
            system=system,
            messages=build_conversation(history),
            tools=registry.schemas(run.tools),
            max_tokens=run.max_tokens_per_call,
        )
        # tools + system, the previous and the latest turn: see caching.py
        return place_cache_breakpoints(request, ttl=cache_ttl) if cache_ttl is not None else request

    request = request_for(route)
    try:
        prices.price(request.model)  # before the provider bills anything
    except UnknownModelError as exc:
        unpriced = RunError(code="UNKNOWN_MODEL", message=str(exc))
        return finish(RunStatus.FAILED, unpriced)

    def settle(
        *, run: Run, route: Route, request: ModelRequest, response: ModelResponse, started: datetime, finished: datetime
    ) -> StepOutcome:
        # a cheap answer is redone only if a step is left for it and the redo would use another model
        can_redo = step + 1 < run.budget.max_steps and escalation(routing, run.model, percent) != route.model
        return _settle(
            store=store, prices=prices, tenant=tenant, run=run, step=step, route=route, request=request,
            response=response, started=started, finished=finished, percent=percent, can_redo=can_redo,
        )  # fmt: skip

    if step in history.pending:  # answered before, but the settlement failed: settle it, on the route it was for
        now = clock.now()
        return settle(run=run, route=route, request=request, response=history.pending[step], started=now, finished=now)
    if breaker is not None:  # a model whose circuit is open is skipped for the next one that is healthy
        healthy = _healthy_route(breaker, prices, routing, run, route, attempt)
        if healthy != route:
            route, request = healthy, request_for(healthy)

    prompt_tokens = estimate_prompt_tokens(request)
    if (
        held is None
        and run.budget.max_tokens is not None
        and run.usage.total_tokens + prompt_tokens + request.max_tokens > run.budget.max_tokens
    ):
        too_many = RunError(
            code="MAX_TOKENS",
            message=f"run used {run.usage.total_tokens} tokens and the next call may use up to "
            f"{prompt_tokens + request.max_tokens}; budget max_tokens={run.budget.max_tokens}",
        )
        return finish(RunStatus.BUDGET_EXCEEDED, too_many)
    use_cache = response_cache is not None and (
        run.response_cache if run.response_cache is not None else response_cache_default
    )
    key = cache_key(request) if use_cache else None
    cached = response_cache.get(tenant, key) if response_cache is not None and key else None
    if cached is not None:  # served without a model call: nothing to pay (a reservation held is released)
        now = clock.now()
        return settle(run=run, route=route, request=request, response=as_hit(cached), started=now, finished=now)
    moving = held is not None and held.model != route.model  # re-routed to a fallback: the reservation follows
    if held is None or moving:
        wanted = Reservation(
            step=step,
            amount_usd=prices.worst_case(request.model, prompt_tokens, request.max_tokens),
            day=held.day if held is not None else clock.now().date().isoformat(),
            model=route.model,
            cheap=route.cheap,
            reason=route.reason,
        )
        try:
            held = store.reserve(run, wanted, limits, replacing=held if moving else None)
        except BudgetRefusedError as exc:
            return finish(
                RunStatus.BUDGET_EXCEEDED, RunError(code=exc.code, message=exc.message), budget_percent=percent
            )
        except RunNotActiveError:
            current = store.get_run(tenant, run_id)
            if current is None or not current.status.terminal:
                raise
            return finish(current.status, current.error)
        run = run.model_copy(update={"reservation": held})
        if held.model != route.model:  # a duplicate invocation reserved first, for another route: follow it
            route = Route(held.model, held.reason, cheap=held.cheap)
            request = request_for(route)
    started = clock.now()
    circuit = circuit_key(prices.price(request.model).provider, request.model)
    try:
        response = model.create(request)
    except RetryableModelError as exc:
        if breaker is not None:
            breaker.failed(circuit)
        if exc.retry_after is not None and exc.retry_after <= MAX_WAIT_SECONDS and waits < MAX_WAITS:
            # the provider said when: wait in a Wait state (no Lambda sleeps), keeping the reservation
            return StepOutcome(
                run_id, tenant, step, StepDecision.WAIT, wait_seconds=max(1, math.ceil(exc.retry_after)),
                waits=waits + 1, budget_percent=percent,
            )  # fmt: skip
        raise
    except FatalModelError as exc:
        failed = RunError(code=exc.code, message=exc.message)
        return finish(RunStatus.FAILED, failed)
    finished = clock.now()
    store.save_pending(run, step, response)  # a billed answer is never lost to a failed settlement
    if breaker is not None:
        breaker.succeeded(circuit)
    outcome = settle(run=run, route=route, request=request, response=response, started=started, finished=finished)
    if response_cache is not None and key is not None and cacheable(response) and not outcome.replayed:
        response_cache.put(tenant, key, response)
    return outcome


MAX_WAITS = 5  # consecutive retry-after waits of one step; then the error goes to the workflow's Retry
MAX_WAIT_SECONDS = 300  # a longer retry-after is left to the Retry's capped backoff
FALLBACK_AFTER_RETRIES = 2  # Step Functions retries of one step before its fallbacks are tried first


def _healthy_route(
    breaker: Breaker, prices: PriceBook, routing: RoutingConfig, run: Run, route: Route, attempt: int
) -> Route:
    """The route's model, or the first fallback whose circuit lets a call through.

    Raises RetryableModelError when every circuit is open (Step Functions backs off and retries)."""
    candidates = list(dict.fromkeys([route.model, *(run.fallbacks or routing.fallbacks.get(route.model, []))]))
    retried_out = attempt >= FALLBACK_AFTER_RETRIES and len(candidates) > 1
    if retried_out:  # the primary keeps failing: try the fallbacks first, the primary last
        candidates = candidates[1:] + candidates[:1]
    for model in candidates:
        if breaker.allow(circuit_key(prices.price(model).provider, model)):
            if model == route.model:
                return route
            why = f"retry {attempt} of {route.model}" if retried_out else f"circuit open for {route.model}"
            return Route(model, f"fallback ({why}); {route.reason}", cheap=route.cheap)
    raise RetryableModelError(f"every circuit is open for {', '.join(candidates)}")


def _settle(
    *,
    store: RunStore,
    prices: PriceBook,
    tenant: str,
    run: Run,
    step: int,
    route: Route,
    request: ModelRequest,
    response: ModelResponse,
    started: datetime,
    finished: datetime,
    percent: dict[str, float],
    can_redo: bool,
) -> StepOutcome:
    """Decide what the response means for the run, then save the step and settle its cost."""
    run_id = run.run_id
    decision, status, error = decide(response, run.max_tokens_per_call)
    superseded_by = supersedes(route, response, error) if can_redo else None
    if superseded_by:
        decision, status, error = StepDecision.REDO, None, None
    record = StepRecord(
        run_id=run_id,
        step=step,
        model=response.model,
        provider=response.provider,
        stop_reason=response.stop_reason,
        content=response.content,
        usage=response.usage,
        cost_usd=prices.cost(request.model, response.usage),
        decision=decision,
        status=status,
        error=error,
        requested_model=route.model,
        route_reason=route.reason + (f"; superseded: {superseded_by}" if superseded_by else ""),
        cheap=route.cheap,
        superseded=bool(superseded_by),
        started_at=started.isoformat(timespec="milliseconds"),
        finished_at=finished.isoformat(timespec="milliseconds"),
        duration_ms=int((finished - started).total_seconds() * 1000),
    )
    output = response.text() if status is RunStatus.SUCCEEDED else None
    try:
        store.save_step(run, record, output)
    except StepAlreadySavedError:  # a concurrent duplicate won the race: use its answer
        saved = store.get_step(tenant, run_id, step)
        assert saved is not None
        return _outcome_of(saved, tenant, replayed=True)
    except RunNotActiveError:
        # The run ended (cancelled, timed out) while the model answered. The provider billed the call: account
        # it, against the reservation if the run still holds it (a delayed release frees it only otherwise).
        for _ in range(2):
            current = store.get_run(tenant, run_id)
            if current is None or current.steps != step:
                break
            try:
                store.save_step(current, record, None, require_active=False)
                break
            except StepAlreadySavedError:
                break
            except RunNotActiveError:  # the delayed release landed between the read and the write: re-read
                continue
        current = store.get_run(tenant, run_id)
        final = current.status if current else RunStatus.CANCELLED
        return StepOutcome(
            run_id, tenant, step, StepDecision.FINISH, status=final, error=current.error if current else None
        )
    return dataclasses.replace(_outcome_of(record, tenant, replayed=False), budget_percent=percent)


def budget_usage(*, store: RunStore, limits: BudgetLimits, tenant: str, day: str) -> dict[str, float]:
    """Percent of each configured daily budget committed (spent + in flight) on ``day``."""
    if limits.tenant_daily_usd is None and limits.global_daily_usd is None:
        return {}
    tenant_committed, global_committed = store.committed_today(tenant, day)
    usage = {}
    if limits.tenant_daily_usd is not None:
        usage["TenantDaily"] = float(tenant_committed / limits.tenant_daily_usd * 100)
    if limits.global_daily_usd is not None:
        usage["GlobalDaily"] = float(global_committed / limits.global_daily_usd * 100)
    return usage


def execute_tool(
    *, store: RunStore, registry: ToolRegistry, tenant: str, run_id: str, step: int, tool_use_id: str
) -> ToolOutcome:
    """Run one tool call of a step, once. A retried invocation returns the stored result."""
    run, record, stored = store.load_tool_context(tenant, run_id, step, tool_use_id)
    if stored is not None:
        return stored
    if run is None or record is None:
        raise RunNotFoundError(f"run {run_id} step {step} not found")
    call = next((c for c in record.tool_calls() if c.id == tool_use_id), None)
    if call is None:
        raise StepwiseError(f"step {step} of run {run_id} has no tool call {tool_use_id}")
    if run.status.terminal:
        outcome = ToolOutcome(
            tool_use_id=call.id, name=call.name, content="run ended; tool not executed", is_error=True
        )
    else:
        outcome = registry.execute(call, run.tools)
    return store.save_tool_result(tenant, run_id, step, outcome)


def finalize_run(
    *,
    store: RunStore,
    tenant: str,
    run_id: str,
    status: RunStatus,
    error: RunError | None,
    queue: RunQueue | None = None,
) -> Run:
    """End the run. Without ``queue`` no model call can be in flight (Finalize, MarkFailed): a reservation is
    released at once. With it (a timed-out or stopped execution) the release is scheduled for later."""
    held = store.get_run(tenant, run_id) if queue is not None else None
    store.finish_run(tenant, run_id, status, error=error, release=queue is None)
    if queue is not None and held is not None and held.reservation is not None:
        queue.schedule_release(tenant, run_id, held.reservation.step)
    run = store.get_run(tenant, run_id)
    if run is None:
        raise RunNotFoundError(run_id)
    return run


def release_reservation(*, store: RunStore, tenant: str, run_id: str, step: int) -> str:
    """The delayed release of an ended run's reservation (its call, if any, can no longer be running)."""
    return "released" if store.release_reservation(tenant, run_id, step) else "nothing held"


def mark_failed(*, store: RunStore, tenant: str, run_id: str, error: str | None, cause: str | None) -> Run:
    """The workflow's Catch: the run ends FAILED with the error and the last step it completed."""
    current = store.get_run(tenant, run_id)
    reason = failure_reason(error, cause)
    if current is not None:
        done = f"after step {current.steps - 1}" if current.steps else "before its first step completed"
        reason = reason.model_copy(update={"message": f"{reason.message} ({done})"})
    return finalize_run(store=store, tenant=tenant, run_id=run_id, status=RunStatus.FAILED, error=reason)


def failure_reason(error: str | None, cause: str | None) -> RunError:
    """Turn a Step Functions Catch (Error, Cause) into a run error a person can read."""
    message = cause or ""
    try:
        parsed = json.loads(message)
        if isinstance(parsed, dict):
            message = str(parsed.get("errorMessage") or parsed.get("Cause") or message)
    except (TypeError, ValueError):
        pass
    return RunError(code=error or "UNKNOWN", message=(message or "the workflow failed without a cause")[:1000])
