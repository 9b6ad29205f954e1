"""The budget rules, in one place: what reserving, settling, releasing and ending a run change, under which
conditions, and why a refused change was refused.

Every rule is a **plan**: conditions on the run item, the change to the run, and deltas to the spend
counters, each counter delta with the budget that refuses it. A store applies a plan atomically or not at
all and reports the first part whose condition failed (``LedgerStore.apply``: the DynamoDB adapter as one
conditional transaction, the in-memory fake under one lock). The functions below build the plans and turn a
rejection into the outcome (a shared reservation, a refusal naming the budget, an error): adapters only
apply plans, they decide nothing.

Budgets (``committed_usd`` = spent + leased, and reservations an earlier version made on the counters):

* the run's own ``max_usd`` / ``max_tokens`` / ``max_steps``, checked before every call (``run_limit``);
* the tenant's UTC day and the global UTC day, as conditions on their counters. A run takes a **lease** from
  both (``reserve_plan``: a delta ``a`` against a limit ``L`` holds if ``committed_usd <= L - a``, so the counter
  ends at most at ``L``) and reserves each call from it with a condition on the run item alone (``LeaseIs``, a
  compare-and-set); a call is paid from the lease, and the run's end gives back what it did not spend. A lease
  is taken anew when it cannot cover the call, when the day changed, or when a limit was set or lowered since it
  was taken (``usable_lease``): what was spent and leased before counts against the new limit.

The per-step statistics (spent, steps, tokens) carry no condition: they go to one of STAT_SHARDS shards of the
day counters (``stat_shard``), so no single item is written by every step (README "No item every step writes").

A call's worst case is its prompt at the dearest input rate plus its whole output allowance (``max_tokens``).
Near a cap the allowance shrinks to what the tightest budget has left (``call_allowance``, ``reserve_call``):
a run spends its budget down to about one small call's worth instead of stopping a full allowance short. Below
``MIN_CALL_OUTPUT_TOKENS`` the call is refused, naming that budget. The call is sent with the allowance its
reservation covers (``tokens_held``), and an answer cut off at a shrunk allowance ends the run BUDGET_EXCEEDED
(``cut_off``).

To add a budget: a limit in ``BudgetLimits`` (and the setting that feeds it), a counter and a refusal code
in ``_committed`` and ``_caps``, the limit a lease was taken under in ``Lease`` and ``usable_lease``, its name in
``_budget`` and its share in ``budget_percent`` (a counter other than the two days also needs
``LedgerStore.committed`` to read it); see the README's "Code map".
"""

from __future__ import annotations

import json
import math
import zlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict

from functions.agent.active import Listing, place
from functions.agent.errors import BudgetRefusedError, RunNotActiveError, StepAlreadySavedError, StoreConflictError
from functions.agent.models import Lease, ModelRequest, Reservation, Run, RunError, RunKey, RunStatus, StepRecord, Usage
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
# A run's lease covers as many worst-case calls as it has made so far, at least 1 and at most LEASE_CALLS (never more
# than its own max_usd leaves): a short run holds no more than it did with one reservation per call, and a long one
# writes the day counters once per LEASE_CALLS calls (and once when it ends) instead of twice per call.
LEASE_CALLS = 8
# Near a daily cap (once a lease was refused) a lease takes at most this share of what the budget has left, and at
# least the call: one run cannot hold the last of a day's budget idle while other runs are refused.
LEASE_SHARE_OF_LEFT = Decimal("0.25")
# The per-step statistics (spent, steps, tokens) of the tenant's day, the tenant's day per model and everyone's day
# are added to one of this many shard items, chosen by the run and step: no single item takes every step's write.
# Readers add up every shard and the unsharded item (which earlier versions wrote). Raising it needs its readers
# (functions/adapters/dynamodb_store.py ``spend_pks``) deployed first.
STAT_SHARDS = 16


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
class LeaseIs(Condition):
    """The run's lease (with the call it holds) is exactly ``lease`` as read, or it has none (``None``): every
    change to a lease is a compare-and-set. Compared as stored (its JSON: $0.20 is not written as $0.2)."""

    lease: Lease | None

    def holds(self, run: Run) -> bool:
        if run.lease is None or self.lease is None:
            return run.lease is self.lease
        return run.lease.model_dump_json() == self.lease.model_dump_json()


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
    release: bool = False  # the run's reservation on the counters (an earlier version's) is removed
    lease: Lease | None = None  # becomes the run's lease
    drop_lease: bool = False  # the run's lease is removed (given back)
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
        if self.release:
            update["reservation"] = None
        if self.lease is not None:
            update["lease"] = self.lease
        if self.drop_lease:
            update["lease"] = None
        return run.model_copy(update=update)


