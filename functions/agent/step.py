"""One step of a run: one model call, reserved for, made, stored and settled. Safe to retry at any point.

``StepRunner.run`` reads as the sequence of phases:

    guard -> route -> (settle a stored answer) -> avoid open circuits -> token budget -> response cache
          -> reserve -> call -> settle -> (the fast tool calls it asked for, run here)

A phase that ends the step early (a replay, a refusal, a wait) raises ``_Finished`` with the outcome.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from functions.agent import ledger
from functions.agent.breaker import Breaker
from functions.agent.caching import CacheTTL, marker_ttls
from functions.agent.circuit import circuit_key
from functions.agent.conversation import DEFAULT_SYSTEM_PROMPT, ContextPolicy, model_request
from functions.agent.errors import (
    BudgetRefusedError,
    FatalModelError,
    NoTimeForCallError,
    RetryableModelError,
    RunNotActiveError,
    StepAlreadySavedError,
    StepwiseError,
    StoreConflictError,
    UnknownModelError,
)
from functions.agent.ledger import BudgetLimits, estimate_prompt_tokens
from functions.agent.lifecycle import ended_how, settle_calls
from functions.agent.models import (
    AgentConfig,
    ModelRequest,
    ModelResponse,
    Reservation,
    Run,
    RunError,
    RunStatus,
    StepDecision,
    StepRecord,
    StepRef,
    ToolCall,
    ToolOutcome,
)
from functions.agent.ports import Clock, ModelClient, ResponseCache, RunHistory, RunStore, TenantLimitsSource, Toolbox
from functions.agent.pricing import CallPrice, PriceBook
from functions.agent.response_cache import as_hit, cache_key, cacheable
from functions.agent.routing import Route, RoutingConfig, choose, default_routing, escalation, supersedes
from functions.agent.tenants import budget_limits
from functions.agent.tool import ToolRunner, workflow_calls

MAX_WAITS = 5  # consecutive retry-after waits of one step; then the error goes to the workflow's Retry
MAX_WAIT_SECONDS = 300  # a longer retry-after is left to the Retry's capped backoff
FALLBACK_AFTER_RETRIES = 2  # Step Functions retries of one step before its fallbacks are tried first


@dataclass(frozen=True)
class StepOutcome:
    """What the workflow needs to route the run. Kept small: everything else is in the store."""

    ref: StepRef  # the step this invocation took
    decision: StepDecision
    tool_calls: list[ToolCall] = field(default_factory=list)
    status: RunStatus | None = None
    error: RunError | None = None
    replayed: bool = False
    record: StepRecord | None = None
    budget_percent: dict[str, float] = field(default_factory=dict)  # before this step's call (for metrics)
    wait_seconds: int = 0  # with decision WAIT
    waits: int = 0  # consecutive waits of this step so far
    agent: AgentConfig | None = None  # a session's: how each of its calls is run (see workflow_calls)
    # for metrics: the kind of retryable error that made this step WAIT; whether its call went to a fallback model
    model_error: str | None = None
    fallback: bool = False
    # the workflow lets the step run fast calls itself (see StepRunner.run): then ``tool_calls`` are those left for
    # the Tools map, and with none left the workflow goes on without it
    in_step: bool = False
    ran_in_step: list[ToolOutcome] = field(default_factory=list)

    @property
    def next_step(self) -> int:
        """The step the workflow takes next: this one again after a wait, else the one after it."""
        return self.ref.step if self.decision is StepDecision.WAIT else self.ref.step + 1

    def state(self) -> dict[str, Any]:
        """The state machine's state after the step (the Route choice, the Tools map and Finalize read it)."""
        waiting = self.decision is StepDecision.WAIT
        return {
            "run_id": self.ref.key.run_id,
            "tenant": self.ref.key.tenant,
            "completed_step": self.ref.step,
            "step": self.next_step,
            "wait_seconds": self.wait_seconds,
            "waits": self.waits if waiting else 0,
            "next": self.next,
            "tool_calls": workflow_calls(self.tool_calls, self.agent),
            "status": self.status.value if self.status else None,
            "error": self.error.model_dump() if self.error else None,
        }

    @property
    def next(self) -> str:
        """The Route choice's input: the decision, or with no call left for the Tools map (every call ran in the
        step), ``step`` (the next step at once) or ``idle`` (the rest wait for the session's client: Finalize)."""
        if self.in_step and not self.tool_calls and self.decision in (StepDecision.TOOLS, StepDecision.ACTION):
            return "step" if self.decision is StepDecision.TOOLS else "idle"
        return self.decision.value


