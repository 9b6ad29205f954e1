"""The step function's RunStore: the shared table read as little per step as is safe.

- A run's history is read incrementally (functions/adapters/dynamodb_history.py).
- The committed daily spend (what ``ledger.budget_percent`` reads for routing's downgrades and the budget metrics) is
  read at most once per ``spend_fresh_seconds`` per tenant and day. Nothing the hard budgets rely on reads it: every
  lease is a conditional write on the counters themselves. A refused reservation explains itself with a fresh
  read (a rejected counter drops what was kept).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from functions.adapters.dynamodb_history import HistoryCache
from functions.adapters.dynamodb_store import DynamoDBRunStore
from functions.agent.ledger import CounterChange, Plan, Rejected

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
else:
    DynamoDBClient = Any

SPEND_FRESH_SECONDS = 5.0
MAX_KEPT = 10_000  # tenant-days kept; then all are dropped (as tenants.LimitsCache does)


class StepRunStore(DynamoDBRunStore):
    def __init__(
        self,
        table_name: str,
        client: DynamoDBClient,
        *,
        history: HistoryCache | None = None,
        spend_fresh_seconds: float = SPEND_FRESH_SECONDS,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(table_name, client, history=history)
        self.spend_fresh_seconds, self.monotonic = spend_fresh_seconds, monotonic
        self._committed: dict[tuple[str, str], tuple[float, tuple[Decimal, Decimal]]] = {}
        self._lock = threading.Lock()

    def committed(self, tenant: str, day: str) -> tuple[Decimal, Decimal]:
        now = self.monotonic()
        with self._lock:
            kept = self._committed.get((tenant, day))
        if kept is not None and now < kept[0]:
            return kept[1]
        found = super().committed(tenant, day)
        with self._lock:
            if len(self._committed) >= MAX_KEPT:
                self._committed.clear()
            self._committed[(tenant, day)] = (now + self.spend_fresh_seconds, found)
        return found

    def apply(self, plan: Plan) -> Rejected | None:
        rejected = super().apply(plan)
        if isinstance(rejected, CounterChange):  # a budget refused: its explanation reads the spend afresh
            with self._lock:
                self._committed.pop((plan.run.key.tenant, rejected.counter.day), None)
        return rejected
