"""What the functions of the local stack do, counted: each Lambda invocation (function, event, wall time, the time
spent waiting on AWS calls), each AWS call it makes, and the DynamoDB read and write units each call would be
billed, computed the way DynamoDB bills them (moto reports fixed capacity figures, not these).

Shared by the benches that count per step (bench/step_calls.py, bench/orchestration.py):

    with LocalStack(port=0) as stack, Meter(stack) as meter:
        ...  # drive runs
        meter.invocations  # one Invocation per Lambda invocation, in order

Units, as DynamoDB on-demand bills them (item sizes by DynamoDB's rules, on the items moto holds):
- a read of an item: one unit per 4 KB, rounded up (half for an eventually consistent read); a Query: the items'
  total size, rounded up to 4 KB; a transactional read twice that;
- a write: one unit per 1 KB of the larger of the item before and after, rounded up (a write refused by its
  condition still takes one); a transactional write twice that, a ConditionCheck in a transaction counted as a
  write of its item (2 units per KB, assumed); plus one unit per global secondary index entry written (two when
  the entry's key changes), index entries being far below 1 KB here.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from stepwise.local.stack import LocalStack

WRITES = frozenset({"PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem", "TransactWriteItems"})
READ_UNIT_BYTES, WRITE_UNIT_BYTES = 4096, 1024
Key = tuple[str, str]  # an item's (pk, sk)


# ------------------------------------------------------------------------------------------ item sizes


def value_size(value: dict[str, Any]) -> int:
    """The size of one attribute value in DynamoDB's wire format, by DynamoDB's item-size rules."""
    ((kind, raw),) = value.items()
    if kind in ("S", "B"):
        return len(raw.encode()) if isinstance(raw, str) else len(raw)
    if kind == "N":  # (significant digits / 2) + 1
        return len(raw.lstrip("-").replace(".", "").strip("0") or "0") // 2 + 1
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "M":  # 3 bytes of overhead, plus its names and values
        return 3 + sum(len(name.encode()) + value_size(inner) for name, inner in raw.items())
    if kind == "L":
        return 3 + sum(value_size(inner) for inner in raw)
    if kind in ("SS", "NS", "BS"):
        return sum(value_size({kind[0]: element}) for element in raw)
    raise ValueError(f"not a DynamoDB attribute value: {value!r}")


def item_size(item: dict[str, dict[str, Any]]) -> int:
    """An item's size in bytes, as DynamoDB counts it: its attribute names and values."""
    return sum(len(name.encode()) + value_size(value) for name, value in item.items())


def read_units(size: int, *, consistent: bool = True, transactional: bool = False) -> float:
    units = max(1, math.ceil(size / READ_UNIT_BYTES)) * (2 if transactional else 1)
    return units if consistent or transactional else units / 2


def write_units(size: int, *, transactional: bool = False) -> int:
    return max(1, math.ceil(size / WRITE_UNIT_BYTES)) * (2 if transactional else 1)


# ------------------------------------------------------------------------------------------ records


@dataclass
class Call:
    """One AWS API call a function made."""

    service: str
    operation: str
    seconds: float = 0.0  # from sending the request to its answer (the service's time; moto's, here)
    cpu_seconds: float = 0.0  # the CPU time this thread spent in that span (moto's work, here)
    rru: float = 0.0
    wru: float = 0.0
    written: dict[Key, int] = field(default_factory=dict)  # the items a DynamoDB write changed: their write units


@dataclass
class Invocation:
    """One Lambda invocation of a function of the local stack."""

    function: str  # the function's logical id in the template
    event: dict[str, Any]
    seconds: float = 0.0
    cpu_seconds: float = 0.0  # the CPU time of the thread that ran it
    calls: list[Call] = field(default_factory=list)
    result: Any = None  # what the handler returned (None if it raised)

    @property
    def aws_seconds(self) -> float:
        return sum(call.seconds for call in self.calls)

    @property
    def own_seconds(self) -> float:
        """The handler's own time: its wall time less the time its AWS calls waited on the service."""
        return max(0.0, self.seconds - self.aws_seconds)

    @property
    def own_cpu_seconds(self) -> float:
        """The handler's own CPU time: its thread's, less what moto spent answering its AWS calls (waits on I/O,
        e.g. the model call, and on other threads for the GIL, are not CPU time)."""
        return max(0.0, self.cpu_seconds - sum(call.cpu_seconds for call in self.calls))

    def count(self, service: str) -> int:
        return sum(1 for call in self.calls if call.service == service)

    @property
    def rru(self) -> float:
        return sum(call.rru for call in self.calls)

    @property
    def wru(self) -> float:
        return sum(call.wru for call in self.calls)