@dataclass(frozen=True)
class Counter:
    """One spend counter: the tenant's day (``tenant`` set) or everyone's (``None``), optionally per model or
    per run. Fields: ``spent_usd``, ``committed_usd``, ``steps`` and the usage fields.

    ``committed_usd`` (what the daily budgets are conditions on) lives on the unsharded day counters only. The
    statistics of the days and the days per model go to one of ``STAT_SHARDS`` shards (``shard``), never with a
    condition, and a run's own counter to its run's shard (``run_shard``); earlier versions added them to the
    unsharded counters, so readers add up both."""

    tenant: str | None
    day: str
    model: str | None = None
    run_id: str | None = None
    shard: int | None = None


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


def run_shard(run_id: str) -> int:
    """The shard a run's own day counter is on (off the tenant's unsharded partition, which takes the leases)."""
    return zlib.crc32(run_id.encode()) % STAT_SHARDS


def stat_shard(run_id: str, step: int) -> int:
    """The shard a step's statistics are added to: spread over runs and over a run's steps."""
    return zlib.crc32(f"{run_id}#{step}".encode()) % STAT_SHARDS


def _covers(checked: Decimal | None, limit: Decimal | None) -> bool:
    """A lease taken under the limit ``checked`` still holds under ``limit``: none is set now, or one no lower."""
    return limit is None or (checked is not None and checked <= limit)


def usable_lease(run: Run, day: str, limits: BudgetLimits) -> Lease | None:
    """The run's lease if calls on ``day`` may reserve from it: taken that day, under limits no higher than now (a
    limit set or lowered since is checked again by taking the lease anew)."""
    lease = run.lease
    if lease is None or lease.day != day:
        return None
    fits = _covers(lease.tenant_limit, limits.tenant_daily_usd) and _covers(lease.global_limit, limits.global_daily_usd)
    return lease if fits else None


def _legacy(run: Run, reservation: Reservation | None) -> bool:
    """Whether ``reservation`` is held on the day counters themselves (an earlier version made it)."""
    return reservation is not None and run.reservation is not None and run.reservation.identity == reservation.identity


def _own(run: Run, day: str, replacing: Reservation | None) -> Decimal:
    """What the run holds on ``day``'s counters that a new reservation takes back: its lease taken that day and a
    re-routed reservation held on the counters (one held under the lease is part of the lease)."""
    lease = run.lease
    own = lease.usd if lease is not None and lease.day == day else Decimal(0)
    if replacing is not None and replacing.day == day and not (lease is not None and lease.held == replacing):
        own += replacing.amount_usd
    return own


def _committed(
    tenant: str, deltas: Mapping[str, Decimal], limits: BudgetLimits | None = None, checked: str | None = None
) -> tuple[CounterChange, ...]:
    """Deltas to the day counters' ``committed_usd`` (one change per counter: a transaction writes an item once).
    On the ``checked`` day each delta is a condition of every limit: the counter ends at most at the limit."""
    changes = []
    for day, delta in deltas.items():
        for owner, code in ((tenant, TENANT_DAILY_BUDGET), (None, GLOBAL_DAILY_BUDGET)):
            limit = None
            if limits is not None and day == checked:
                limit = limits.tenant_daily_usd if owner is not None else limits.global_daily_usd
            at_most = CommittedAtMost(limit - delta) if limit is not None else None
            if delta or at_most is not None:
                changes.append(CounterChange(Counter(owner, day), {"committed_usd": delta}, at_most, code))
    return tuple(changes)


def _add(deltas: dict[str, Decimal], day: str, delta: Decimal) -> None:
    deltas[day] = deltas.get(day, Decimal(0)) + delta


