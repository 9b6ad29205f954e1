"""The budget rules, in one place: what reserving, settling, releasing and ending a run change, under which
conditions, and why a refused change was refused.

Every rule is a **plan**: conditions on the run item, the change to the run, and deltas to the spend
counters, each counter delta with the budget that refuses it. A store applies a plan atomically or not at
all and reports the first part whose condition failed (``LedgerStore.apply``: the DynamoDB adapter as one
conditional transaction, the in-memory fake under one lock). The functions below build the plans and turn a
rejection into the outcome (a shared reservation, a refusal naming the budget, an error): adapters only
apply plans, they decide nothing.

Budgets (``committed_usd`` = spent + reservations in flight):

* the run's own ``max_usd`` / ``max_tokens`` / ``max_steps``, checked before every call (``run_limit``);
* the tenant's UTC day and the global UTC day, as conditions on their counters: a reservation of ``a``
  against a limit ``L`` holds if ``committed_usd <= L - a``.

A call's worst case is its prompt at the dearest input rate plus its whole output allowance (``max_tokens``).
Near a cap the allowance shrinks to what the tightest budget has left (``call_allowance``, ``reserve_call``):
a run spends its budget down to about one small call's worth instead of stopping a full allowance short. Below
``MIN_CALL_OUTPUT_TOKENS`` the call is refused, naming that budget. The call is sent with the allowance its
reservation covers (``tokens_held``), and an answer cut off at a shrunk allowance ends the run BUDGET_EXCEEDED
(``cut_off``).

To add a budget: a limit in ``BudgetLimits`` (and the setting that feeds it), a counter and a refusal code
in ``reserve_plan`` and ``_caps``, its name in ``_budget`` and its share in ``budget_percent`` (a counter other than
the two days also needs ``LedgerStore.committed`` to read it); see the README's "Code map".
"""

from __future__ import annotations

import json
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict

from functions.agent.active import Listing, place
from functions.agent.errors import BudgetRefusedError, RunNotActiveError, StepAlreadySavedError, StoreConflictError
from functions.agent.models import ModelRequest, Reservation, Run, RunError, RunKey, RunStatus, StepRecord, Usage
from functions.agent.pricing import CallPrice

if TYPE_CHECKING:
    from functions.agent.ports import LedgerStore

# Refusal codes (a run ending BUDGET_EXCEEDED carries one as error.code)
MAX_STEPS = "MAX_STEPS"
MAX_TOKENS = "MAX_TOKENS"
MAX_USD = "MAX_USD"
TENANT_DAILY_BUDGET = "TENANT_DAILY_BUDGET"
GLOBAL_DAILY_BUDGET = "GLOBAL_DAILY_BUDGET"

# A deliberate over-estimate: English runs ~4 bytes per token, code and CJK fewer. Reserving too much only
# narrows concurrency near a limit; reserving too little could let concurrent calls overspend it.
BYTES_PER_TOKEN_ESTIMATE = 3
TOOL_USE_OVERHEAD_TOKENS = 500  # the tool-use system prompt the API adds when tools are given (a few hundred)
PER_MESSAGE_OVERHEAD_TOKENS = 10
END_TRIES = 3  # reads of a run an end is written over, when a step keeps settling under it
# The smallest output allowance a call is made with near a cap (or the run's max_tokens_per_call, if smaller). A
# tool call or a short answer takes a few dozen tokens: a call allowed fewer would mostly be cut off, paying its
# whole prompt for nothing. Below it the call is refused (BUDGET_EXCEEDED), as a call that does not fit always was.
MIN_CALL_OUTPUT_TOKENS = 64
SIZE_TRIES = 3  # sizings of one call against the daily budgets, when other runs keep reserving what was left
DAILY_BUDGETS = (TENANT_DAILY_BUDGET, GLOBAL_DAILY_BUDGET)


class BudgetLimits(BaseModel):
    """Deploy-time daily limits in USD (None: no limit). Days are UTC."""

    model_config = ConfigDict(defer_build=True)

    tenant_daily_usd: Decimal | None = None
    global_daily_usd: Decimal | None = None


def usd(value: Decimal) -> str:
    return f"${value:.6f}".rstrip("0").rstrip(".") if value else "$0"