# ------------------------------------------------------------------------------------------ the meter


class Meter(AbstractContextManager["Meter"]):
    """Counts what the local stack's functions do. Enter it once the stack has started and before the first
    invocation: the functions' boto3 clients are made on their first invocation, from the default session this
    registers its hooks on (a client copies the session's hooks when it is made)."""

    def __init__(self, stack: LocalStack) -> None:
        self.stack = stack
        self.invocations: list[Invocation] = []
        self._current = threading.local()  # .invocation: the one running on this thread; .call, .before
        self._lock = threading.Lock()
        self.errors: list[str] = []

    def __enter__(self) -> Meter:
        import boto3
        from moto.dynamodb.models import dynamodb_backends

        from stepwise.local import stack as local_stack
        from stepwise.local.template import ACCOUNT, REGION

        self._backend = dynamodb_backends[ACCOUNT][REGION]
        # the local stack lets moto's DynamoDB handle one request at a time: read its items under the same lock
        self._backend_lock: AbstractContextManager[Any] = getattr(local_stack, "_DYNAMODB_REQUEST", nullcontext())
        self._indexes = [(index["KeySchema"], index["Projection"]) for index in self.stack.topology.table_indexes]
        events = boto3._get_default_session().events
        self._hooks: list[tuple[str, Callable[..., Any]]] = [
            ("before-parameter-build", self._guarded(self._before_call)),
            ("response-received", self._guarded(self._received)),
            ("after-call", self._guarded(self._after_call)),
        ]
        self._send_hook = self._guarded(self._sending)
        events.register_first("before-send", self._send_hook)  # ahead of moto's own before-send (it answers there)
        for name, hook in self._hooks:
            events.register(name, hook)
        self._original_invoke = self.stack.lambdas.invoke
        self.stack.lambdas.invoke = self._invoke  # type: ignore[method-assign]
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        import boto3

        events = boto3._get_default_session().events
        events.unregister("before-send", self._send_hook)
        for name, hook in self._hooks:
            events.unregister(name, hook)
        self.stack.lambdas.invoke = self._original_invoke  # type: ignore[method-assign]

    def _guarded(self, hook: Callable[..., None]) -> Callable[..., None]:
        """A hook that never breaks the function it watches: what it raises is kept in ``errors`` (see check())."""

        def guarded(**kwargs: Any) -> None:
            try:
                hook(**kwargs)
            except Exception as exc:  # the bench reports it, the function goes on
                self.errors.append(f"{hook.__name__}: {type(exc).__name__}: {exc}")

        return guarded

    def check(self) -> None:
        """Raise if a hook failed: the counts would be incomplete."""
        if self.errors:
            raise RuntimeError("the meter failed to count some calls: " + "; ".join(sorted(set(self.errors))[:5]))

    def clear(self) -> None:
        with self._lock:
            self.invocations.clear()

    def of(self, function: str) -> list[Invocation]:
        with self._lock:
            return [invocation for invocation in self.invocations if invocation.function == function]

    # -------------------------------------------------------------------------------------- hooks
    def _invoke(self, name: str, event: dict[str, Any]) -> Any:
        from stepwise.local.template import function_and_qualifier

        invocation = Invocation(function=function_and_qualifier(name)[0], event=event)
        outer = getattr(self._current, "invocation", None)
        self._current.invocation = invocation
        started, cpu = time.perf_counter(), time.thread_time()
        try:
            invocation.result = self._original_invoke(name, event)
            return invocation.result
        finally:
            invocation.seconds = time.perf_counter() - started
            invocation.cpu_seconds = time.thread_time() - cpu
            self._current.invocation = outer
            with self._lock:
                self.invocations.append(invocation)

    def _before_call(self, model: Any, params: dict[str, Any], **_: Any) -> None:
        invocation: Invocation | None = getattr(self._current, "invocation", None)
        if invocation is None:
            return
        service = model.service_model.service_name
        call = Call(service=service, operation=model.name)
        invocation.calls.append(call)
        self._current.call = call
        self._current.params = params
        self._current.before = self._sizes_before(model.name, params) if service == "dynamodb" else {}

    def _sending(self, **_: Any) -> None:
        self._current.sent = time.perf_counter(), time.thread_time()

    def _received(self, **_: Any) -> None:
        call: Call | None = getattr(self._current, "call", None)
        if call is not None:  # (retried sends add up)
            sent, cpu = self._current.sent
            call.seconds += time.perf_counter() - sent
            call.cpu_seconds += time.thread_time() - cpu

    def _after_call(self, model: Any, parsed: dict[str, Any], **_: Any) -> None:
        call: Call | None = getattr(self._current, "call", None)
        if call is None:
            return
        self._current.call = None
        params = self._current.params
        if call.service == "dynamodb":
            failed = "Error" in parsed
            if model.name in WRITES:
                self._count_writes(call, params, self._current.before, failed=failed)
            else:
                self._count_reads(call, params, parsed)

    # -------------------------------------------------------------------------------------- units
    def _stored(self, table: str, key: dict[str, Any]) -> dict[str, Any] | None:
        """The item moto holds under ``key`` (wire format), or None."""
        with self._backend_lock:
            try:
                item = self._backend.get_item(table, key)
            except Exception:  # a table or key moto does not know (the call itself reports it)
                return None
            return None if item is None else dict(item.to_json()["Attributes"])

    def _key_of(self, item: dict[str, Any]) -> dict[str, Any]:
        names = [k["AttributeName"] for k in self.stack.topology.table_key_schema]
        return {name: item[name] for name in names if name in item}

    def _writes(self, operation: str, params: dict[str, Any]) -> list[tuple[str, dict[str, Any], bool]]:
        """Each item a write touches: (table, key, whether it is only a ConditionCheck)."""
        if operation in ("PutItem",):
            return [(params["TableName"], self._key_of(params["Item"]), False)]
        if operation in ("UpdateItem", "DeleteItem"):
            return [(params["TableName"], params["Key"], False)]
        if operation == "BatchWriteItem":
            return [(table, self._key_of(request["PutRequest"]["Item"]) if "PutRequest" in request
                     else request["DeleteRequest"]["Key"], False)
                    for table, requests in params["RequestItems"].items() for request in requests]  # fmt: skip
        found = []
        for entry in params["TransactItems"]:
            ((kind, action),) = entry.items()
            key = self._key_of(action["Item"]) if kind == "Put" else action["Key"]
            found.append((action["TableName"], key, kind == "ConditionCheck"))
        return found

    def _sizes_before(self, operation: str, params: dict[str, Any]) -> dict[str, Any]:
        if operation not in WRITES:
            return {}
        return {_canonical(t, k): self._stored(t, k) for t, k, _ in self._writes(operation, params)}

    def _count_writes(self, call: Call, params: dict[str, Any], before: dict[str, Any], *, failed: bool) -> None:
        transactional = call.operation == "TransactWriteItems"
        for table, key, check_only in self._writes(call.operation, params):
            old = before.get(_canonical(table, key))
            new = old if failed else self._stored(table, key)
            size = max(item_size(old) if old else 0, item_size(new) if new else 0)
            units = write_units(size, transactional=transactional)
            call.wru += units
            if not failed and not check_only:
                call.written[(_plain(key.get("pk")), _plain(key.get("sk")))] = units
                call.wru += self._index_units(old, new)

    def _index_units(self, old: dict[str, Any] | None, new: dict[str, Any] | None) -> int:
        units = 0
        for key_schema, projection in self._indexes:
            names = [k["AttributeName"] for k in key_schema]
            kept = names + list(projection.get("NonKeyAttributes", []))

            def entry(item: dict[str, Any] | None, names: list[str] = names, kept: list[str] = kept) -> Any:
                if item is None or any(name not in item for name in names):
                    return None
                return [item.get(name) for name in kept]

            before, after = entry(old), entry(new)
            if (before is None and after is None) or before == after:
                continue
            key_changed = before is not None and after is not None and before[: len(names)] != after[: len(names)]
            units += 2 if key_changed else 1
        return units

    def _count_reads(self, call: Call, params: dict[str, Any], parsed: dict[str, Any]) -> None:
        operation = call.operation
        if operation == "GetItem":
            item = self._stored(params["TableName"], params["Key"]) if "Item" in parsed else None
            call.rru = read_units(item_size(item) if item else 0, consistent=bool(params.get("ConsistentRead")))
        elif operation == "BatchGetItem":
            for table, request in params["RequestItems"].items():
                for found in parsed.get("Responses", {}).get(table, []):
                    item = self._stored(table, self._key_of(found)) or found
                    call.rru += read_units(item_size(item), consistent=bool(request.get("ConsistentRead")))
        elif operation == "TransactGetItems":
            for found in parsed.get("Responses", []):
                item = found.get("Item")
                call.rru += read_units(item_size(item) if item else 0, transactional=True)
        elif operation in ("Query", "Scan"):
            sizes = 0
            keys = [k["AttributeName"] for k in self.stack.topology.table_key_schema]
            for found in parsed.get("Items", []):
                # a Query of the table reads whole items, whatever it projects; one of an index reads its entries
                full = None
                if "IndexName" not in params:
                    if any(name not in found for name in keys):
                        raise ValueError(f"a {operation} that projects away the table's key: its items' whole sizes "
                                         "cannot be looked up (project the key too)")  # fmt: skip
                    full = self._stored(params["TableName"], self._key_of(found))
                sizes += item_size(full or found)
            call.rru = read_units(sizes, consistent=bool(params.get("ConsistentRead")))


