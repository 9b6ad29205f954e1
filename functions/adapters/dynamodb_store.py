"""RunStore on one DynamoDB table.

Keys (every partition is tenant-scoped; a run's items share one partition so one Query reads it all):

    pk = "T#{tenant}#R#{run_id}"   sk = "RUN"                          the run
                                   sk = "STEP#{step:05d}"              one model call
                                   sk = "PENDING#{step:05d}"           an answer stored before its step settled
                                   sk = "TOOL#{step:05d}#{tool_use_id}" one tool result
                                   sk = "EVENT#{event_id}"             an event a session's client sent

Spend counters (ADDed by the ledger's plans; days are UTC; ``{k:02d}`` is one of the ledger's STAT_SHARDS
shards, each its own partition, so that no item takes every step's write):

    pk = "T#{tenant}#SPEND"         sk = "DAY#{day}"              the tenant's day: committed (the budget's condition)
    pk = "T#{tenant}#SPEND#{k:02d}" sk = "DAY#{day}"              the tenant's day on shard k: spent, steps, tokens
                                    sk = "DAY#{day}#M#{model}"    the tenant's day for one model, on shard k
                                    sk = "DAY#{day}#R#{run_id}"   the tenant's day for one run (on its run's shard):
                                                                  spent, steps
    pk = "GLOBAL#SPEND"             sk = "DAY#{day}"              every tenant's day: committed
    pk = "GLOBAL#SPEND#{k:02d}"     sk = "DAY#{day}"              every tenant's day on shard k: spent, steps, tokens

Earlier versions added the statistics to the unsharded items too: readers add up the unsharded item and every
shard (``spend_pks``).

The index of active work (functions/agent/active.py) is the sparse global secondary index ``active``: a run item
has its key attributes ``active_pk`` = "ACTIVE#{shard:02d}" and ``active_sk`` = "{tenant}#{since}#{run_id}" exactly
while the run is active, set by the put that creates it (or starts a session's turn) and removed by the ledger's
write that ends it; the index carries ``status``, ``turn`` and ``created_by`` too (ACTIVE_PROJECTION).

A run's lease (functions/agent/ledger.py) is the JSON attribute ``lease``, the call it holds inside it; conditions
compare it whole (it round-trips exactly). Earlier versions neither read nor remove it. A reservation an earlier
version made (held on the counters themselves) is plain attributes of the run item (``reserved_step``,
``reserved_usd``, ``reserved_day``, ``reserved_model``, ``reserved_cheap``, ``reserved_reason``), and for one more
release also the JSON attribute ``reservation`` that earlier versions used (see LEGACY_RESERVATION). The budget
rules live in functions/agent/ledger.py: this adapter renders its plans as one conditional transaction and decides
nothing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
import time
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from functions.adapters.dynamodb_history import CachedHistory, HistoryCache, event_floor, item_bytes, open_from
from functions.adapters.serde import batch_get, condition_failed, from_item, to_item
from functions.agent.active import ActiveEntry, listing, partition
from functions.agent.errors import RunAlreadyExistsError, RunNotFoundError, StoreConflictError
from functions.agent.ledger import (
    STAT_SHARDS,
    AtStep,
    CommittedAtMost,
    Condition,
    CostAtMost,
    Counter,
    CounterChange,
    HasEnded,
    Holds,
    HoldsNothing,
    HoldsNothingFor,
    InTurn,
    IsActive,
    LeaseIs,
    Plan,
    Rejected,
    RunChange,
)
from functions.agent.models import (
    TERMINAL_STATUSES,
    AgentConfig,
    Lease,
    ModelResponse,
    Reservation,
    Run,
    RunError,
    RunKey,
    RunStatus,
    StepRecord,
    StepRef,
    ToolError,
    ToolOutcome,
    Turn,
    Usage,
    UserEvent,
)
from functions.agent.ports import RunHistory, RunStore
from functions.agent.spend import SpendRow, merged

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
else:
    DynamoDBClient = Any

RUN_SK = "RUN"
EVENT_PREFIX, TOOL_PREFIX = "EVENT#", "TOOL#"
ACTIVE_INDEX = "active"  # infra/constructs/state_table.py creates it from these names
ACTIVE_PK, ACTIVE_SK = "active_pk", "active_sk"
ACTIVE_PROJECTION = ("status", "turn", "created_by")
USAGE_FIELDS = tuple(Usage.model_fields)
TRANSACTION_ATTEMPTS = 4
# Migration (written December 2026). Versions before budget leases held a run's reservation on the day counters, as
# plain attributes and (for the versions before them) one JSON string attribute beside reserved_step. Where the
# JSON is present it is what a reservation is read from and compared as (it round-trips exactly); the plain
# attributes decide only where it is absent. This version makes no such reservation (its calls are held in the
# run's lease): it only settles or frees the ones a run in flight across the deploy holds.
LEGACY_RESERVATION = "reservation"
RESERVATION_ATTRIBUTES = (
    "reserved_step",
    "reserved_usd",
    "reserved_day",
    "reserved_model",
    "reserved_cheap",
    "reserved_reason",
    LEGACY_RESERVATION,
)


def run_pk(key: RunKey) -> str:
    return f"T#{key.tenant}#R#{key.run_id}"


def spend_pk(tenant: str | None, shard: int | None = None) -> str:
    """The partition of a tenant's (None: everyone's) spend counters, on a statistics ``shard`` (None: unsharded)."""
    pk = f"T#{tenant}#SPEND" if tenant is not None else "GLOBAL#SPEND"
    return pk if shard is None else f"{pk}#{shard:02d}"


def spend_pks(tenant: str | None) -> list[str]:
    """Every partition a tenant's (or everyone's) day statistics may be on: the unsharded one, then each shard."""
    return [spend_pk(tenant), *(spend_pk(tenant, k) for k in range(STAT_SHARDS))]


def day_sk(day: str, model: str | None = None, run_id: str | None = None) -> str:
    return f"DAY#{day}" + (f"#M#{model}" if model else "") + (f"#R#{run_id}" if run_id else "")


def pending_sk(step: int) -> str:
    return f"PENDING#{step:05d}"


def step_sk(step: int) -> str:
    return f"STEP#{step:05d}"


def tool_sk(step: int, tool_use_id: str) -> str:
    return f"TOOL#{step:05d}#{tool_use_id}"


def _json(value: Any) -> str | None:
    return None if value is None else json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _usage_from(values: dict[str, Any]) -> Usage:
    return Usage(**{name: int(values.get(name, 0)) for name in USAGE_FIELDS})


def _error_from(values: dict[str, Any]) -> RunError | None:
    raw = values.get("error")
    return RunError.model_validate_json(raw) if raw else None


def _reservation_values(reservation: Reservation) -> dict[str, Any]:
    return {
        "reserved_step": reservation.step,
        "reserved_usd": reservation.amount_usd,
        "reserved_day": reservation.day,
        "reserved_model": reservation.model,
        "reserved_cheap": reservation.cheap,
        "reserved_reason": reservation.reason,
        LEGACY_RESERVATION: reservation.model_dump_json(),  # for the previous version, while a deploy rolls out
    }


def _reservation_from(v: dict[str, Any]) -> Reservation | None:
    if "reserved_step" not in v:
        return None
    if LEGACY_RESERVATION in v:  # see LEGACY_RESERVATION: current in every version's writes
        return Reservation.model_validate_json(v[LEGACY_RESERVATION])
    return Reservation(
        step=v["reserved_step"],
        amount_usd=Decimal(str(v["reserved_usd"])),
        day=v["reserved_day"],
        model=v["reserved_model"],
        cheap=v.get("reserved_cheap", False),
        reason=v.get("reserved_reason", ""),
    )


def run_to_item(run: Run) -> dict[str, Any]:
    return to_item(
        {
            "pk": run_pk(run.key),
            "sk": RUN_SK,
            "type": "run",
            "run_id": run.run_id,
            "tenant": run.tenant,
            "status": run.status.value,
            "input": run.input,
            "model": run.model,
            "tools": _json(run.tools),
            "budget": run.budget.model_dump_json(),
            "metadata": _json(run.metadata),
            "max_tokens_per_call": run.max_tokens_per_call,
            "steps": run.completed_steps,
            **run.usage.model_dump(),
            "cost_usd": run.cost_usd,
            "output": run.output,
            "error": run.error.model_dump_json() if run.error else None,
            "request_hash": run.request_hash,
            "response_cache": run.cache_responses,
            "fallbacks": _json(run.fallbacks),
            **(_reservation_values(run.reservation) if run.reservation else {}),
            "lease": run.lease.model_dump_json() if run.lease else None,
            **(_session_values(run) if run.session is not None else {}),
            "created_by": run.created_by,
            "created_at": run.created_at,
            "updated_at": run.updated_at,
            **_listing_values(run),
        }
    )


def _listing_values(run: Run) -> dict[str, str]:
    listed = listing(run)
    return {} if listed is None else {ACTIVE_PK: listed.partition, ACTIVE_SK: listed.key}


def run_from_item(item: dict[str, Any]) -> Run:
    v = from_item(item)
    return Run(
        run_id=v["run_id"],
        tenant=v["tenant"],
        status=RunStatus(v["status"]),
        input=v["input"],
        model=v["model"],
        tools=json.loads(v["tools"]),
        budget=v["budget"] and json.loads(v["budget"]),
        metadata=json.loads(v.get("metadata") or "{}"),
        max_tokens_per_call=v["max_tokens_per_call"],
        completed_steps=v["steps"],
        usage=_usage_from(v),
        cost_usd=Decimal(str(v.get("cost_usd", 0))),
        output=v.get("output"),
        error=_error_from(v),
        request_hash=v.get("request_hash"),
        cache_responses=v.get("response_cache"),
        fallbacks=json.loads(v["fallbacks"]) if v.get("fallbacks") else None,
        reservation=_reservation_from(v),
        lease=Lease.model_validate_json(v["lease"]) if v.get("lease") else None,
        agent=AgentConfig.model_validate_json(v["agent"]) if v.get("agent") else None,
        session=json.loads(v["session"]) if v.get("session") else None,
        turns=[Turn.model_validate(turn) for turn in json.loads(v.get("turns") or "[]")],
        created_by=v.get("created_by"),
        created_at=v["created_at"],
        updated_at=v["updated_at"],
    )


def _session_values(run: Run) -> dict[str, Any]:
    """A session's own attributes: ``session_rev`` counts its writes (sessions.py conditions on it)."""
    assert run.session is not None
    return {
        "agent": run.agent.model_dump_json() if run.agent else None,
        "session": _json(run.session),
        "session_rev": run.session.get("rev", 0),
        "turn": run.turn,  # what InTurn compares
        "turns": _json([turn.model_dump(mode="json", exclude_defaults=True) for turn in run.turns]),
    }