@dataclass(frozen=True)
class StepConfig:
    system: str = DEFAULT_SYSTEM_PROMPT
    limits: BudgetLimits = field(default_factory=BudgetLimits)
    prompt_cache_ttl: CacheTTL | None = None  # prompt caching placed on every call (None: off)
    routing: RoutingConfig = field(default_factory=default_routing)
    cache_responses_by_default: bool = False  # for runs that do not say (a run's own choice wins)
    context: ContextPolicy | None = field(default_factory=ContextPolicy)  # None: never clear old tool results


def decide(response: ModelResponse, max_tokens: int) -> tuple[StepDecision, RunStatus | None, RunError | None]:
    """Route on the model's stop reason. Anything but a clean finish or a tool request ends the run with a reason."""
    stop = response.stop_reason
    if stop == "max_tokens":
        cut = RunError(
            code="MAX_TOKENS_PER_CALL", message=f"the model's output was cut off at max_tokens_per_call={max_tokens}"
        )
        return StepDecision.FINISH, RunStatus.FAILED, cut
    if stop == "tool_use" and response.tool_calls():
        return StepDecision.TOOLS, None, None
    if stop in ("end_turn", "stop_sequence"):
        return StepDecision.FINISH, RunStatus.SUCCEEDED, None
    if stop == "refusal":
        return StepDecision.FINISH, RunStatus.FAILED, RunError(code="REFUSAL", message="the model declined the task")
    unexpected = RunError(code="UNEXPECTED_STOP", message=f"the model stopped with an unsupported stop_reason {stop!r}")
    return StepDecision.FINISH, RunStatus.FAILED, unexpected


def replayed(ref: StepRef, record: StepRecord, agent: AgentConfig | None) -> StepOutcome:
    """The outcome of a step whose record is saved (a retried or duplicated invocation)."""
    return _outcome_of(ref, record, agent, replayed=True)


def _outcome_of(ref: StepRef, record: StepRecord, agent: AgentConfig | None, *, replayed: bool) -> StepOutcome:
    """The workflow runs the calls the deployment executes; with ACTION the turn then idles for the rest."""
    if record.decision is StepDecision.ACTION and agent is not None:
        calls = [call for call in record.tool_calls() if not agent.needs_client(call.name)]
        return StepOutcome(ref, record.decision, calls, RunStatus.IDLE, replayed=replayed, record=record,
                           agent=agent)  # fmt: skip
    calls = record.tool_calls() if record.decision is StepDecision.TOOLS else []
    return StepOutcome(ref, record.decision, calls, record.status, record.error, replayed=replayed, record=record,
                       agent=agent)  # fmt: skip


class _Finished(Exception):  # control flow: never escapes StepRunner.run
    def __init__(self, outcome: StepOutcome) -> None:
        self.outcome = outcome


@dataclass
class _Answer:
    response: ModelResponse
    started: datetime
    finished: datetime


@dataclass
class _Step:
    """What one invocation knows about its step, phase by phase."""

    ref: StepRef
    history: RunHistory
    attempt: int
    waits: int
    execution: str | None = None
    run: Run = field(init=False)
    held: Reservation | None = None  # the reservation the run holds for this step
    percent: dict[str, float] = field(default_factory=dict)
    limits: BudgetLimits = field(default_factory=BudgetLimits)  # the tenant's: its own daily budget, else the default
    route: Route = field(init=False)
    request: ModelRequest = field(init=False)
    prompt_tokens: int = 0
    cache_key: str | None = None
    may_call: Callable[[], bool] | None = None  # see StepRunner.run

    def __post_init__(self) -> None:
        self.run = self.history.run

    def finish(self, status: RunStatus, error: RunError | None, **extra: Any) -> _Finished:
        """This step ends the run (the Finalize state records the status)."""
        return _Finished(StepOutcome(self.ref, StepDecision.FINISH, status=status, error=error, **extra))