def reserve_plan(
    run: Run,
    wanted: Reservation,
    limits: BudgetLimits,
    *,
    replacing: Reservation | None,
    now: str,
    lease_usd: Decimal | None = None,
) -> Plan:
    """Hold ``wanted`` for the run's next call. With ``replacing`` the held reservation becomes ``wanted`` (the
    step was re-routed to a fallback).

    The call is carved from the run's lease with a write to the run item alone while the lease covers it
    (``usable_lease``). Otherwise the lease is taken anew for ``lease_usd`` (at least the call): the old one is
    given back and the new one added to the day counters in the same write, on a condition of every daily limit
    that the counters end at most at it. A reservation an earlier version held on the counters is freed then too."""
    legacy = _legacy(run, replacing)
    conditions = _fenced(run, [AtStep(wanted.step), IsActive(), Holds(replacing) if replacing and legacy
                               else HoldsNothing(), LeaseIs(run.lease)])  # fmt: skip
    if run.budget.max_usd is not None:
        conditions.append(CostAtMost(Decimal(str(run.budget.max_usd)) - wanted.amount_usd))
    lease = usable_lease(run, wanted.day, limits)
    counters: tuple[CounterChange, ...] = ()
    if lease is not None and wanted.amount_usd <= lease.usd and not legacy:
        taken = lease.model_copy(update={"held": wanted})
    else:
        target = max(lease_usd or Decimal(0), wanted.amount_usd)
        deltas = {wanted.day: target}
        if run.lease is not None:  # given back
            _add(deltas, run.lease.day, -run.lease.usd)
        if replacing is not None and legacy:
            _add(deltas, replacing.day, -replacing.amount_usd)
        counters = _committed(run.tenant, deltas, limits, wanted.day)
        taken = Lease(day=wanted.day, usd=target, tenant_limit=limits.tenant_daily_usd,
                      global_limit=limits.global_daily_usd, held=wanted)  # fmt: skip
    change = RunChange(run.key, tuple(conditions), status=RunStatus.RUNNING, release=legacy, lease=taken,
                       updated_at=now, listing=place(run))  # fmt: skip
    return Plan(run=change, counters=counters)


def settle_plan(run: Run, record: StepRecord, output: str | None, *, require_active: bool) -> Plan:
    """Save the step and charge its real cost, settling the reservation it was made under (if the run still
    holds it). A step that ends the run (its status is terminal) ends it here, in the same write; so does a
    step settled after its run ended (``require_active`` False): the run's lease is given back then.

    A call held under the lease is paid from it (the day counters are not written; a call that cost more than
    the lease had left adds the rest to them). One held on the counters (an earlier version's) moves its
    difference there. The statistics go to the step's shards (``stat_shard``), with no condition."""
    legacy = run.reservation if run.reservation and run.reservation.step == record.step else None
    lease = run.lease
    leased = lease.held if lease is not None and lease.held and lease.held.step == record.step else None
    held = legacy or leased
    day = held.day if held else record.finished_at[:10]
    conditions = _fenced(run, [AtStep(record.step), Holds(legacy) if legacy else HoldsNothingFor(record.step),
                               LeaseIs(lease)])  # fmt: skip
    status = None
    if require_active:
        conditions.append(IsActive())
        status = record.status if record.status is not None and record.status.terminal else RunStatus.RUNNING
    cost = record.cost_usd
    deltas: dict[str, Decimal] = {}
    after = lease.model_copy(update={"held": None}) if lease is not None else None
    if legacy is not None:
        _add(deltas, day, cost - legacy.amount_usd)
    elif leased is not None and after is not None:
        paid = min(cost, after.usd)
        after = after.model_copy(update={"usd": after.usd - paid})
        _add(deltas, day, cost - paid)
    else:
        _add(deltas, day, cost)
    ends = status is None or status.terminal
    if ends and after is not None:  # the run ended: what it did not spend goes back
        _add(deltas, after.day, -after.usd)
    usage = record.usage.model_dump()
    day_totals = {"spent_usd": cost, "steps": 1, **usage}
    priced_model = record.requested_model or record.model  # the price book's id, not the dated snapshot
    shard = stat_shard(run.run_id, record.step)
    per_run: dict[str, Decimal | int] = {"spent_usd": cost, "steps": 1}
    change = RunChange(
        run.key,
        tuple(conditions),
        status=status,
        output=output if require_active else None,
        error=record.error if status is not None and status.terminal else None,
        completed_steps=record.step + 1,
        charge=record.usage,
        cost_usd=cost,
        release=legacy is not None,
        lease=after if after is not None and not ends and after != lease else None,
        drop_lease=ends and lease is not None,
        updated_at=record.finished_at,
        listing=place(run) if status is RunStatus.RUNNING else None,
    )
    return Plan(
        run=change,
        counters=(
            CounterChange(Counter(run.tenant, day, shard=shard), day_totals),
            CounterChange(Counter(run.tenant, day, model=priced_model, shard=shard), day_totals),
            CounterChange(Counter(run.tenant, day, run_id=run.run_id, shard=run_shard(run.run_id)), per_run),
            CounterChange(Counter(None, day, shard=shard), day_totals),
            *_committed(run.tenant, {d: delta for d, delta in deltas.items() if delta}),
        ),
        record=record,
    )


