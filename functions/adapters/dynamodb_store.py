"""RunStore on one DynamoDB table.

Keys (every partition is tenant-scoped; a run's items share one partition so one Query reads it all):

    pk = "T#{tenant}#R#{run_id}"   sk = "RUN"                          the run
                                   sk = "STEP#{step:05d}"              one model call
                                   sk = "TOOL#{step:05d}#{tool_use_id}" one tool result

Spend counters (ADDed in the same transaction that saves a step; days are UTC):

    pk = "T#{tenant}#SPEND"        sk = "DAY#{day}"                    the tenant's day: spent, committed, tokens
                                   sk = "DAY#{day}#M#{model}"          the tenant's day for one model
                                   sk = "DAY#{day}#R#{run_id}"         the tenant's day for one run
    pk = "GLOBAL#SPEND"            sk = "DAY#{day}"                    every tenant's day

``committed_usd`` = spent + reservations in flight. Budgets are conditions on it: DynamoDB conditions cannot
add, so a reservation of ``a`` against a limit ``L`` is the condition ``committed_usd <= L - a``.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from functions.adapters.serde import from_item, to_item
from functions.agent.budgets import BudgetLimits, usd
from functions.agent.errors import (
    BudgetRefusedError,
    RunAlreadyExistsError,
    RunNotActiveError,
    RunNotFoundError,
    StepAlreadySavedError,
    StoreConflictError,
)
from functions.agent.models import (
    TERMINAL_STATUSES,
    ModelResponse,
    Reservation,
    Run,
    RunError,
    RunStatus,
    StepRecord,
    ToolOutcome,
    Usage,
)
from functions.agent.ports import Clock, RunHistory, RunStore
from functions.agent.spend import SpendRow

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
else:
    DynamoDBClient = Any

RUN_SK = "RUN"
TRANSACTION_ATTEMPTS = 4
_USAGE_FIELDS = tuple(Usage.model_fields)
_ACTIVE = [s.value for s in RunStatus if s not in TERMINAL_STATUSES]


def _status_is_active(values: dict[str, Any]) -> str:
    """The condition "#status is a non-terminal status"; adds its values to ``values``."""
    values.update({f":a{i}": status for i, status in enumerate(_ACTIVE)})
    return f"#status IN ({', '.join(f':a{i}' for i in range(len(_ACTIVE)))})"


def run_pk(tenant: str, run_id: str) -> str:
    return f"T#{tenant}#R#{run_id}"


def spend_pk(tenant: str | None) -> str:
    return f"T#{tenant}#SPEND" if tenant is not None else "GLOBAL#SPEND"


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
    return Usage(**{name: int(values.get(name, 0)) for name in _USAGE_FIELDS})


def _error_from(values: dict[str, Any]) -> RunError | None:
    raw = values.get("error")
    return RunError.model_validate_json(raw) if raw else None


def run_to_item(run: Run) -> dict[str, Any]:
    return to_item(
        {
            "pk": run_pk(run.tenant, run.run_id),
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
            "steps": run.steps,
            **run.usage.model_dump(),
            "cost_usd": run.cost_usd,
            "output": run.output,
            "error": run.error.model_dump_json() if run.error else None,
            "request_hash": run.request_hash,
            "response_cache": run.response_cache,
            "fallbacks": _json(run.fallbacks),
            **(
                {"reserved_step": run.reservation.step, "reservation": run.reservation.model_dump_json()}
                if run.reservation
                else {}
            ),
            "created_at": run.created_at,
            "updated_at": run.updated_at,
        }
    )


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
        steps=v["steps"],
        usage=_usage_from(v),
        cost_usd=Decimal(str(v.get("cost_usd", 0))),
        output=v.get("output"),
        error=_error_from(v),
        request_hash=v.get("request_hash"),
        response_cache=v.get("response_cache"),
        fallbacks=json.loads(v["fallbacks"]) if v.get("fallbacks") else None,
        reservation=Reservation.model_validate_json(v["reservation"]) if "reserved_step" in v else None,
        created_at=v["created_at"],
        updated_at=v["updated_at"],
    )


def step_to_item(tenant: str, record: StepRecord) -> dict[str, Any]:
    return to_item(
        {
            "pk": run_pk(tenant, record.run_id),
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
        status=v.get("status"),
        error=_error_from(v),
        started_at=v["started_at"],
        finished_at=v["finished_at"],
        duration_ms=v["duration_ms"],
    )


def tool_to_item(tenant: str, run_id: str, step: int, outcome: ToolOutcome) -> dict[str, Any]:
    return to_item(
        {
            "pk": run_pk(tenant, run_id),
            "sk": tool_sk(step, outcome.tool_use_id),
            "type": "tool",
            "step": step,
            **outcome.model_dump(),
        }
    )


def tool_from_item(item: dict[str, Any]) -> tuple[int, ToolOutcome]:
    v = from_item(item)
    return v["step"], ToolOutcome(
        tool_use_id=v["tool_use_id"],
        name=v["name"],
        content=v["content"],
        is_error=v["is_error"],
        duration_ms=v.get("duration_ms", 0),
    )


def _condition_failed(exc: ClientError) -> bool:
    return bool(exc.response["Error"]["Code"] == "ConditionalCheckFailedException")


class DynamoDBRunStore(RunStore):
    def __init__(self, table_name: str, client: DynamoDBClient, clock: Clock) -> None:
        self.table_name = table_name
        self.client = client
        self.clock = clock

    def create_run(self, run: Run) -> None:
        try:
            self.client.put_item(
                TableName=self.table_name,
                Item=run_to_item(run),
                ConditionExpression="attribute_not_exists(pk)",
            )
        except ClientError as exc:
            if _condition_failed(exc):
                raise RunAlreadyExistsError(run.run_id) from exc
            raise

    def get_run(self, tenant: str, run_id: str) -> Run | None:
        item = self.client.get_item(
            TableName=self.table_name, Key=to_item({"pk": run_pk(tenant, run_id), "sk": RUN_SK}), ConsistentRead=True
        ).get("Item")
        return run_from_item(item) if item else None

    def load_history(self, tenant: str, run_id: str) -> RunHistory:
        run: Run | None = None
        history_steps: list[StepRecord] = []
        tools: dict[tuple[int, str], ToolOutcome] = {}
        pending: dict[int, ModelResponse] = {}
        for item in self._query(run_pk(tenant, run_id)):
            kind = item["type"]["S"]
            if kind == "run":
                run = run_from_item(item)
            elif kind == "step":
                history_steps.append(step_from_item(item))
            elif kind == "tool":
                step, outcome = tool_from_item(item)
                tools[(step, outcome.tool_use_id)] = outcome
            elif kind == "pending":
                pending[int(item["step"]["N"])] = ModelResponse.model_validate_json(item["response"]["S"])
        if run is None:
            raise RunNotFoundError(run_id)
        return RunHistory(run=run, steps=history_steps, tool_results=tools, pending=pending)

    def _query(self, pk: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {
            "TableName": self.table_name,
            "KeyConditionExpression": "pk = :pk",
            "ExpressionAttributeValues": to_item({":pk": pk}),
            "ConsistentRead": True,
        }
        while True:
            page = self.client.query(**kwargs)
            items.extend(page["Items"])
            if "LastEvaluatedKey" not in page:
                return items
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def get_step(self, tenant: str, run_id: str, step: int) -> StepRecord | None:
        item = self.client.get_item(
            TableName=self.table_name,
            Key=to_item({"pk": run_pk(tenant, run_id), "sk": step_sk(step)}),
            ConsistentRead=True,
        ).get("Item")
        return step_from_item(item) if item else None

    def _transact(self, items: list[dict[str, Any]], token: str | None = None) -> list[str | None] | None:
        """Run a transaction; retry a TransactionConflict in place. Returns the cancellation reasons, or None."""
        for attempt in range(TRANSACTION_ATTEMPTS):
            try:
                # the token makes the SDK's own retry of a committed transaction a no-op, not a second write
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
                # A concurrent write to one of the items won: try again here, never by re-running the
                # Lambda, which would call the model again.
                time.sleep(random.uniform(0, 0.05 * 2**attempt))  # noqa: S311 - jitter, not crypto
        raise AssertionError("unreachable")  # pragma: no cover

    def _update(
        self,
        pk: str,
        sk: str,
        expression: str,
        values: dict[str, Any],
        *,
        condition: str | None = None,
        names: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        update: dict[str, Any] = {
            "TableName": self.table_name,
            "Key": to_item({"pk": pk, "sk": sk}),
            "UpdateExpression": expression,
            "ExpressionAttributeValues": to_item(values),
        }
        if condition:
            update["ConditionExpression"] = condition
        if names:
            update["ExpressionAttributeNames"] = names
        return {"Update": update}

    def reserve(
        self, run: Run, reservation: Reservation, limits: BudgetLimits, *, replacing: Reservation | None = None
    ) -> Reservation:
        # the budgets are charged the difference when a held reservation is replaced (a re-routed step)
        amount = reservation.amount_usd - (replacing.amount_usd if replacing else Decimal(0))
        day = reservation.day
        run_values: dict[str, Any] = {
            ":step": reservation.step,
            ":reservation": reservation.model_dump_json(),
        }
        run_condition = "#steps = :step AND " + _status_is_active(run_values)
        # replacing: only the exact reservation read may be replaced (a duplicate's move is not applied twice)
        run_condition += " AND reservation = :replaced" if replacing else " AND attribute_not_exists(reserved_step)"
        if replacing:
            run_values[":replaced"] = replacing.model_dump_json()
        if run.budget.max_usd is not None:
            run_condition += " AND cost_usd <= :run_headroom"
            run_values[":run_headroom"] = Decimal(str(run.budget.max_usd)) - reservation.amount_usd
        items = [
            self._update(
                run_pk(run.tenant, run.run_id),
                RUN_SK,
                "SET reserved_step = :step, reservation = :reservation",
                run_values,
                condition=run_condition,
                names={"#steps": "steps", "#status": "status"},
            )
        ]
        for tenant, limit in ((run.tenant, limits.tenant_daily_usd), (None, limits.global_daily_usd)):
            values: dict[str, Any] = {":amount": amount}
            condition = None
            if limit is not None and amount > 0:
                values[":headroom"] = limit - amount
                # a missing counter is a day with nothing committed yet: the call alone must fit the limit
                condition = (
                    "committed_usd <= :headroom"
                    if amount > limit
                    else "attribute_not_exists(committed_usd) OR committed_usd <= :headroom"
                )
            items.append(
                self._update(spend_pk(tenant), day_sk(day), "ADD committed_usd :amount", values, condition=condition)
            )
        reasons = self._transact(items)
        if reasons is None:
            return reservation
        if reasons[0] == "ConditionalCheckFailed":
            current = self.get_run(run.tenant, run.run_id)
            if current is None or current.status.terminal or current.steps != reservation.step:
                raise RunNotActiveError(run.run_id)
            if current.reservation is not None and current.reservation.step == reservation.step:
                if replacing is None or current.reservation != replacing:
                    return current.reservation  # a duplicate invocation reserved for this step first: share it
            if (current.reservation is None) != (replacing is None):  # it was released or taken meanwhile
                raise RunNotActiveError(f"{run.run_id}: the reservation for step {reservation.step} changed")
            raise BudgetRefusedError(
                "MAX_USD",
                f"run budget max_usd={usd(Decimal(str(run.budget.max_usd)))}: {usd(current.cost_usd)} spent, "
                f"the next call may cost up to {usd(reservation.amount_usd)}",
            )
        tenant_committed, global_committed = self.committed_today(run.tenant, day)
        if reasons[1] == "ConditionalCheckFailed":
            raise BudgetRefusedError(
                "TENANT_DAILY_BUDGET",
                f"tenant {run.tenant} daily budget {usd(limits.tenant_daily_usd or Decimal(0))} for {day}: "
                f"{usd(tenant_committed)} spent or reserved, the next call may cost up to {usd(amount)}",
            )
        raise BudgetRefusedError(
            "GLOBAL_DAILY_BUDGET",
            f"global daily budget {usd(limits.global_daily_usd or Decimal(0))} for {day}: "
            f"{usd(global_committed)} spent or reserved, the next call may cost up to {usd(amount)}",
        )

    def spend_rows(self, tenant: str, first_day: str, last_day: str) -> list[SpendRow]:
        rows = []
        kwargs: dict[str, Any] = {
            "TableName": self.table_name,
            "KeyConditionExpression": "pk = :pk AND sk BETWEEN :first AND :last",
            "ExpressionAttributeValues": to_item(
                {":pk": spend_pk(tenant), ":first": day_sk(first_day), ":last": day_sk(last_day) + "#~"}
            ),
        }
        while True:
            page = self.client.query(**kwargs)
            for item in page["Items"]:
                v = from_item(item)
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
            if "LastEvaluatedKey" not in page:
                return rows
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def committed_today(self, tenant: str, day: str) -> tuple[Decimal, Decimal]:
        keys = [to_item({"pk": spend_pk(t), "sk": day_sk(day)}) for t in (tenant, None)]
        found = {
            item["pk"]["S"]: Decimal(item.get("committed_usd", {"N": "0"})["N"])
            for item in self.client.batch_get_item(
                RequestItems={self.table_name: {"Keys": keys, "ConsistentRead": True}}
            )["Responses"].get(self.table_name, [])
        }
        return found.get(spend_pk(tenant), Decimal(0)), found.get(spend_pk(None), Decimal(0))

    def save_step(self, run: Run, record: StepRecord, output: str | None, *, require_active: bool = True) -> None:
        usage = record.usage.model_dump()
        # the reservation this call held (if the run still holds it) is settled here, never twice
        held = run.reservation if run.reservation and run.reservation.step == record.step else None
        day = held.day if held else record.finished_at[:10]
        sets = ["#steps = :next", "updated_at = :now"]
        names = {"#steps": "steps"}
        values: dict[str, Any] = {
            ":next": record.step + 1,
            ":step": record.step,
            ":now": record.finished_at,
            ":cost": record.cost_usd,
            **{f":{name}": count for name, count in usage.items()},
        }
        condition = "#steps = :step"
        condition += (
            " AND reservation = :held"  # exactly the reservation this call was made under
            if held
            else " AND (attribute_not_exists(reserved_step) OR reserved_step <> :step)"
        )
        if held:
            values[":held"] = held.model_dump_json()
        if require_active:
            sets.append("#status = :running")
            names["#status"] = "status"
            values[":running"] = RunStatus.RUNNING.value
            condition += " AND " + _status_is_active(values)
            if output is not None:
                sets.append("#output = :output")
                names["#output"] = "output"
                values[":output"] = output
        adds = ", ".join([f"{name} :{name}" for name in usage] + ["cost_usd :cost"])
        run_update = f"SET {', '.join(sets)} ADD {adds}" + (" REMOVE reserved_step, reservation" if held else "")
        counter_values = {
            ":cost": record.cost_usd,
            ":settle": record.cost_usd - (held.amount_usd if held else Decimal(0)),
            ":one": 1,
            **{f":{name}": count for name, count in usage.items()},
        }
        counted = ", ".join(f"{name} :{name}" for name in usage)
        totals = f"ADD spent_usd :cost, committed_usd :settle, steps :one, {counted}"
        per_model = {k: v for k, v in counter_values.items() if k != ":settle"}
        priced_model = record.requested_model or record.model  # the price book's id, not the dated snapshot
        items = [
            {
                "Put": {
                    "TableName": self.table_name,
                    "Item": step_to_item(run.tenant, record),
                    "ConditionExpression": "attribute_not_exists(pk)",
                }
            },
            self._update(run_pk(run.tenant, run.run_id), RUN_SK, run_update, values, condition=condition, names=names),
            self._update(spend_pk(run.tenant), day_sk(day), totals, counter_values),
            self._update(
                spend_pk(run.tenant),
                day_sk(day, priced_model),
                f"ADD spent_usd :cost, steps :one, {counted}",
                per_model,
            ),
            self._update(
                spend_pk(run.tenant),
                day_sk(day, run_id=run.run_id),
                "ADD spent_usd :cost, steps :one",
                {":cost": record.cost_usd, ":one": 1},
            ),
            self._update(spend_pk(None), day_sk(day), totals, counter_values),
            {  # the answer stored before settling is settled now
                "Delete": {
                    "TableName": self.table_name,
                    "Key": to_item({"pk": run_pk(run.tenant, run.run_id), "sk": pending_sk(record.step)}),
                }
            },
        ]
        # makes the SDK's own retry of a committed transaction a no-op (tokens live 10 minutes)
        token = hashlib.sha256(f"{run.tenant}|{run.run_id}|{record.step}|{record.finished_at}".encode()).hexdigest()
        reasons = self._transact(items, token=token[:36])
        if reasons is None:
            return
        if reasons[0] == "ConditionalCheckFailed":
            raise StepAlreadySavedError(f"{run.run_id} step {record.step}")
        raise RunNotActiveError(run.run_id)

    def load_tool_context(
        self, tenant: str, run_id: str, step: int, tool_use_id: str
    ) -> tuple[Run | None, StepRecord | None, ToolOutcome | None]:
        pk = run_pk(tenant, run_id)
        keys = [to_item({"pk": pk, "sk": sk}) for sk in (RUN_SK, step_sk(step), tool_sk(step, tool_use_id))]
        request: dict[str, Any] = {self.table_name: {"Keys": keys, "ConsistentRead": True}}
        found: dict[str, dict[str, Any]] = {}
        while request:
            page = self.client.batch_get_item(RequestItems=request)
            for item in page["Responses"].get(self.table_name, []):
                found[item["sk"]["S"]] = item
            request = page.get("UnprocessedKeys") or {}
        run = run_from_item(found[RUN_SK]) if RUN_SK in found else None
        record = step_from_item(found[step_sk(step)]) if step_sk(step) in found else None
        tool = found.get(tool_sk(step, tool_use_id))
        return run, record, tool_from_item(tool)[1] if tool else None

    def save_tool_result(self, tenant: str, run_id: str, step: int, outcome: ToolOutcome) -> ToolOutcome:
        try:
            self.client.put_item(
                TableName=self.table_name,
                Item=tool_to_item(tenant, run_id, step, outcome),
                ConditionExpression="attribute_not_exists(pk)",
            )
        except ClientError as exc:
            if not _condition_failed(exc):
                raise
            item = self.client.get_item(
                TableName=self.table_name,
                Key=to_item({"pk": run_pk(tenant, run_id), "sk": tool_sk(step, outcome.tool_use_id)}),
                ConsistentRead=True,
            )["Item"]
            return tool_from_item(item)[1]
        return outcome

    def save_pending(self, run: Run, step: int, response: ModelResponse) -> None:
        self.client.put_item(
            TableName=self.table_name,
            Item=to_item(
                {
                    "pk": run_pk(run.tenant, run.run_id),
                    "sk": pending_sk(step),
                    "type": "pending",
                    "step": step,
                    "response": response.model_dump_json(),
                }
            ),
        )

    def release_reservation(self, tenant: str, run_id: str, step: int) -> bool:
        run = self.get_run(tenant, run_id)
        if run is None or not run.status.terminal or run.reservation is None or run.reservation.step != step:
            return False  # settled by its late step, or never held
        held = run.reservation
        terminal = [s.value for s in TERMINAL_STATUSES]
        items = [
            self._update(
                run_pk(tenant, run_id),
                RUN_SK,
                "REMOVE reserved_step, reservation",
                {":held": held.model_dump_json(), **{f":t{i}": s for i, s in enumerate(terminal)}},
                condition=f"reservation = :held AND #status IN ({', '.join(f':t{i}' for i in range(len(terminal)))})",
                names={"#status": "status"},
            ),
            *(
                self._update(
                    spend_pk(t), day_sk(held.day), "ADD committed_usd :release", {":release": -held.amount_usd}
                )
                for t in (tenant, None)
            ),
        ]
        return self._transact(items) is None

    def finish_run(
        self,
        tenant: str,
        run_id: str,
        status: RunStatus,
        *,
        output: str | None = None,
        error: RunError | None = None,
        release: bool = True,
    ) -> bool:
        for _ in range(TRANSACTION_ATTEMPTS):
            run = self.get_run(tenant, run_id)
            if run is None or run.status.terminal:
                return False
            sets = ["#status = :status", "updated_at = :now"]
            values: dict[str, Any] = {
                ":status": status.value,
                ":now": self.clock.now().isoformat(timespec="milliseconds"),
            }
            names = {"#status": "status"}
            if output is not None:
                sets.append("#output = :output")
                names["#output"] = "output"
                values[":output"] = output
            if error is not None:
                sets.append("#error = :error")
                names["#error"] = "error"
                values[":error"] = error.model_dump_json()
            condition = "attribute_exists(pk) AND " + _status_is_active(values)
            expression = f"SET {', '.join(sets)}"
            held = run.reservation if release else None
            if held:  # no call can be in flight: release what the run holds against every budget
                condition += " AND reservation = :held"  # exactly the one read: released once
                values[":held"] = held.model_dump_json()
                expression += " REMOVE reserved_step, reservation"
            elif release:
                condition += " AND attribute_not_exists(reserved_step)"
            items = [self._update(run_pk(tenant, run_id), RUN_SK, expression, values, condition=condition, names=names)]
            if held:
                freed = {":release": -held.amount_usd}
                items += [
                    self._update(spend_pk(t), day_sk(held.day), "ADD committed_usd :release", freed)
                    for t in (tenant, None)
                ]
            if self._transact(items) is None:
                return True
            # The run ended, or its reservation changed (a step settled) between the read and the write: re-read.
        raise RuntimeError(f"run {run_id} kept changing while being finished")