def estimate_prompt_tokens(request: ModelRequest) -> int:
    prompt = {"system": request.system, "tools": request.tools, "messages": request.messages}
    text = math.ceil(len(json.dumps(prompt, ensure_ascii=False).encode()) / BYTES_PER_TOKEN_ESTIMATE)
    overhead = (TOOL_USE_OVERHEAD_TOKENS if request.tools else 0) + PER_MESSAGE_OVERHEAD_TOKENS * len(request.messages)
    return text + overhead


# ------------------------------------------------------------------------------------- the run's own limits


def run_limit(run: Run) -> RunError | None:
    """The run's own budget, checked before every model call (a step that already reserved goes on)."""
    budget = run.budget
    if run.turn_steps >= budget.max_steps:  # a session's limit is per turn
        what = "turn" if run.turns else "run"
        return RunError(code=MAX_STEPS, message=f"{what} reached max_steps={budget.max_steps} without a final answer")
    if budget.max_tokens is not None and run.usage.total_tokens >= budget.max_tokens:
        return RunError(
            code=MAX_TOKENS, message=f"run used {run.usage.total_tokens} tokens, budget max_tokens={budget.max_tokens}"
        )
    if budget.max_usd is not None and run.cost_usd >= budget.max_usd:
        return RunError(code=MAX_USD, message=f"run spent ${run.cost_usd:.6f}, budget max_usd=${budget.max_usd}")
    return None


def token_limit(run: Run, prompt_tokens: int, max_output_tokens: int) -> RunError | None:
    """Whether the run's ``max_tokens`` leaves room for the next call: its prompt estimate plus the smallest
    allowance it is made with (``MIN_CALL_OUTPUT_TOKENS``; ``call_allowance`` shrinks it to what is left)."""
    limit = run.budget.max_tokens
    smallest = prompt_tokens + min(MIN_CALL_OUTPUT_TOKENS, max_output_tokens)
    if limit is None or run.usage.total_tokens + smallest <= limit:
        return None
    return RunError(
        code=MAX_TOKENS,
        message=f"run used {run.usage.total_tokens} tokens and the next call may use up to {smallest}; "
        f"budget max_tokens={limit}",
    )


def budget_percent(store: LedgerStore, limits: BudgetLimits, run: Run, day: str) -> dict[str, float]:
    """Percent of each budget committed (spent + in flight): the daily ones on ``day``, and the run's max_usd."""
    percent: dict[str, float] = {}
    if limits.tenant_daily_usd is not None or limits.global_daily_usd is not None:
        tenant_committed, global_committed = store.committed(run.tenant, day)
        if limits.tenant_daily_usd is not None:
            percent["TenantDaily"] = float(tenant_committed / limits.tenant_daily_usd * 100)
        if limits.global_daily_usd is not None:
            percent["GlobalDaily"] = float(global_committed / limits.global_daily_usd * 100)
    if run.budget.max_usd is not None:
        percent["Run"] = float(run.cost_usd / Decimal(str(run.budget.max_usd)) * 100)
    return percent


# ------------------------------------------------------------------------------------- plans: the parts


class Condition(ABC):
    """A condition on the run item. A store renders it (a DynamoDB condition expression) or evaluates
    ``holds``; both mean the same. A missing run fails every condition."""

    @abstractmethod
    def holds(self, run: Run) -> bool: ...


@dataclass(frozen=True)
class AtStep(Condition):
    """The run has completed exactly ``step`` steps (so ``step`` is the one being taken)."""

    step: int

    def holds(self, run: Run) -> bool:
        return run.completed_steps == self.step


@dataclass(frozen=True)
class IsActive(Condition):
    def holds(self, run: Run) -> bool:
        return not run.status.terminal


@dataclass(frozen=True)
class HasEnded(Condition):
    def holds(self, run: Run) -> bool:
        return run.status.terminal


@dataclass(frozen=True)
class Holds(Condition):
    """The run holds exactly this reservation (compared by ``Reservation.identity``). It is always given the
    reservation as the run was read with it (during the reservation format's migration the DynamoDB adapter
    compares the whole stored record, see LEGACY_RESERVATION there)."""

    reservation: Reservation

    def holds(self, run: Run) -> bool:
        return run.reservation is not None and run.reservation.identity == self.reservation.identity


@dataclass(frozen=True)
class HoldsNothing(Condition):
    def holds(self, run: Run) -> bool:
        return run.reservation is None


