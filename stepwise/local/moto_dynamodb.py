"""Make moto's DynamoDB behave as DynamoDB does under concurrency, at a cost that does not grow with the table.

The local stack (and every test fixture that starts it) installs these patches with :func:`install`; nothing else
does. They change how moto keeps its promises, never what it answers:

* **One request at a time.** DynamoDB applies each request atomically; moto's backend is not thread-safe and the
  local stack runs its functions on many threads: a lock around moto's request handling.
* **Transactions snapshot the items they touch, not the tables.** moto's ``transact_write_items`` deep-copies every
  table the transaction names (for rollback) before applying anything: ~4.6 ms for a 7-item transaction on an empty
  table, ~130 ms at 6,000 items, so a long run (each step a transaction) costs O(n^2) and each copy churns the heap.
  Here the table copies are skipped and only the items the transaction names are copied (at most 100, each at most
  400 KB); when the transaction fails for any reason, those items are put back as they were, so it stays
  all-or-nothing (tests/functional/test_local_moto.py).
* **A Query of the table reads the items its key condition names, not the table.** moto's ``Table.query``
  without an index walks and sorts every item of the table to find one partition key's, then computes the size of
  every item of the partition (the 1 MB page limit) before testing its sort key: a long run's partition (its steps
  and tool results, ~100 KB each) made every Query of it cost O(n). Here it is given that key's items whose sort
  key meets the condition only (tested by moto's own comparison), which DynamoDB reads. Queries of an index still
  walk the table (as moto keeps no index).
* **A number ADDed to zero stays a number.** moto's ADD stores a sum that comes to zero as e.g. ``0E-8`` and then
  fails to add to it (``int('0E-8')``): a counter whose reservations were all freed. The sum is stored in fixed
  notation, as DynamoDB stores numbers.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

_REQUEST = threading.RLock()
_STATE = threading.local()  # .transaction: inside our transact_write_items; .partition: the query's partition


@dataclass
class _Snapshot:
    """An item as it was before a transaction (``item`` None: it did not exist)."""

    table: Any  # moto.dynamodb.models.table.Table
    hash_key: Any  # DynamoType
    range_key: Any  # DynamoType | None
    item: Any  # Item | None (a deep copy)
    partition_existed: bool

    def restore(self) -> None:
        items = self.table.items
        if self.range_key is None:
            if self.item is None:
                items.pop(self.hash_key, None)
            else:
                items[self.hash_key] = self.item
            return
        partition = items.get(self.hash_key)
        if self.item is not None:
            items.setdefault(self.hash_key, {})[self.range_key] = self.item
        elif partition is not None:
            partition.pop(self.range_key, None)
            if not partition and not self.partition_existed:
                del items[self.hash_key]


def _meeting(items: Any, comparison: str, values: list[Any]) -> list[Any]:
    """The items whose sort key meets the condition: ``DynamoType.compare``'s own test (its comparison function on
    the keys' cast values), with a string key's cast value (itself) read directly, as ``compare`` spends most of its
    time finding a value's type."""
    from moto.dynamodb.comparisons import get_comparison_func

    meets = get_comparison_func(comparison)
    bounds = [value.cast_value for value in values]
    return [item for item in items if meets(_cast(item.range_key), *bounds)]


def _cast(key: Any) -> Any:
    return key.value if key.type == "S" else key.cast_value


def _key_of(table: Any, op_type: str, op: dict[str, Any]) -> tuple[Any, Any] | None:
    """The (hash, range) key a transaction item names in ``table``, or None where it names none moto could write
    (a malformed item: moto rejects it without writing)."""
    from moto.dynamodb.models.dynamo_type import DynamoType

    attributes = op.get("Item") if op_type == "Put" else op.get("Key")
    if not isinstance(attributes, dict) or table.hash_key_attr not in attributes:
        return None
    if table.range_key_attr is not None and table.range_key_attr not in attributes:
        return None
    try:
        hash_key = DynamoType(attributes[table.hash_key_attr])
        range_key = DynamoType(attributes[table.range_key_attr]) if table.range_key_attr is not None else None
        hash(hash_key), hash(range_key)
    except Exception:  # an attribute value moto cannot read: it rejects the item before writing anything
        return None
    return hash_key, range_key


