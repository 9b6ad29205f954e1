"""Active work counted: the index of active work (functions/agent/active.py) read whole, shard by shard, for the
``ActiveRuns`` gauge (functions/handlers/gauges.py, every minute) and `stepwise doctor`'s ``active`` row. Pure.

Reading it is ``ACTIVE_SHARDS`` Queries (more only for a shard holding more than ``COUNT_PAGE`` entries), never a
Scan. A Query is billed by the size of the entries it reads whatever it returns (``Select=COUNT`` reads them all the
same), so the count reads the entries the listing reads: their keys give each tenant's count at no extra cost, for
the log, never as a metric dimension (tenants are unbounded). The index is eventually consistent: a run that ended
a moment ago may still be counted, for a moment.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from functions.agent.active import ACTIVE_SHARDS
from functions.agent.models import RunStatus

if TYPE_CHECKING:
    from functions.agent.ports import ActiveRuns

COUNT_PAGE = 1000  # entries asked of each call (about 190 bytes each: well under a Query's 1 MB page)
KINDS = ("run", "session")  # ActiveEntry.kind
# what active work is: a run or turn waiting to start, or started. Published every minute, 0 included (a gauge with
# gaps cannot be read); another status that is not terminal (WAITING_APPROVAL, which no code writes) only when counted
REPORTED = (RunStatus.QUEUED, RunStatus.RUNNING)
TOP_TENANTS = 5


@dataclass(frozen=True)
class Census:
    """How many runs and sessions are active, by kind and status and by tenant."""

    counts: Mapping[tuple[str, RunStatus], int]  # (kind, status) -> entries
    tenants: Mapping[str, int]
    reads: int = 0  # calls of ActiveRuns.list_active (each at least one Query)
    # entries an earlier release left listed on ended runs (functions/agent/active.py): not active, not counted
    ended: int = 0

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def of_kind(self, kind: str) -> int:
        return sum(n for (k, _), n in self.counts.items() if k == kind)

    def gauges(self) -> list[tuple[str, RunStatus, int]]:
        """Every (kind, status, count) to publish: each kind in each ``REPORTED`` status, 0 included, and any other
        (kind, status) counted."""
        wanted = {(kind, status) for kind in KINDS for status in REPORTED} | set(self.counts)
        return [(kind, status, self.counts.get((kind, status), 0)) for kind, status in sorted(wanted)]

    def top_tenants(self, n: int = TOP_TENANTS) -> list[tuple[str, int]]:
        """The ``n`` tenants with the most active work, most first (ties by name)."""
        return sorted(self.tenants.items(), key=lambda item: (-item[1], item[0]))[:n]

    def summary(self) -> str:
        """One line: ``3 runs (1 queued, 2 running), 1 session (1 running); most: acme 3, globex 1``."""
        if not self.total:
            return "no run or session is active"
        parts = []
        for kind in KINDS:
            count = self.of_kind(kind)
            by_status = ", ".join(f"{n} {status.value.lower()}" for (k, status), n in sorted(self.counts.items())
                                  if k == kind and n)  # fmt: skip
            parts.append(f"{count} {kind}{'' if count == 1 else 's'}" + (f" ({by_status})" if count else ""))
        most = ", ".join(f"{tenant} {n}" for tenant, n in self.top_tenants())
        return f"{', '.join(parts)}; most: {most}"

    def public(self) -> dict[str, Any]:
        return {
            "runs": self.of_kind("run"), "sessions": self.of_kind("session"),
            "by_status": {f"{kind}:{status.value}": n for kind, status, n in self.gauges()},
            "top_tenants": [{"tenant": tenant, "active": n} for tenant, n in self.top_tenants()],
            "reads": self.reads, "ended_but_listed": self.ended,
        }  # fmt: skip


def count_active(store: ActiveRuns, *, page: int = COUNT_PAGE) -> Census:
    """Count the index of active work: every shard, page by page (an entry of an ended run is left out, as the
    listing leaves it out).

    Raises:
        whatever ``store.list_active`` raises (the store's errors): a count is whole or not made.
    """
    counts: Counter[tuple[str, RunStatus]] = Counter()
    tenants: Counter[str] = Counter()
    reads = ended = 0
    for shard in range(ACTIVE_SHARDS):
        after: str | None = None
        while True:
            batch = store.list_active(shard, tenant=None, limit=page, after=after)
            reads += 1
            for entry in batch:
                if entry.status.terminal:
                    ended += 1
                    continue
                counts[entry.kind, entry.status] += 1
                tenants[entry.tenant] += 1
            if len(batch) < page:
                break
            after = batch[-1].key
    return Census(dict(counts), dict(tenants), reads, ended)