@dataclass(frozen=True)
class HoldsNothingFor(Condition):
    """The run holds no reservation for ``step`` (it may hold one for another step)."""

    step: int

    def holds(self, run: Run) -> bool:
        return run.reservation is None or run.reservation.step != self.step


@dataclass(frozen=True)
class InTurn(Condition):
    """A session is still in turn ``turn`` (a /runs run is always in turn 0): a Lambda or an execution of an
    earlier turn never writes into the next one."""

    turn: int

    def holds(self, run: Run) -> bool:
        return run.turn == self.turn


def _fenced(run: Run, conditions: list[Condition], turn: int | None = None) -> list[Condition]:
    """Conditions of a session's write, fenced to its turn (a /runs run's writes are unchanged)."""
    if run.turns or turn:
        conditions.append(InTurn(run.turn if turn is None else turn))
    return conditions


@dataclass(frozen=True)
class CostAtMost(Condition):
    limit: Decimal

    def holds(self, run: Run) -> bool:
        return run.cost_usd <= self.limit


@dataclass(frozen=True)
class RunChange:
    """What a plan does to the run item, if every condition holds. ``None`` leaves a field as it is.

    The index of active work (functions/agent/active.py) changes with the status, in the same write: a change
    that ends the run removes its listing (``delists``); one that keeps it active carries its ``listing``, written
    where the run has none (a run started by an earlier release is listed from its next write)."""

    key: RunKey
    conditions: tuple[Condition, ...]
    status: RunStatus | None = None
    output: str | None = None
    error: RunError | None = None
    completed_steps: int | None = None
    charge: Usage | None = None  # tokens added to the run's usage
    cost_usd: Decimal = Decimal(0)  # added to the run's cost (with ``charge``)
    reserve: Reservation | None = None  # becomes the run's reservation
    release: bool = False  # the run's reservation is removed
    updated_at: str | None = None
    listing: Listing | None = None  # with a status that keeps the run active: where it is listed

    def __post_init__(self) -> None:
        if self.status is not None and not self.status.terminal and self.listing is None:
            raise ValueError(f"a change to {self.status.value} keeps the run active: it needs the run's listing")
        if self.delists and self.listing is not None:
            raise ValueError(f"a change to {self.status} ends the run: it is not listed")

    @property
    def delists(self) -> bool:
        """The change ends the run: its listing is removed by the same write."""
        return self.status is not None and self.status.terminal

    def applied_to(self, run: Run) -> Run:
        """The run after this change (the in-memory store applies it; DynamoDB renders the same change)."""
        update: dict[str, object] = {}
        for name in ("status", "output", "error", "completed_steps", "updated_at"):
            if (value := getattr(self, name)) is not None:
                update[name] = value
        if self.charge is not None:
            update["usage"] = run.usage + self.charge
            update["cost_usd"] = run.cost_usd + self.cost_usd
        if self.reserve is not None:
            update["reservation"] = self.reserve
        if self.release:
            update["reservation"] = None
        return run.model_copy(update=update)


@dataclass(frozen=True)
class Counter:
    """One spend counter: the tenant's day (``tenant`` set) or everyone's (``None``), optionally per model or
    per run. Fields: ``spent_usd``, ``committed_usd``, ``steps`` and the usage fields."""

    tenant: str | None
    day: str
    model: str | None = None
    run_id: str | None = None


@dataclass(frozen=True)
class CommittedAtMost:
    """The counter's ``committed_usd`` (0 if it has none yet) is at most ``headroom``, before the delta."""

    headroom: Decimal

    def holds(self, committed: Decimal) -> bool:
        return committed <= self.headroom


@dataclass(frozen=True)
class CounterChange:
    counter: Counter
    add: Mapping[str, Decimal | int]
    limit: CommittedAtMost | None = None
    budget: str | None = None  # the refusal code when ``limit`` fails


@dataclass(frozen=True)
class Plan:
    """Applied atomically or not at all. The parts, in the order a store checks them: the step record (put
    only if the step has none; putting it also drops the answer stored for it), the run, the counters."""

    run: RunChange
    counters: tuple[CounterChange, ...] = ()
    record: StepRecord | None = None


Rejected = StepRecord | RunChange | CounterChange  # the first part of a plan whose condition failed


# ------------------------------------------------------------------------------------- plans: the rules