def _holding(run: Run) -> list[Condition]:
    """The run holds what it was read with: its reservation on the counters (or none) and its lease."""
    return [Holds(run.reservation) if run.reservation else HoldsNothing(), LeaseIs(run.lease)]


def _given_back(run: Run, *, legacy: bool) -> dict[str, Decimal]:
    """The day counters' deltas that free the run's lease and (with ``legacy``) its reservation on the counters."""
    deltas: dict[str, Decimal] = {}
    if run.lease is not None:
        _add(deltas, run.lease.day, -run.lease.usd)
    if legacy and run.reservation is not None:
        _add(deltas, run.reservation.day, -run.reservation.amount_usd)
    return {day: delta for day, delta in deltas.items() if delta}


def end_plan(
    run: Run, status: RunStatus, *, error: RunError | None, release: bool, now: str, turn: int | None = None
) -> Plan:
    """Move an active run to a terminal status, as it was read: the same steps completed, the same reservation
    and lease held (what its ender settled the calls of, ``end_run``). With ``release`` (no call can be in flight)
    the reservation it holds and its lease are given back too (once); otherwise a held call keeps them for the
    call to settle or for a delayed release (a lease with no call held goes back at once)."""
    if not status.terminal:
        raise ValueError(f"a run ends with a terminal status, not {status.value}")
    gives_back = release or run.held is None
    conditions = _fenced(run, [IsActive(), AtStep(run.completed_steps)], turn) + _holding(run)
    change = RunChange(run.key, tuple(conditions), status=status, error=error,
                       release=release and run.reservation is not None, drop_lease=gives_back and run.lease is not None,
                       updated_at=now)  # fmt: skip
    return Plan(run=change, counters=_committed(run.tenant, _given_back(run, legacy=release)) if gives_back else ())


def release_plan(run: Run) -> Plan:
    """Free an ended run's reservation and give its lease back, once no call can be using them."""
    change = RunChange(run.key, (HasEnded(), *_holding(run)), release=run.reservation is not None,
                       drop_lease=run.lease is not None)  # fmt: skip
    return Plan(run=change, counters=_committed(run.tenant, _given_back(run, legacy=True)))


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
        back = _own(run, committed.day, replacing)
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
    ``committed`` the daily budgets (the run's lease and a ``replacing`` reservation count as left: they are
    given back). For the
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
) -> tuple[Run, Reservation]:
    """Reserve the next call (``wanted`` with its amount left to this) with the largest output allowance, up to
    ``max_tokens``, that every budget covers (``call_allowance``), from the run's lease (``reserve_plan``). A lease
    that does not cover it is taken anew for ``lease_size``. The daily counters are read only once one of them
    refused: far from a daily limit a call is one write to the run item, and one in LEASE_CALLS also writes the
    counters. Returns the run as it is now and the reservation held (the allowance it covers is ``tokens_held``).

    Raises:
        BudgetRefusedError: a budget cannot take even the smallest call (see ``call_allowance``).
        RunNotActiveError, StoreConflictError: as ``reserve``.
    """
    committed: DayCommitted | None = None
    for attempt in range(SIZE_TRIES):
        tokens = call_allowance(run, limits, call, prompt_tokens=prompt_tokens, max_tokens=max_tokens,
                                committed=committed, replacing=replacing)  # fmt: skip
        sized = wanted.model_copy(update={"amount_usd": call.worst_case(tokens)})
        lease_usd = lease_size(run, sized, limits, call.worst_case(max_tokens), committed, replacing)
        try:
            return reserve_run(store, run, sized, limits, replacing=replacing, now=now, lease_usd=lease_usd)
        except BudgetRefusedError as exc:
            if exc.code not in DAILY_BUDGETS or attempt == SIZE_TRIES - 1:
                raise
            # a daily budget has less left than this lease: size the call and the lease to what is left, as read now
            committed = DayCommitted(wanted.day, *store.committed(run.tenant, wanted.day))
    raise AssertionError("unreachable")  # pragma: no cover