def event_sk(event_id: str) -> str:
    return f"EVENT#{event_id}"


def event_to_item(key: RunKey, event: UserEvent) -> dict[str, Any]:
    return to_item({"pk": run_pk(key), "sk": event_sk(event.id), "type": "event", "event": event.model_dump_json()})


def step_to_item(key: RunKey, record: StepRecord) -> dict[str, Any]:
    return to_item(
        {
            "pk": run_pk(key),
            "sk": step_sk(record.step),
            "type": "step",
            "run_id": record.run_id,
            "step": record.step,
            "model": record.model,
            "provider": record.provider,
            "stop_reason": record.stop_reason,
            "content": _json(record.content),
            **record.usage.model_dump(),
            "cost_usd": record.cost_usd,
            "decision": record.decision.value,
            "requested_model": record.requested_model,
            "route_reason": record.route_reason,
            "cheap": record.cheap,
            "superseded": record.superseded,
            "cleared_before": record.cleared_before,
            "status": record.status.value if record.status else None,
            "error": record.error.model_dump_json() if record.error else None,
            "started_at": record.started_at,
            "finished_at": record.finished_at,
            "duration_ms": record.duration_ms,
        }
    )


def step_from_item(item: dict[str, Any]) -> StepRecord:
    v = from_item(item)
    return StepRecord(
        run_id=v["run_id"],
        step=v["step"],
        model=v["model"],
        provider=v["provider"],
        stop_reason=v.get("stop_reason"),
        content=json.loads(v["content"]),
        usage=_usage_from(v),
        cost_usd=Decimal(str(v.get("cost_usd", 0))),
        decision=v["decision"],
        requested_model=v.get("requested_model"),
        route_reason=v.get("route_reason"),
        cheap=v.get("cheap", False),
        superseded=v.get("superseded", False),
        cleared_before=v.get("cleared_before", 0),
        status=v.get("status"),
        error=_error_from(v),
        started_at=v["started_at"],
        finished_at=v["finished_at"],
        duration_ms=v["duration_ms"],
    )