def _headroom(limit: Decimal | None, amount: Decimal) -> CommittedAtMost | None:
    # a release or a move to a cheaper model frees budget: it never needs headroom
    return CommittedAtMost(limit - amount) if limit is not None and amount > 0 else None


def reserve_plan(
    run: Run, wanted: Reservation, limits: BudgetLimits, *, replacing: Reservation | None, now: str
) -> Plan:
    """Hold ``wanted`` for the run's next call against every budget. With ``replacing`` the held reservation
    becomes ``wanted`` and only the difference is charged (the step was re-routed to a fallback)."""
    amount = wanted.amount_usd - (replacing.amount_usd if replacing else Decimal(0))
    conditions = _fenced(run, [AtStep(wanted.step), IsActive(), Holds(replacing) if replacing else HoldsNothing()])
    if run.budget.max_usd is not None:
        conditions.append(CostAtMost(Decimal(str(run.budget.max_usd)) - wanted.amount_usd))
    committed = {"committed_usd": amount}
    return Plan(
        run=RunChange(run.key, tuple(conditions), status=RunStatus.RUNNING, reserve=wanted, updated_at=now,
                      listing=place(run)),
        counters=(
            CounterChange(Counter(run.tenant, wanted.day), committed, _headroom(limits.tenant_daily_usd, amount),
                          TENANT_DAILY_BUDGET),
            CounterChange(Counter(None, wanted.day), committed, _headroom(limits.global_daily_usd, amount),
                          GLOBAL_DAILY_BUDGET),
        ),
    )  # fmt: skip


def settle_plan(run: Run, record: StepRecord, output: str | None, *, require_active: bool) -> Plan:
    """Save the step and charge its real cost, settling the reservation it was made under (if the run still
    holds it). A step that ends the run (its status is terminal) ends it here, in the same write."""
    held = run.reservation if run.reservation and run.reservation.step == record.step else None
    day = held.day if held else record.finished_at[:10]
    conditions = _fenced(run, [AtStep(record.step), Holds(held) if held else HoldsNothingFor(record.step)])
    status = None
    if require_active:
        conditions.append(IsActive())
        status = record.status if record.status is not None and record.status.terminal else RunStatus.RUNNING
    ends = status is not None and status.terminal
    usage = record.usage.model_dump()
    day_totals = {
        "spent_usd": record.cost_usd,
        "committed_usd": record.cost_usd - (held.amount_usd if held else Decimal(0)),
        "steps": 1,
        **usage,
    }
    per_model = {"spent_usd": record.cost_usd, "steps": 1, **usage}
    priced_model = record.requested_model or record.model  # the price book's id, not the dated snapshot
    change = RunChange(
        run.key,
        tuple(conditions),
        status=status,
        output=output if require_active else None,
        error=record.error if ends else None,
        completed_steps=record.step + 1,
        charge=record.usage,
        cost_usd=record.cost_usd,
        release=held is not None,
        updated_at=record.finished_at,
        listing=place(run) if status is RunStatus.RUNNING else None,
    )
    return Plan(
        run=change,
        counters=(
            CounterChange(Counter(run.tenant, day), day_totals),
            CounterChange(Counter(run.tenant, day, model=priced_model), per_model),
            CounterChange(Counter(run.tenant, day, run_id=run.run_id), {"spent_usd": record.cost_usd, "steps": 1}),
            CounterChange(Counter(None, day), day_totals),
        ),
        record=record,
    )


def _freed(run: Run, held: Reservation) -> tuple[CounterChange, ...]:
    freed = {"committed_usd": -held.amount_usd}
    return CounterChange(Counter(run.tenant, held.day), freed), CounterChange(Counter(None, held.day), freed)


def end_plan(
    run: Run, status: RunStatus, *, error: RunError | None, release: bool, now: str, turn: int | None = None
) -> Plan:
    """Move an active run to a terminal status, as it was read: the same steps completed and the same reservation
    held (what its ender settled the calls of, ``end_run``). With ``release`` (no call can be in flight) the
    reservation it holds is freed too (once); otherwise it stays for the call to settle or for a delayed release."""
    if not status.terminal:
        raise ValueError(f"a run ends with a terminal status, not {status.value}")
    held = run.reservation if release else None
    conditions = _fenced(run, [IsActive(), AtStep(run.completed_steps)], turn)
    conditions.append(Holds(run.reservation) if run.reservation else HoldsNothing())
    change = RunChange(run.key, tuple(conditions), status=status, error=error, release=held is not None, updated_at=now)
    return Plan(run=change, counters=_freed(run, held) if held else ())