def _canonical(table: str, key: dict[str, Any]) -> str:
    return table + "|" + "|".join(f"{name}={value}" for name, value in sorted(key.items()))


def _plain(value: dict[str, Any] | None) -> str:
    return "" if value is None else str(next(iter(value.values())))


# ------------------------------------------------------------------------------------------ executions


def history(stack: LocalStack, execution_arn: str) -> list[dict[str, Any]]:
    """The execution's history, every page of it."""
    events: list[dict[str, Any]] = []
    request: dict[str, Any] = {"executionArn": execution_arn, "maxResults": 1000}
    while True:
        page = stack.sfn.get_execution_history(**request)
        events += page["events"]
        if not page.get("nextToken"):
            return events
        request["nextToken"] = page["nextToken"]


def entered(history: list[dict[str, Any]], state: str | None = None) -> int:
    """State transitions (what Standard workflows bill): StateEntered events, of ``state`` or of every state."""
    return sum(1 for event in history if event["type"].endswith("StateEntered")
               and (state is None or event.get("stateEnteredEventDetails", {}).get("name") == state))  # fmt: skip


def execution_arn(stack: LocalStack, run_id: str) -> str:
    return str(stack.state_machine_arn).replace(":stateMachine:", ":execution:") + ":" + run_id


def wait_for_execution(stack: LocalStack, run_id: str, timeout: float = 1800) -> list[dict[str, Any]]:
    """Wait until the run's execution has ended; its history."""
    arn = execution_arn(stack, run_id)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if stack.sfn.describe_execution(executionArn=arn)["status"] != "RUNNING":
                return history(stack, arn)
        except stack.sfn.exceptions.ExecutionDoesNotExist:
            pass
        time.sleep(0.02)
    raise TimeoutError(f"the execution of {run_id} did not end within {timeout:g} s")


@contextmanager
def quiet() -> Iterator[None]:
    """The functions print EMF metrics (single metrics even when disabled) and log: keep them off the report."""
    import contextlib
    import io
    import os

    saved = {name: os.environ.get(name) for name in ("POWERTOOLS_LOG_LEVEL", "POWERTOOLS_METRICS_DISABLED")}
    os.environ.update({"POWERTOOLS_LOG_LEVEL": "ERROR", "POWERTOOLS_METRICS_DISABLED": "true"})
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