def tool_to_item(ref: StepRef, outcome: ToolOutcome) -> dict[str, Any]:
    return to_item(
        {
            "pk": run_pk(ref.key),
            "sk": tool_sk(ref.step, outcome.tool_use_id),
            "type": "tool",
            "step": ref.step,
            **outcome.model_dump(mode="json"),
        }
    )


# Tool results stored before December 2026 have no error_kind; the one kind routing reads is recognised by the
# message the registry gave such input then, so a run in flight across the upgrade still escalates.
LEGACY_INVALID_INPUT = "invalid input for "


def tool_from_item(item: dict[str, Any]) -> tuple[int, ToolOutcome]:
    v = from_item(item)
    kind = v.get("error_kind")
    if kind is None and v["is_error"] and str(v["content"]).startswith(LEGACY_INVALID_INPUT):
        kind = ToolError.INVALID_INPUT
    return v["step"], ToolOutcome(
        tool_use_id=v["tool_use_id"],
        name=v["name"],
        content=v["content"],
        is_error=v["is_error"],
        error_kind=kind,
        duration_ms=v.get("duration_ms", 0),
        size=v.get("size", len(str(v["content"]))),
        stored=v.get("stored"),
        final=v.get("final", True),
    )


class _Expression:
    """Collects the names and values of one item's update and condition, with unique placeholders."""

    def __init__(self) -> None:
        self.names: dict[str, str] = {}
        self.values: dict[str, Any] = {}

    def name(self, attribute: str) -> str:
        self.names[f"#{attribute}"] = attribute
        return f"#{attribute}"

    def value(self, value: Any) -> str:
        placeholder = f":v{len(self.values)}"
        self.values[placeholder] = value
        return placeholder

    def among(self, attribute: str, options: list[str]) -> str:
        return f"{self.name(attribute)} IN ({', '.join(self.value(option) for option in options)})"