def release_plan(run: Run, held: Reservation) -> Plan:
    """Free an ended run's reservation once no call can be using it."""
    return Plan(run=RunChange(run.key, (Holds(held), HasEnded()), release=True), counters=_freed(run, held))


# ------------------------------------------------------------------------------------- sizing a call


@dataclass(frozen=True)
class DayCommitted:
    """The daily counters' ``committed_usd`` as read (``LedgerStore.committed``)."""

    day: str
    tenant_usd: Decimal
    global_usd: Decimal


def _caps(
    run: Run, limits: BudgetLimits, call: CallPrice, prompt_tokens: int, committed: DayCommitted | None,
    replacing: Reservation | None,
) -> list[tuple[int, str]]:  # fmt: skip
    """The output allowance each budget covers, with its code."""
    caps = []
    if run.budget.max_usd is not None:
        caps.append((call.tokens_covered(Decimal(str(run.budget.max_usd)) - run.cost_usd), MAX_USD))
    if run.budget.max_tokens is not None:
        caps.append((run.budget.max_tokens - run.usage.total_tokens - prompt_tokens, MAX_TOKENS))
    if committed is not None:
        back = replacing.amount_usd if replacing is not None else Decimal(0)
        for code, limit, spent in (
            (TENANT_DAILY_BUDGET, limits.tenant_daily_usd, committed.tenant_usd),
            (GLOBAL_DAILY_BUDGET, limits.global_daily_usd, committed.global_usd),
        ):
            if limit is not None:
                caps.append((call.tokens_covered(limit - spent + back), code))
    return caps


def call_allowance(
    run: Run,
    limits: BudgetLimits,
    call: CallPrice,
    *,
    prompt_tokens: int,
    max_tokens: int,
    committed: DayCommitted | None,
    replacing: Reservation | None = None,
) -> int:
    """The largest output allowance, at most ``max_tokens``, whose worst case every budget still covers: the
    run's ``max_usd`` (less what it spent), its ``max_tokens`` (less its usage and the prompt), and with
    ``committed`` the daily budgets (a ``replacing`` reservation counts as left: it is given back). For the
    daily budgets only an estimate: their counters' conditions decide.

    Raises:
        BudgetRefusedError: the tightest budget cannot cover ``MIN_CALL_OUTPUT_TOKENS`` (or ``max_tokens``, if
            smaller); named by its code, with what it has left.
    """
    tokens, code = min([(max_tokens, ""), *_caps(run, limits, call, prompt_tokens, committed, replacing)])
    smallest = min(MIN_CALL_OUTPUT_TOKENS, max_tokens)
    if tokens >= smallest:
        return tokens
    if code == MAX_TOKENS:
        error = token_limit(run, prompt_tokens, max_tokens)
        raise BudgetRefusedError(MAX_TOKENS, error.message if error else f"budget max_tokens={run.budget.max_tokens}")
    amount = call.worst_case(smallest)
    if code == MAX_USD or committed is None:
        raise _run_refusal(run, amount)
    spent = committed.tenant_usd if code == TENANT_DAILY_BUDGET else committed.global_usd
    raise _refusal(code, run, committed.day, limits, spent, amount)


def reserve_call(
    store: LedgerStore,
    run: Run,
    wanted: Reservation,
    limits: BudgetLimits,
    call: CallPrice,
    *,
    prompt_tokens: int,
    max_tokens: int,
    replacing: Reservation | None = None,
    now: str,
) -> Reservation:
    """Reserve the next call (``wanted`` with its amount left to this) with the largest output allowance, up to
    ``max_tokens``, that every budget covers (``call_allowance``). The daily counters are read only once one of
    them refused: far from a daily limit this is one write, as ``reserve``. Returns the reservation held (the
    allowance it covers is ``tokens_held``).

    Raises:
        BudgetRefusedError: a budget cannot take even the smallest call (see ``call_allowance``).
        RunNotActiveError, StoreConflictError: as ``reserve``.
    """
    committed: DayCommitted | None = None
    for attempt in range(SIZE_TRIES):
        tokens = call_allowance(run, limits, call, prompt_tokens=prompt_tokens, max_tokens=max_tokens,
                                committed=committed, replacing=replacing)  # fmt: skip
        sized = wanted.model_copy(update={"amount_usd": call.worst_case(tokens)})
        try:
            return reserve(store, run, sized, limits, replacing=replacing, now=now)
        except BudgetRefusedError as exc:
            if exc.code not in DAILY_BUDGETS or attempt == SIZE_TRIES - 1:
                raise
            # a daily budget has less left than this call's allowance: size it to what is left, as read now
            committed = DayCommitted(wanted.day, *store.committed(run.tenant, wanted.day))
    raise AssertionError("unreachable")  # pragma: no cover