def lease_size(
    run: Run, wanted: Reservation, limits: BudgetLimits, full_call: Decimal, committed: DayCommitted | None,
    replacing: Reservation | None,
) -> Decimal:  # fmt: skip
    """The lease a run takes for ``wanted``: as many worst-case calls of its full allowance (``full_call``) as it
    (a session: its turn) has made (at least 1, at most LEASE_CALLS: a run takes one at steps 0, 1, 2, 4, 8, 16,
    24, ... when its calls cost their worst case), no more than its own max_usd leaves, and once the daily
    counters were read (``committed``: near a cap) no more than LEASE_SHARE_OF_LEFT of what each daily budget
    has left; never less than the call."""
    size = full_call * min(LEASE_CALLS, max(1, run.turn_steps))  # a session's turn: its own steps, not the session's
    if run.budget.max_usd is not None:
        size = min(size, Decimal(str(run.budget.max_usd)) - run.cost_usd)
    if committed is not None:
        back = _own(run, committed.day, replacing)
        for limit, spent in (
            (limits.tenant_daily_usd, committed.tenant_usd),
            (limits.global_daily_usd, committed.global_usd),
        ):
            if limit is not None:
                size = min(size, (limit - spent + back) * LEASE_SHARE_OF_LEFT)
    return max(size, wanted.amount_usd)


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
    held = run.held
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
    """Reserve ``wanted`` (see ``reserve_run``; a lease taken for it covers it alone). Returns the reservation the
    step holds."""
    return reserve_run(store, run, wanted, limits, replacing=replacing, now=now)[1]


def reserve_run(
    store: LedgerStore,
    run: Run,
    wanted: Reservation,
    limits: BudgetLimits,
    *,
    replacing: Reservation | None = None,
    now: str,
    lease_usd: Decimal | None = None,
) -> tuple[Run, Reservation]:
    """Reserve ``wanted`` (see ``reserve_plan``). Returns the run as it is now and the reservation the step holds:
    ``wanted``, or a duplicate invocation's that got there first.

    Raises:
        BudgetRefusedError: a budget cannot take it (code MAX_USD, TENANT_DAILY_BUDGET or GLOBAL_DAILY_BUDGET).
        RunNotActiveError: the run ended, moved on, or its reservation changed meanwhile.
        StoreConflictError: the run changed and changed back between the write and the re-read.
    """
    for _ in range(2):
        held = run.held
        if replacing is None and held is not None and held.step == wanted.step:
            return run, held  # reserved for this step already (as read): shared, never held twice
        plan = reserve_plan(run, wanted, limits, replacing=replacing, now=now, lease_usd=lease_usd)
        rejected = store.apply(plan)
        if rejected is None:
            return plan.run.applied_to(run), wanted
        if isinstance(rejected, CounterChange):
            tenant_committed, global_committed = store.committed(run.tenant, wanted.day)
            committed = tenant_committed if rejected.counter.tenant is not None else global_committed
            code = rejected.budget or GLOBAL_DAILY_BUDGET
            raise _refusal(code, run, wanted.day, limits, committed, wanted.amount_usd)
        current = store.get_run(run.key)
        if current is None or current.status.terminal or current.completed_steps != wanted.step:
            raise RunNotActiveError(run.run_id)
        if current.turn != run.turn:
            raise RunNotActiveError(run.run_id)
        held = current.held
        if held is not None and held.step == wanted.step:
            if replacing is None or held.identity != replacing.identity:
                return current, held  # a duplicate invocation reserved (or moved) for this step first: share it
        if (held is None) != (replacing is None):  # it was released or taken meanwhile
            raise RunNotActiveError(f"{run.run_id}: the reservation for step {wanted.step} changed")
        max_usd = Decimal(str(run.budget.max_usd)) if run.budget.max_usd is not None else None
        if max_usd is not None and current.cost_usd > max_usd - wanted.amount_usd:
            raise _run_refusal(current, wanted.amount_usd)
        if current == run:  # no budget refused it: the run changed and changed back meanwhile; the invoker retries
            break
        run = current  # read before its lease last changed, holding what this expects: planned again, once
    raise StoreConflictError(f"run {run.key} changed while step {wanted.step} was reserving")


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
    """Free the reservation of ``step`` and give back the lease if the run has ended and still holds it. Returns
    whether it did."""
    run = store.get_run(key)
    if run is None or not run.status.terminal or run.held is None or run.held.step != step:
        return False  # settled by its late step, or never held
    return store.apply(release_plan(run)) is None