_ACTIVE = [s.value for s in RunStatus if s not in TERMINAL_STATUSES]
_TERMINAL = [s.value for s in TERMINAL_STATUSES]


def render(condition: Condition, e: _Expression) -> str:
    """A ledger condition on the run item as a DynamoDB condition."""
    match condition:
        case AtStep(step=step):
            return f"{e.name('steps')} = {e.value(step)}"
        case IsActive():
            return e.among("status", _ACTIVE)
        case HasEnded():
            return e.among("status", _TERMINAL)
        case Holds(reservation=held):
            step, day, model, amount = held.identity
            legacy = e.name(LEGACY_RESERVATION)
            return (
                f"({legacy} = {e.value(held.model_dump_json())} OR (attribute_not_exists({legacy}) AND "
                f"reserved_step = {e.value(step)} AND reserved_day = {e.value(day)} AND "
                f"reserved_model = {e.value(model)} AND reserved_usd = {e.value(amount)}))"
            )
        case HoldsNothing():
            return "attribute_not_exists(reserved_step)"
        case HoldsNothingFor(step=step):
            return f"(attribute_not_exists(reserved_step) OR reserved_step <> {e.value(step)})"
        case InTurn(turn=turn):
            current = e.name("turn")
            return f"({current} = {e.value(turn)}" + (f" OR attribute_not_exists({current}))" if turn == 0 else ")")
        case CostAtMost(limit=limit):
            return f"cost_usd <= {e.value(limit)}"
        case LeaseIs(lease=lease):
            name = e.name("lease")
            return f"attribute_not_exists({name})" if lease is None else f"{name} = {e.value(lease.model_dump_json())}"
    raise TypeError(f"no rendering for {condition!r}")  # pragma: no cover - every Condition is matched above


class _Read:
    """The items of a run's partition, parsed as they are read (with their sizes, for the history cache)."""

    def __init__(self) -> None:
        self.run: Run | None = None
        self.steps: list[StepRecord] = []
        self.tools: dict[tuple[int, str], ToolOutcome] = {}
        self.pending: dict[int, ModelResponse] = {}
        self.events: list[UserEvent] = []
        self.sizes: dict[str, int] = {}  # of the items that never change once read (steps, tool results, events)

    def add(self, items: list[dict[str, Any]]) -> None:
        for item in items:
            kind = item["type"]["S"]
            if kind == "run":
                self.run = run_from_item(item)
            elif kind == "step":
                self.steps.append(step_from_item(item))
            elif kind == "tool":
                step, outcome = tool_from_item(item)
                self.tools[(step, outcome.tool_use_id)] = outcome
            elif kind == "event":
                self.events.append(UserEvent.model_validate_json(item["event"]["S"]))
            elif kind == "pending":
                self.pending[int(item["step"]["N"])] = ModelResponse.model_validate_json(item["response"]["S"])
            if kind in ("step", "tool", "event"):
                self.sizes[item["sk"]["S"]] = item_bytes(item)