def tokens_held(call: CallPrice, held: Reservation, max_tokens: int) -> int:
    """The output allowance a held reservation covers for this call (at most ``max_tokens``): what the call is
    sent with, so it never costs more than was reserved. (At least 1: a prompt that grew past its reservation
    since it was made, which a step's unchanged history rules out, is still answered.)"""
    return max(1, min(max_tokens, call.tokens_covered(held.amount_usd)))


def cut_off(
    store: LedgerStore, run: Run, limits: BudgetLimits, call: CallPrice, *, prompt_tokens: int, max_tokens: int
) -> RunError | None:
    """Why a call sent with a shrunk allowance (``max_tokens``, below the run's ``max_tokens_per_call``) was cut
    off there: the budget that had no more to give (the tightest one, as the call would be sized now, against
    the reservation the run holds for it). None if no budget limits the call."""
    held = run.reservation
    committed = None
    if held is not None and (limits.tenant_daily_usd is not None or limits.global_daily_usd is not None):
        committed = DayCommitted(held.day, *store.committed(run.tenant, held.day))
    caps = _caps(run, limits, call, prompt_tokens, committed, held)
    if not caps:
        return None
    code = min(caps)[1]
    return RunError(
        code=code,
        message=f"the model's output was cut off at max_tokens={max_tokens}, all that the {_budget(code, run, limits)} "
        f"had left for the call (max_tokens_per_call={run.max_tokens_per_call})",
    )


def _budget(code: str, run: Run, limits: BudgetLimits) -> str:
    """A budget, named as its refusals name it."""
    if code == MAX_USD:
        return f"run budget max_usd={usd(Decimal(str(run.budget.max_usd)))}"
    if code == MAX_TOKENS:
        return f"run budget max_tokens={run.budget.max_tokens}"
    if code == TENANT_DAILY_BUDGET:
        return f"tenant {run.tenant} daily budget {usd(limits.tenant_daily_usd or Decimal(0))}"
    return f"global daily budget {usd(limits.global_daily_usd or Decimal(0))}"


# ------------------------------------------------------------------------------------- applying the rules


def reserve(
    store: LedgerStore,
    run: Run,
    wanted: Reservation,
    limits: BudgetLimits,
    *,
    replacing: Reservation | None = None,
    now: str,
) -> Reservation:
    """Reserve ``wanted`` (see ``reserve_plan``). Returns the reservation the step holds: ``wanted``, or a
    duplicate invocation's that got there first.

    Raises:
        BudgetRefusedError: a budget cannot take it (code MAX_USD, TENANT_DAILY_BUDGET or GLOBAL_DAILY_BUDGET).
        RunNotActiveError: the run ended, moved on, or its reservation changed meanwhile.
        StoreConflictError: the run changed and changed back between the write and the re-read.
    """
    plan = reserve_plan(run, wanted, limits, replacing=replacing, now=now)
    rejected = store.apply(plan)
    if rejected is None:
        return wanted
    if isinstance(rejected, CounterChange):
        tenant_committed, global_committed = store.committed(run.tenant, wanted.day)
        committed = tenant_committed if rejected.counter.tenant is not None else global_committed
        amount = Decimal(rejected.add["committed_usd"])
        raise _refusal(rejected.budget or GLOBAL_DAILY_BUDGET, run, rejected.counter.day, limits, committed, amount)
    current = store.get_run(run.key)
    if current is None or current.status.terminal or current.completed_steps != wanted.step or current.turn != run.turn:
        raise RunNotActiveError(run.run_id)
    if current.reservation is not None and current.reservation.step == wanted.step:
        if replacing is None or current.reservation.identity != replacing.identity:
            return current.reservation  # a duplicate invocation reserved (or moved) for this step first: share it
    if (current.reservation is None) != (replacing is None):  # it was released or taken meanwhile
        raise RunNotActiveError(f"{run.run_id}: the reservation for step {wanted.step} changed")
    max_usd = Decimal(str(run.budget.max_usd)) if run.budget.max_usd is not None else None
    if max_usd is None or current.cost_usd <= max_usd - wanted.amount_usd:
        # no budget refused it: the run changed and changed back meanwhile; the invoker retries
        raise StoreConflictError(f"run {run.key} changed while step {wanted.step} was reserving")
    raise _run_refusal(current, wanted.amount_usd)