class StepRunner:
    """Takes steps of runs, from its ports and a config (wiring assembles it per invocation from adapters
    built once per container)."""

    def __init__(
        self,
        *,
        store: RunStore,
        model: ModelClient,
        toolbox: Toolbox,
        prices: PriceBook,
        clock: Clock,
        config: StepConfig | None = None,
        response_cache: ResponseCache | None = None,
        breaker: Breaker | None = None,
        tenant_limits: TenantLimitsSource | None = None,
        tools: ToolRunner | None = None,
    ) -> None:
        self.store, self.model, self.toolbox, self.prices, self.clock = store, model, toolbox, prices, clock
        self.config = config or StepConfig()
        self.response_cache = response_cache
        self.breaker = breaker
        self.tenant_limits = tenant_limits
        self.tools = tools  # runs the fast calls a step asks for, in the step

    def run(
        self,
        ref: StepRef,
        *,
        attempt: int = 0,
        waits: int = 0,
        execution: str | None = None,
        in_step: bool = False,
        may_call: Callable[[], bool] | None = None,
    ) -> StepOutcome:
        """One model call of the run: reserve its worst-case cost against every budget, call the model, store
        the answer, then save the step and settle the real cost in one transaction. ``attempt`` is Step
        Functions' retry count of this step, ``waits`` its retry-after waits so far, ``execution`` the name of
        the execution that took it (a session's earlier turn's execution ends without touching the session).

        ``in_step`` (the workflow can go on without its Tools map): the fast calls of a step this invocation settled
        run here (``ToolRunner.run_in_step``); those of a replayed step (a retry, a duplicate) that have no final
        result yet go to the Map, whose failure handling then covers an invocation that died among them (a call whose
        final result is stored is done: the Map would only return it).

        ``may_call`` (a later step of a step loop): asked just before the step reserves and calls the model; False
        (no time left for the call) raises ``NoTimeForCallError`` with nothing reserved or called.

        Raises:
            NoTimeForCallError: ``may_call`` said no."""
        step = _Step(ref, self.store.load_history(ref.key), attempt, waits, execution)
        step.may_call = may_call
        try:
            outcome = self._take(step)
        except _Finished as finished:
            outcome = finished.outcome
        finally:
            if self.breaker is not None:  # a probe the step was let through for and did not call with: the next's
                self.breaker.release_probes()
        if not in_step:
            return outcome
        if outcome.replayed:
            results = step.history.tool_results
            left = [c for c in outcome.tool_calls if not ((r := results.get((ref.step, c.id))) and r.final)]
            return dataclasses.replace(outcome, tool_calls=left, in_step=True)
        if not outcome.tool_calls or self.tools is None:
            return dataclasses.replace(outcome, in_step=True)
        ran, left = self.tools.run_in_step(ref, outcome.tool_calls, outcome.agent, execution=execution)
        return dataclasses.replace(outcome, tool_calls=left, in_step=True, ran_in_step=ran)

    def _take(self, step: _Step) -> StepOutcome:
        self._guard(step)
        self._route(step)
        stored = step.history.pending.get(step.ref.step)
        if stored is not None:  # answered before, but the settlement failed: settle it, on its route
            self._send_what_is_held(step)  # (what it was sent with)
            return self._settle(step, self._at_once(stored))
        self._avoid_open_circuits(step)
        self._check_token_budget(step)
        hit = self._cached_answer(step)
        if hit is not None:  # served without a model call: nothing to pay (a held reservation is released)
            return self._settle(step, self._at_once(hit))
        if step.may_call is not None and not step.may_call():
            raise NoTimeForCallError(f"step {step.ref.step} of {step.run.run_id}: too little time left for its call")
        self._reserve(step)
        answer = self._call(step)
        outcome = self._settle(step, answer)
        self._remember(step, answer.response, outcome)
        return outcome

    # ------------------------------------------------------------------------------------------- phases

    def _guard(self, step: _Step) -> None:
        """A saved step is replayed, never called again; an ended run ends the step; so do the run's limits."""
        number, history, run = step.ref.step, step.history, step.run
        if step.execution is not None and step.execution != run.execution_name:  # a stale turn's execution
            raise step.finish(RunStatus.CANCELLED, RunError(code="TURN_ENDED", message="the turn has ended"))
        if number < len(history.steps):
            raise _Finished(replayed(step.ref, history.steps[number], run.agent))
        if run.status.terminal:
            raise step.finish(run.status, run.error)
        if number != run.completed_steps:
            raise StepwiseError(f"step {number} requested but run {run.run_id} has completed {run.completed_steps}")
        step.held = run.held if run.held is not None and run.held.step == number else None
        exceeded = ledger.run_limit(run) if step.held is None else None  # a step that reserved goes on
        if exceeded:
            raise step.finish(RunStatus.BUDGET_EXCEEDED, exceeded)

    def _route(self, step: _Step) -> None:
        """The model: the one the step reserved for, else routing's choice. It must have a price."""
        run, held = step.run, step.held
        own = self.tenant_limits.limits(run.tenant) if self.tenant_limits is not None else None
        step.limits = budget_limits(self.config.limits, own)
        step.percent = ledger.budget_percent(self.store, step.limits, run, self._today())
        step.route = (
            Route(held.model, held.reason, cheap=held.cheap)
            if held
            else choose(
                config=self.config.routing, run_model=run.model, steps=step.history.steps,
                tool_results=step.history.tool_results, budget_percent=step.percent,
            )
        )  # fmt: skip
        step.request = self._request(step, step.route)
        try:
            self.prices.price(step.request.model)  # before the provider bills anything
        except UnknownModelError as exc:
            raise step.finish(RunStatus.FAILED, RunError(code="UNKNOWN_MODEL", message=str(exc))) from None

    def _avoid_open_circuits(self, step: _Step) -> None:
        """A model whose circuit is open is skipped for the next one that is healthy."""
        if self.breaker is None:
            return
        healthy = _healthy_route(self.breaker, self.prices, self.config.routing, step.run, step.route, step.attempt)
        if healthy != step.route:
            step.route, step.request = healthy, self._request(step, healthy)

    def _check_token_budget(self, step: _Step) -> None:
        step.prompt_tokens = estimate_prompt_tokens(step.request)
        too_many = ledger.token_limit(step.run, step.prompt_tokens, step.request.max_tokens)
        if step.held is None and too_many:
            raise step.finish(RunStatus.BUDGET_EXCEEDED, too_many)

    def _cached_answer(self, step: _Step) -> ModelResponse | None:
        if self.response_cache is None:
            return None
        wanted = step.run.cache_responses
        if not (wanted if wanted is not None else self.config.cache_responses_by_default):
            return None
        step.cache_key = cache_key(step.request)
        cached = self.response_cache.get(step.ref.key.tenant, step.cache_key)
        return as_hit(cached) if cached is not None else None

    def _reserve(self, step: _Step) -> None:
        """Hold the call's worst-case cost against every budget (a held reservation follows a re-route), with
        the largest output allowance the budgets cover near a cap; the call is sent with what is held."""
        held, route, request = step.held, step.route, step.request
        moving = held is not None and held.model != route.model
        if held is not None and not moving:
            self._send_what_is_held(step)
            return
        now = self.clock.now()
        wanted = Reservation(
            step=step.ref.step,
            amount_usd=Decimal(0),  # sized by the ledger
            day=held.day if held is not None else now.date().isoformat(),
            model=route.model,
            cheap=route.cheap,
            reason=route.reason,
        )
        try:
            replacing = held if moving else None
            at = now.isoformat(timespec="milliseconds")
            reserved, held = ledger.reserve_call(self.store, step.run, wanted, step.limits, self._call_price(step),
                                       prompt_tokens=step.prompt_tokens, max_tokens=request.max_tokens,
                                       replacing=replacing, now=at)  # fmt: skip
        except BudgetRefusedError as exc:
            refused = RunError(code=exc.code, message=exc.message)
            raise step.finish(RunStatus.BUDGET_EXCEEDED, refused, budget_percent=step.percent) from None
        except RunNotActiveError:
            current = self.store.get_run(step.ref.key)
            if current is not None and current.turn != step.run.turn:  # the session's next turn: not this step's
                raise step.finish(
                    RunStatus.CANCELLED, RunError(code="TURN_ENDED", message="the turn has ended")
                ) from None
            if current is None or not current.status.terminal:
                raise
            raise step.finish(current.status, current.error) from None
        step.run, step.held = reserved, held
        if held.model != route.model:  # a duplicate invocation reserved first, for another route: follow it
            step.route = Route(held.model, held.reason, cheap=held.cheap)
            step.request = self._request(step, step.route)
        self._send_what_is_held(step)

    def _send_what_is_held(self, step: _Step) -> None:
        """The call asks for no more output than the reservation it holds covers (less near a cap)."""
        held, request = step.held, step.request
        if held is not None:
            tokens = ledger.tokens_held(self._call_price(step), held, request.max_tokens)
            step.request = request.model_copy(update={"max_tokens": tokens})

    def _call_price(self, step: _Step) -> CallPrice:
        """The worst case of the step's request (its prompt is the same on every route: estimated once)."""
        step.prompt_tokens = step.prompt_tokens or estimate_prompt_tokens(step.request)
        request = step.request
        return self.prices.call_price(request.model, step.prompt_tokens, cache_ttls=marker_ttls(request))

    def _call(self, step: _Step) -> _Answer:
        """Call the model, report the circuit's health, and store the billed answer before anything else."""
        request = step.request
        started = self.clock.now()
        circuit = circuit_key(self.prices.price(request.model).provider, request.model)
        try:
            response = self.model.create(request)
        except RetryableModelError as exc:
            if self.breaker is not None:
                self.breaker.failed(circuit)
            if exc.retry_after is not None and exc.retry_after <= MAX_WAIT_SECONDS and step.waits < MAX_WAITS:
                # the provider said when: wait in a Wait state (no Lambda sleeps), keeping the reservation
                wait = StepOutcome(
                    step.ref, StepDecision.WAIT, wait_seconds=max(1, math.ceil(exc.retry_after)),
                    waits=step.waits + 1, budget_percent=step.percent, model_error=exc.kind,
                )  # fmt: skip
                raise _Finished(wait) from None
            raise
        except FatalModelError as exc:
            raise step.finish(RunStatus.FAILED, RunError(code=exc.code, message=exc.message)) from None
        finished = self.clock.now()
        if self.breaker is not None:  # first: a probe's success reaches every container even if this one dies now
            self.breaker.succeeded(circuit)
        self.store.save_pending(step.ref.key, step.ref.step, response)  # never lost to a failed settlement
        return _Answer(response, started, finished)

    def _settle(self, step: _Step, answer: _Answer) -> StepOutcome:
        """Decide what the answer means for the run, then save the step and settle its cost.

        If the run is still active but its reservation changed under this invocation (a duplicate invocation
        of the step moved it to a fallback), the step settles against what the run holds now, once; if it
        changes again, Step Functions retries the step, which settles the stored answer without a call."""
        record = self._record(step, answer)
        output = answer.response.text() if record.status is RunStatus.SUCCEEDED else None
        run = step.run
        for replanned in (False, True):
            try:
                ledger.settle(self.store, run, record, output)
            except StepAlreadySavedError:  # a concurrent duplicate won the race: use its answer
                return self._saved(step)
            except RunNotActiveError as exc:
                current = self.store.get_run(step.ref.key)
                if current is None or current.status.terminal or current.turn != run.turn:  # never re-plan into
                    return self._settle_ended(step, record)  # a session's next turn
                if replanned:
                    raise StoreConflictError(f"run {step.ref.key} changed while step {step.ref.step} settled") from exc
                run = current
                continue
            return dataclasses.replace(
                _outcome_of(step.ref, record, run.agent, replayed=False), budget_percent=step.percent,
                fallback=step.route.fallback,
            )  # fmt: skip
        raise AssertionError("unreachable")  # pragma: no cover

    def _settle_ended(self, step: _Step, record: StepRecord) -> StepOutcome:
        """The run ended (cancelled, timed out) while the model answered. The provider billed the call: account
        it, against the reservation if the run still holds it (a delayed release frees it only otherwise). The
        calls it asked for never run: they get the end's error results first, so they appear with the step."""
        ended = self.store.get_run(step.ref.key)
        if (
            ended is not None
            and ended.status.terminal
            and (ended.completed_steps, ended.turn) == (record.step, step.run.turn)
        ):
            settle_calls(self.store, ended, ended_how(ended, ended.status, ended.error), record)
        ledger.settle_late(self.store, step.ref.key, record, turn=step.run.turn)
        current = self.store.get_run(step.ref.key)
        final = current.status if current else RunStatus.CANCELLED
        return StepOutcome(step.ref, StepDecision.FINISH, status=final, error=current.error if current else None)

    def _saved(self, step: _Step) -> StepOutcome:
        saved = self.store.get_step(step.ref.key, step.ref.step)
        assert saved is not None  # the settlement failed because it exists
        return replayed(step.ref, saved, step.run.agent)

    def _remember(self, step: _Step, response: ModelResponse, outcome: StepOutcome) -> None:
        """A fresh answer goes into the response cache (when the run uses it)."""
        if self.response_cache is None or step.cache_key is None or outcome.replayed or not cacheable(response):
            return
        self.response_cache.put(step.ref.key.tenant, step.cache_key, response)

    # ------------------------------------------------------------------------------------------- helpers

    def _record(self, step: _Step, answer: _Answer) -> StepRecord:
        response, route, run = answer.response, step.route, step.run
        decision, status, error = decide(response, step.request.max_tokens)
        budget_cut = self._cut_by_budget(step, response)
        if budget_cut is not None:
            status, error = RunStatus.BUDGET_EXCEEDED, budget_cut
        # a cheap answer is redone only if a step is left for it and the redo would use another model
        can_redo = (
            budget_cut is None
            and step.ref.step + 1 - run.turn_first_step < run.budget.max_steps
            and escalation(self.config.routing, run.model, step.percent) != route.model
        )
        superseded_by = supersedes(route, response, error) if can_redo else None
        if superseded_by:
            decision, status, error = StepDecision.REDO, None, None
        elif decision is StepDecision.TOOLS and run.agent is not None:
            if any(run.agent.needs_client(call.name) for call in response.tool_calls()):
                decision = StepDecision.ACTION  # the run stays active while the other calls run
        return StepRecord(
            run_id=run.run_id,
            step=step.ref.step,
            model=response.model,
            provider=response.provider,
            stop_reason=response.stop_reason,
            content=response.content,
            usage=response.usage,
            cost_usd=self.prices.cost(step.request.model, response.usage),
            decision=decision,
            status=status,
            error=error,
            requested_model=route.model,
            route_reason=route.reason + (f"; superseded: {superseded_by}" if superseded_by else ""),
            cheap=route.cheap,
            superseded=bool(superseded_by),
            cleared_before=step.request.cleared_before,
            started_at=answer.started.isoformat(timespec="milliseconds"),
            finished_at=answer.finished.isoformat(timespec="milliseconds"),
            duration_ms=int((answer.finished - answer.started).total_seconds() * 1000),
        )

    def _cut_by_budget(self, step: _Step, response: ModelResponse) -> RunError | None:
        """An answer cut off at an allowance a budget shrank ends the run as that budget's refusal would."""
        request, run = step.request, step.run
        if response.stop_reason != "max_tokens" or request.max_tokens >= run.max_tokens_per_call:
            return None
        return ledger.cut_off(self.store, run, step.limits, self._call_price(step), prompt_tokens=step.prompt_tokens,
                              max_tokens=request.max_tokens)  # fmt: skip

    def _request(self, step: _Step, route: Route) -> ModelRequest:
        return model_request(
            step.history,
            route.model,
            system=self.config.system,
            toolbox=self.toolbox,
            cache_ttl=self.config.prompt_cache_ttl,
            context=self.config.context,
        )

    def _at_once(self, response: ModelResponse) -> _Answer:
        now = self.clock.now()
        return _Answer(response, now, now)

    def _today(self) -> str:
        return self.clock.now().date().isoformat()


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
            return Route(model, f"fallback ({why}); {route.reason}", cheap=route.cheap, fallback=True)
    raise RetryableModelError(f"every circuit is open for {', '.join(candidates)}", kind="circuits_open")