class DynamoDBRunStore(RunStore):
    def __init__(self, table_name: str, client: DynamoDBClient, *, history: HistoryCache | None = None) -> None:
        """``history``: the runs this container has read, so that a history is read incrementally (the step
        function's store; see functions/adapters/dynamodb_history.py). Without it every read is whole."""
        self.table_name = table_name
        self.client = client
        self.history = history

    # ------------------------------------------------------------------------------------------- runs

    def create_run(self, run: Run) -> None:
        try:
            self.client.put_item(
                TableName=self.table_name, Item=run_to_item(run), ConditionExpression="attribute_not_exists(pk)"
            )
        except ClientError as exc:
            if condition_failed(exc):
                raise RunAlreadyExistsError(run.run_id) from exc
            raise

    def get_run(self, key: RunKey) -> Run | None:
        item = self._get(run_pk(key), RUN_SK)
        return run_from_item(item) if item else None

    def get_step(self, key: RunKey, step: int) -> StepRecord | None:
        item = self._get(run_pk(key), step_sk(step))
        return step_from_item(item) if item else None

    def load_history(self, key: RunKey) -> RunHistory:
        """The whole history. With a ``history`` cache, only what may have changed since this container last read
        the run is read (functions/adapters/dynamodb_history.py says what, and why that is all)."""
        cached = self.history.get(self.table_name, key) if self.history is not None else None
        if cached is not None:
            found = self._load_since(key, cached)
            if found is not None:
                return found
        # A Query is read-committed, not a snapshot: a transaction that commits while it runs is seen by the part of
        # the partition still to be read. The run item is read first and every other item after it, so the history
        # holds everything the run's state implies (a turn's events, written in the transaction that starts the turn;
        # an interrupt, stored before the turn is cancelled) and maybe later items, never a turn without the events
        # that began it: a follower of the derived events (functions/agent/streams.py) would skip them for good.
        pk = run_pk(key)
        read = _Read()
        read.add(self._query(pk, "sk >= :run", {":run": RUN_SK}) + self._query(pk, "sk < :run", {":run": RUN_SK}))
        if read.run is None:
            if self.history is not None:
                self.history.forget(self.table_name, key)
            raise RunNotFoundError(key.run_id)
        history = RunHistory(run=read.run, steps=read.steps, tool_results=dict(read.tools), pending=read.pending,
                             user_events=read.events)  # fmt: skip
        if self.history is not None:
            steps = tuple(read.steps)
            self.history.put(self.table_name, key, CachedHistory(
                read.run.created_at, read.run.turn, steps, read.tools, tuple(read.events), read.sizes,
                open_from(steps, read.tools),
            ))  # fmt: skip
        return history

    def _load_since(self, key: RunKey, cached: CachedHistory) -> RunHistory | None:
        """The history from ``cached`` and what may have changed since; None if the cache is of another run."""
        assert self.history is not None
        pk = run_pk(key)
        floor = event_sk(event_floor(cached.turn))
        # descending: the run item first, then the pending answers, then the events from the floor up
        read = _Read()
        read.add(self._query(pk, "sk BETWEEN :floor AND :run", {":floor": floor, ":run": RUN_SK}, forward=False))
        run = read.run
        if run is None or run.created_at != cached.created_at or run.completed_steps < len(cached.steps):
            self.history.forget(self.table_name, key)
            return None  # deleted, or made again under the same key: read it whole
        known = len(cached.steps)
        if run.completed_steps > known:
            read.add(self._query(pk, "sk BETWEEN :first AND :last", {":first": step_sk(known), ":last": "STEP#~"}))
        steps = [*cached.steps, *read.steps]
        tools = cached.tools
        sizes = {sk: size for sk, size in cached.sizes.items() if not sk.startswith(EVENT_PREFIX) or sk < floor}
        first = open_from(cached.steps, cached.tools, cached.open)
        if first < len(steps):  # results of open or new steps: read again from the lowest
            lowest = tool_sk(first, "")
            read.add(self._query(pk, "sk BETWEEN :first AND :last", {":first": lowest, ":last": "TOOL#~"}))
            tools = {where: outcome for where, outcome in cached.tools.items() if where[0] < first}
            tools.update(read.tools)
            sizes = {sk: size for sk, size in sizes.items() if not sk.startswith(TOOL_PREFIX) or sk < lowest}
        sizes.update(read.sizes)
        kept = [event for event in cached.events if event_sk(event.id) < floor]
        events = kept + read.events[::-1]  # read descending
        kept_steps = tuple(steps)
        self.history.put(self.table_name, key, CachedHistory(
            run.created_at, run.turn, kept_steps, tools, tuple(events), sizes, open_from(kept_steps, tools, first),
        ))  # fmt: skip
        return RunHistory(run=run, steps=steps, tool_results=dict(tools), pending=read.pending, user_events=events)

    # ------------------------------------------------------------------------------------------- the ledger

    def apply(self, plan: Plan) -> Rejected | None:
        parts: list[Rejected] = []
        items: list[dict[str, Any]] = []
        key = plan.run.key
        if plan.record is not None:
            parts.append(plan.record)
            items.append(
                {
                    "Put": {
                        "TableName": self.table_name,
                        "Item": step_to_item(key, plan.record),
                        "ConditionExpression": "attribute_not_exists(pk)",
                    }
                }
            )
        parts.append(plan.run)
        items.append(self._run_update(plan.run))
        for change in plan.counters:
            parts.append(change)
            items.append(self._counter_update(change))
        token = None
        if plan.record is not None:  # the answer stored before settling is settled now
            items.append(
                {"Delete": {"TableName": self.table_name, "Key": self._key(run_pk(key), pending_sk(plan.record.step))}}
            )
            # makes the SDK's own retry of a committed settlement a no-op (tokens live 10 minutes): named by the
            # record and by everything else the transaction writes, so a re-planned settlement of the same
            # record is never taken for a repeat (the record itself, the large part, is named by its step)
            rest = json.dumps(items[1:], sort_keys=True, separators=(",", ":"))
            named = f"{key}|{plan.record.step}|{plan.record.finished_at}|{rest}"
            token = hashlib.sha256(named.encode()).hexdigest()[:36]
        reasons = self._transact(items, token)
        if reasons is None:
            if plan.record is not None and self.history is not None:
                self._remember_step(key, plan.record)
            return None
        return next(part for part, reason in zip(parts, reasons, strict=False) if reason == "ConditionalCheckFailed")

    def _remember_step(self, key: RunKey, record: StepRecord) -> None:
        """The step this container just stored is the next one its cache of the run lacks: keep it (it never
        changes), so the run's next step here need not read it back."""
        assert self.history is not None
        cached = self.history.get(self.table_name, key)
        if cached is None or len(cached.steps) != record.step:
            return
        sk = step_sk(record.step)
        self.history.put(self.table_name, key, dataclasses.replace(
            cached, steps=(*cached.steps, record), sizes={**cached.sizes, sk: item_bytes(step_to_item(key, record))},
        ))  # fmt: skip

    def _run_update(self, change: RunChange) -> dict[str, Any]:
        e = _Expression()
        sets: list[str] = []
        for attribute, value in (
            ("status", change.status.value if change.status else None),
            ("output", change.output),
            ("error", change.error.model_dump_json() if change.error else None),
            ("steps", change.completed_steps),
            ("updated_at", change.updated_at),
            ("lease", change.lease.model_dump_json() if change.lease else None),
        ):
            if value is not None:
                sets.append(f"{e.name(attribute)} = {e.value(value)}")
        if change.listing is not None:  # kept where it is; written where the run has none yet
            for attribute, value in ((ACTIVE_PK, change.listing.partition), (ACTIVE_SK, change.listing.key)):
                sets.append(f"{e.name(attribute)} = if_not_exists({e.name(attribute)}, {e.value(value)})")
        removes = [
            *(RESERVATION_ATTRIBUTES if change.release else ()),
            *((e.name("lease"),) if change.drop_lease else ()),
            *((ACTIVE_PK, ACTIVE_SK) if change.delists else ()),
        ]
        adds = []
        if change.charge is not None:
            adds = [f"{name} {e.value(count)}" for name, count in change.charge.model_dump().items()]
            adds.append(f"cost_usd {e.value(change.cost_usd)}")
        expression = " ".join(
            clause
            for clause in (
                f"SET {', '.join(sets)}" if sets else "",
                f"ADD {', '.join(adds)}" if adds else "",
                f"REMOVE {', '.join(removes)}" if removes else "",
            )
            if clause
        )
        # never an upsert: a run that does not exist fails every condition (as in the ledger's ``holds``)
        condition = " AND ".join(["attribute_exists(pk)", *(render(c, e) for c in change.conditions)])
        return self._update(run_pk(change.key), RUN_SK, expression, e, condition)

    def _counter_update(self, change: CounterChange) -> dict[str, Any]:
        e = _Expression()
        expression = "ADD " + ", ".join(
            f"{e.name(name)} {e.value(Decimal(delta))}" for name, delta in change.add.items()
        )
        condition = _committed_at_most(change.limit, e) if change.limit else None
        return self._update(*_address(change.counter), expression, e, condition)

    def committed(self, tenant: str, day: str) -> tuple[Decimal, Decimal]:
        keys = [self._key(*_address(Counter(t, day))) for t in (tenant, None)]
        found = {
            item["pk"]["S"]: Decimal(item.get("committed_usd", {"N": "0"})["N"])
            for item in self.client.batch_get_item(
                RequestItems={self.table_name: {"Keys": keys, "ConsistentRead": True}}
            )["Responses"].get(self.table_name, [])
        }
        return found.get(spend_pk(tenant), Decimal(0)), found.get(spend_pk(None), Decimal(0))

    def save_pending(self, key: RunKey, step: int, response: ModelResponse) -> None:
        item = {"pk": run_pk(key), "sk": pending_sk(step), "type": "pending", "step": step}
        self.client.put_item(TableName=self.table_name, Item=to_item({**item, "response": response.model_dump_json()}))

    # ------------------------------------------------------------------------------------------- active work

    def list_active(self, shard: int, *, tenant: str | None, limit: int, after: str | None) -> list[ActiveEntry]:
        condition = f"{ACTIVE_PK} = :shard" + (f" AND begins_with({ACTIVE_SK}, :tenant)" if tenant is not None else "")
        values = {":shard": partition(shard), **({":tenant": f"{tenant}#"} if tenant is not None else {})}
        query: dict[str, Any] = {
            "TableName": self.table_name,
            "IndexName": ACTIVE_INDEX,
            "KeyConditionExpression": condition,
            "ExpressionAttributeValues": to_item(values),
            "Limit": limit,
        }
        if after is not None:  # an index's start key is the entry's index key and its item's key
            entry = ActiveEntry.parse(after, RunStatus.RUNNING)
            start = {ACTIVE_PK: partition(shard), ACTIVE_SK: after, "pk": run_pk(entry.run_key), "sk": RUN_SK}
            query["ExclusiveStartKey"] = to_item(start)
        found: list[ActiveEntry] = []
        while len(found) < limit:
            page = self.client.query(**query)
            for values_ in map(from_item, page["Items"]):
                found.append(ActiveEntry.parse(values_[ACTIVE_SK], RunStatus(values_["status"]),
                                               int(values_.get("turn", 0)), values_.get("created_by")))  # fmt: skip
            if "LastEvaluatedKey" not in page:
                break
            query["ExclusiveStartKey"] = page["LastEvaluatedKey"]
            query["Limit"] = limit - len(found)
        return found[:limit]

    # ------------------------------------------------------------------------------------------- spend

    def spend_rows(self, tenant: str, first_day: str, last_day: str) -> list[SpendRow]:
        rows = []
        bounds = {":first": day_sk(first_day), ":last": day_sk(last_day) + "#~"}
        found = [  # one Query per partition: the unsharded one and each shard's; a counter's rows added up
            item for pk in spend_pks(tenant)
            for item in self._query(pk, "sk BETWEEN :first AND :last", bounds, consistent=False)
        ]  # fmt: skip
        for v in map(from_item, found):
            parts = v["sk"].split("#")  # DAY, day[, M|R, id...]
            kind, ident = (parts[2], "#".join(parts[3:])) if len(parts) > 2 else (None, None)
            rows.append(
                SpendRow(
                    day=parts[1],
                    cost_usd=Decimal(str(v.get("spent_usd", 0))),
                    steps=int(v.get("steps", 0)),
                    usage=_usage_from(v),
                    model=ident if kind == "M" else None,
                    run_id=ident if kind == "R" else None,
                )
            )
        return merged(rows)

    def day_stats(self, tenant: str | None, day: str) -> dict[str, Decimal]:
        """A tenant's (None: everyone's) day: ``committed_usd`` (on the unsharded item) and the statistics
        (``spent_usd``, ``steps``, the usage fields) added up over the unsharded item and every shard (one
        BatchGetItem of STAT_SHARDS + 1 keys, eventually consistent)."""
        keys = [self._key(pk, day_sk(day)) for pk in spend_pks(tenant)]
        total: dict[str, Decimal] = {}
        for item in batch_get(self.client, self.table_name, keys):
            for name in ("committed_usd", "spent_usd", "steps", *USAGE_FIELDS):
                if name in item:
                    total[name] = total.get(name, Decimal(0)) + Decimal(str(item[name]))
        return total

    # ------------------------------------------------------------------------------------------- tools

    def load_tool_context(
        self, ref: StepRef, tool_use_id: str
    ) -> tuple[Run | None, StepRecord | None, ToolOutcome | None]:
        pk = run_pk(ref.key)
        keys = [self._key(pk, sk) for sk in (RUN_SK, step_sk(ref.step), tool_sk(ref.step, tool_use_id))]
        request: dict[str, Any] = {self.table_name: {"Keys": keys, "ConsistentRead": True}}
        found: dict[str, dict[str, Any]] = {}
        while request:
            page = self.client.batch_get_item(RequestItems=request)
            for item in page["Responses"].get(self.table_name, []):
                found[item["sk"]["S"]] = item
            request = page.get("UnprocessedKeys") or {}
        run = run_from_item(found[RUN_SK]) if RUN_SK in found else None
        record = step_from_item(found[step_sk(ref.step)]) if step_sk(ref.step) in found else None
        tool = found.get(tool_sk(ref.step, tool_use_id))
        return run, record, tool_from_item(tool)[1] if tool else None

    def save_tool_result(self, ref: StepRef, outcome: ToolOutcome) -> ToolOutcome:
        # a provisional result (final = false) is replaced; a final one never is
        stored = self._put_tool(ref, outcome, "attribute_not_exists(pk) OR #final = :provisional")
        return outcome if stored is None else stored

    def claim_tool(self, ref: StepRef, provisional: ToolOutcome) -> ToolOutcome | None:
        return self._put_tool(ref, provisional, "attribute_not_exists(pk)")

    def _put_tool(self, ref: StepRef, outcome: ToolOutcome, condition: str) -> ToolOutcome | None:
        """Put the result if ``condition`` holds: None; else the stored result."""
        names: dict[str, Any] = {}
        if "#final" in condition:
            names = {
                "ExpressionAttributeNames": {"#final": "final"},
                "ExpressionAttributeValues": {":provisional": {"BOOL": False}},
            }
        try:
            self.client.put_item(
                TableName=self.table_name, Item=tool_to_item(ref, outcome), ConditionExpression=condition, **names
            )
        except ClientError as exc:
            if not condition_failed(exc):
                raise
            item = self._get(run_pk(ref.key), tool_sk(ref.step, outcome.tool_use_id))
            assert item is not None  # the put failed because it exists
            return tool_from_item(item)[1]
        return None

    # ------------------------------------------------------------------------------------------- plumbing

    def _key(self, pk: str, sk: str) -> dict[str, Any]:
        return to_item({"pk": pk, "sk": sk})

    def _get(self, pk: str, sk: str) -> dict[str, Any] | None:
        item: dict[str, Any] | None = self.client.get_item(
            TableName=self.table_name, Key=self._key(pk, sk), ConsistentRead=True
        ).get("Item")
        return item

    def _query(
        self,
        pk: str,
        range_condition: str | None = None,
        values: dict[str, str] | None = None,
        *,
        consistent: bool = True,
        forward: bool = True,
    ) -> list[dict[str, Any]]:
        kwargs: dict[str, Any] = {
            "TableName": self.table_name,
            "KeyConditionExpression": "pk = :pk" + (f" AND {range_condition}" if range_condition else ""),
            "ExpressionAttributeValues": to_item({":pk": pk, **(values or {})}),
            "ConsistentRead": consistent,
        }
        if not forward:
            kwargs["ScanIndexForward"] = False
        items: list[dict[str, Any]] = []
        while True:
            page = self.client.query(**kwargs)
            items.extend(page["Items"])
            if "LastEvaluatedKey" not in page:
                return items
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def _update(self, pk: str, sk: str, expression: str, e: _Expression, condition: str | None) -> dict[str, Any]:
        update: dict[str, Any] = {
            "TableName": self.table_name,
            "Key": self._key(pk, sk),
            "UpdateExpression": expression,
        }
        if e.values:
            update["ExpressionAttributeValues"] = to_item(e.values)
        if e.names:
            update["ExpressionAttributeNames"] = e.names
        if condition:
            update["ConditionExpression"] = condition
        return {"Update": update}

    def _transact(self, items: list[dict[str, Any]], token: str | None = None) -> list[str | None] | None:
        """Run a transaction. Returns the cancellation reasons if a condition failed, else None.

        The one retry made in place: a transaction that loses a write race to a concurrent one
        (TransactionConflict) is tried again here, a few milliseconds later, rather than by re-running the
        Lambda (a Step Functions retry waits seconds and costs a state transition)."""
        for attempt in range(TRANSACTION_ATTEMPTS):
            try:
                self.client.transact_write_items(
                    TransactItems=items, **({"ClientRequestToken": token} if token else {})
                )
                return None
            except ClientError as exc:
                if exc.response["Error"]["Code"] != "TransactionCanceledException":
                    raise
                reasons = [r.get("Code") for r in exc.response.get("CancellationReasons", [])]
                if "ConditionalCheckFailed" in reasons:
                    return reasons
                if "TransactionConflict" not in reasons:
                    raise
                if attempt == TRANSACTION_ATTEMPTS - 1:
                    raise StoreConflictError("concurrent writes kept winning a run or budget item") from exc
                time.sleep(random.uniform(0, 0.05 * 2**attempt))  # noqa: S311 - jitter, not crypto
        raise AssertionError("unreachable")  # pragma: no cover


def _committed_at_most(limit: CommittedAtMost, e: _Expression) -> str:
    """``committed_usd`` (0 while the counter has none) is at most the headroom."""
    at_most = f"{e.name('committed_usd')} <= {e.value(limit.headroom)}"
    # a missing counter is a day with nothing committed yet: it fits exactly when the headroom is not negative
    return f"attribute_not_exists({e.name('committed_usd')}) OR {at_most}" if limit.headroom >= 0 else at_most


def _address(counter: Counter) -> tuple[str, str]:
    return spend_pk(counter.tenant, counter.shard), day_sk(counter.day, counter.model, counter.run_id)


def counter_key(counter: Counter) -> dict[str, Any]:
    """The item key of a spend counter (for tests and tools that read counters directly)."""
    pk, sk = _address(counter)
    return to_item({"pk": pk, "sk": sk})