def _run_refusal(run: Run, amount: Decimal) -> BudgetRefusedError:
    tail = f"{usd(run.cost_usd)} spent, the next call may cost up to {usd(amount)}"
    return BudgetRefusedError(MAX_USD, f"{_budget(MAX_USD, run, BudgetLimits())}: {tail}")


def _refusal(
    code: str, run: Run, day: str, limits: BudgetLimits, committed: Decimal, amount: Decimal
) -> BudgetRefusedError:
    tail = f"{usd(committed)} spent or reserved, the next call may cost up to {usd(amount)}"
    return BudgetRefusedError(code, f"{_budget(code, run, limits)} for {day}: {tail}")


def settle(store: LedgerStore, run: Run, record: StepRecord, output: str | None) -> None:
    """Save the step and settle its cost (see ``settle_plan``), on an active run.

    Raises:
        StepAlreadySavedError: the step was saved before (a retried or duplicated invocation).
        RunNotActiveError: the run ended, or the reservation it was read with changed.
    """
    plan = settle_plan(run, record, output, require_active=True)
    rejected = store.apply(plan)
    if rejected is plan.record:
        raise StepAlreadySavedError(f"{run.run_id} step {record.step}")
    if rejected is not None:
        raise RunNotActiveError(run.run_id)


def settle_late(store: LedgerStore, key: RunKey, record: StepRecord, *, turn: int = 0) -> None:
    """Record and charge a call the provider billed after its run ended, without touching the run's status:
    against the reservation if the run still holds it, else as a plain charge.

    Not a retry: the delayed release may free the reservation between the read and the write, and then the
    plan (which counter deltas apply) changes, so the run is read once more. Nothing else would settle the
    call: the run's execution has stopped."""
    for _ in range(2):
        current = store.get_run(key)
        # (a session's next turn waits for this reservation, so it cannot have started)
        if current is None or current.completed_steps != record.step or current.turn != turn:
            return
        plan = settle_plan(current, record, None, require_active=False)
        rejected = store.apply(plan)
        if rejected is None or rejected is plan.record:
            return


def end_run(
    store: LedgerStore,
    key: RunKey,
    status: RunStatus,
    *,
    now: str,
    error: RunError | None = None,
    release: bool = True,
    turn: int | None = None,
    before: Callable[[Run], None] | None = None,
) -> bool:
    """End an active run (see ``end_plan``) as it is read. ``before`` is given the run read, before its end is
    written (``Lifecycle`` settles the calls of its last step there); an end refused because the run changed
    meanwhile (a step settled, a reservation was taken) is read, prepared and tried again. Returns False if it had
    already ended, or (with ``turn``) if the session is no longer in that turn.

    Raises:
        StoreConflictError: it changed under each of END_TRIES tries: the invoker (Step Functions, SQS,
            EventBridge, the API's client) retries.
    """
    for _ in range(END_TRIES):
        run = store.get_run(key)
        if run is None or run.status.terminal or (turn is not None and run.turn != turn):
            return False
        if before is not None:
            before(run)
        if store.apply(end_plan(run, status, error=error, release=release, now=now, turn=turn)) is None:
            return True
    raise StoreConflictError(f"run {key} changed while it was being ended")


def release(store: LedgerStore, key: RunKey, step: int) -> bool:
    """Free the reservation of ``step`` if the run has ended and still holds it. Returns whether it did."""
    run = store.get_run(key)
    if run is None or not run.status.terminal or run.reservation is None or run.reservation.step != step:
        return False  # settled by its late step, or never held
    return store.apply(release_plan(run, run.reservation)) is None