def snapshot(backend: Any, transact_items: list[dict[str, Any]]) -> list[_Snapshot]:
    """Deep copies of the items ``transact_items`` name (those that exist), and which do not exist yet."""
    snapshots = []
    for entry in transact_items if isinstance(transact_items, list) else []:
        for op_type, op in entry.items() if isinstance(entry, dict) else ():
            table = backend.tables.get(op.get("TableName")) if isinstance(op, dict) else None
            key = _key_of(table, op_type, op) if table is not None else None
            if table is None or key is None:
                continue
            hash_key, range_key = key
            if range_key is None:
                current = table.items.get(hash_key)
                existed = current is not None
            else:
                partition = table.items.get(hash_key)
                existed = partition is not None
                current = partition.get(range_key) if partition is not None else None
            snapshots.append(_Snapshot(table, hash_key, range_key, copy.deepcopy(current), existed))
    return snapshots


class _TablesNotCopied:
    """Stands in for the ``copy`` module in moto.dynamodb.models: inside a transaction this module runs, the deep
    copy of a whole table moto takes for rollback is the table itself (the items are snapshotted instead, and
    moto's "rollback" then puts the same table back); every other copy is a real one."""

    @staticmethod
    def deepcopy(value: Any, memo: Any = None) -> Any:
        from moto.dynamodb.models.table import Table

        if getattr(_STATE, "transaction", False) and isinstance(value, Table):
            return value
        return copy.deepcopy(value, memo)

    def __getattr__(self, name: str) -> Any:
        return getattr(copy, name)


@contextmanager
def _flag(name: str, value: Any) -> Iterator[None]:
    setattr(_STATE, name, value)
    try:
        yield
    finally:
        setattr(_STATE, name, None)


def install() -> None:
    """Patch moto's DynamoDB in this process (idempotent). See the module's docstring."""
    from moto.dynamodb import models as dynamodb_models
    from moto.dynamodb.models.dynamo_type import DynamoType
    from moto.dynamodb.models.table import Table
    from moto.dynamodb.responses import DynamoHandler

    if getattr(DynamoHandler.call_action, "_stepwise", False):
        return
    handle = DynamoHandler.call_action

    def call_action(self: Any) -> Any:
        with _REQUEST:
            return handle(self)

    backend = dynamodb_models.DynamoDBBackend
    transact = backend.transact_write_items

    def transact_write_items(self: Any, transact_items: list[dict[str, Any]]) -> None:
        with _REQUEST:
            snapshots = snapshot(self, transact_items)
            try:
                with _flag("transaction", True):
                    transact(self, transact_items)
            except BaseException:
                for taken in reversed(snapshots):
                    taken.restore()
                raise

    query = Table.query
    all_items = Table.all_items

    def table_query(self: Any, hash_key: Any, *args: Any, **kwargs: Any) -> Any:
        index_name = args[6] if len(args) > 6 else kwargs.get("index_name")
        if index_name or hash_key is None or self.range_key_attr is None:
            return query(self, hash_key, *args, **kwargs)
        comparison = args[0] if args else kwargs.get("range_comparison")
        values = args[1] if len(args) > 1 else kwargs.get("range_objs")
        with _flag("partition", (self, hash_key, comparison, values)):
            return query(self, hash_key, *args, **kwargs)

    def partition_items(self: Any) -> Any:
        reading = getattr(_STATE, "partition", None)
        if reading is None or reading[0] is not self:
            return all_items(self)
        _, hash_key, comparison, values = reading
        items = self.items.get(hash_key, {}).values()
        if comparison:  # the key condition on the sort key, as moto's query applies it to each item it is given
            items = _meeting(items, comparison, values)
        return sorted(items, key=lambda item: item.range_key)

    add = DynamoType.__add__

    def fixed_add(self: Any, other: Any) -> Any:
        total = add(self, other)
        if total.is_number() and "E" in total.value.upper():
            total.value = format(Decimal(total.value), "f")
        return total

    call_action._stepwise = True  # type: ignore[attr-defined]
    DynamoHandler.call_action = call_action  # type: ignore[method-assign]
    backend.transact_write_items = transact_write_items  # type: ignore[method-assign]
    setattr(dynamodb_models, "copy", _TablesNotCopied())  # noqa: B010 - the module global moto's transaction uses
    Table.query = table_query  # type: ignore[method-assign]
    Table.all_items = partition_items  # type: ignore[method-assign]
    DynamoType.__add__ = fixed_add  # type: ignore[method-assign]
