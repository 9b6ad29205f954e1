"""Active work counted (functions/agent/census.py) on the in-memory store: every shard, page by page, runs and
sessions by status, tenants ranked, entries of ended runs left out; and the doctor's row and the gauges' series."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from functions.agent.active import ACTIVE_SHARDS, ActiveEntry, place, shard_of
from functions.agent.census import COUNT_PAGE, Census, count_active
from functions.agent.doctor import Status, active_finding
from functions.agent.models import RunStatus
from functions.agent.ports import ActiveRuns
from tests.fakes.memory_store import InMemoryRunStore
from tests.unit.test_killswitch import run, session


class Counting(ActiveRuns):
    """The in-memory store's index, with every call recorded (shard, after)."""

    def __init__(self, store: InMemoryRunStore) -> None:
        self.store = store
        self.calls: list[tuple[int, str | None]] = []

    def list_active(self, shard: int, *, tenant: str | None, limit: int, after: str | None) -> list[ActiveEntry]:
        assert tenant is None  # everyone's: one range of each shard
        self.calls.append((shard, after))
        return self.store.list_active(shard, tenant=tenant, limit=limit, after=after)


def populated() -> InMemoryRunStore:
    """12 tenants' queued and running runs, 3 sessions in a turn, and ended work (unlisted, or left listed)."""
    store = InMemoryRunStore()
    for n, tenant in itertools.product(range(3), [f"t{i}" for i in range(12)]):
        store.create_run(run(f"run_{tenant}_{n}", tenant, status=RunStatus.RUNNING if n else RunStatus.QUEUED))
    store.create_run(run("run_big", "t0"))
    for name in ("sesn_a", "sesn_b", "sesn_c"):
        store.create_run(session(name, "t1"))
    store.create_run(run("run_done", "t2", status=RunStatus.SUCCEEDED))  # never listed
    left = run("run_left", "gone", status=RunStatus.CANCELLED)
    store.create_run(left)
    store.listed[left.key] = place(left)  # as a release before the index's unlisting ended it
    return store


def test_everyones_active_work_is_counted_by_kind_and_status_with_each_tenants_share() -> None:
    census = count_active(Counting(populated()))

    assert census.counts == {("run", RunStatus.QUEUED): 13, ("run", RunStatus.RUNNING): 24,
                             ("session", RunStatus.RUNNING): 3}  # fmt: skip
    assert (census.total, census.of_kind("run"), census.of_kind("session"), census.ended) == (40, 37, 3, 1)
    assert census.top_tenants(3) == [("t1", 6), ("t0", 4), ("t10", 3)]  # most first, ties by name
    assert sum(census.tenants.values()) == census.total and "gone" not in census.tenants
    assert census.summary() == ("37 runs (13 queued, 24 running), 3 sessions (3 running); "
                                "most: t1 6, t0 4, t10 3, t11 3, t2 3")  # fmt: skip


@pytest.mark.parametrize("page", [1, 2, 3, COUNT_PAGE])
def test_every_shard_is_read_page_by_page_each_page_after_the_last_key(page: int) -> None:
    store = populated()
    index = Counting(store)

    census = count_active(index, page=page)

    # the same count, whatever the page
    whole = count_active(Counting(store))
    assert (census.counts, census.tenants, census.ended) == (whole.counts, whole.tenants, whole.ended)
    # each shard from its start, then after the last key it was given, until a page comes back short
    listed: dict[int, list[str]] = {}
    for listing in store.listed.values():
        listed.setdefault(listing.shard, []).append(listing.key)
    expected = []
    for shard in range(ACTIVE_SHARDS):
        keys = sorted(listed.get(shard, []))
        expected += [(shard, None), *((shard, keys[n - 1]) for n in range(page, len(keys) + 1, page))]
    assert index.calls == expected and census.reads == len(expected)
    assert len({shard for shard, _ in index.calls}) == ACTIVE_SHARDS


def test_an_empty_index_is_sixteen_reads_and_zeros() -> None:
    census = count_active(Counting(InMemoryRunStore()))

    assert (census.total, census.reads, census.summary()) == (0, ACTIVE_SHARDS, "no run or session is active")
    assert census.gauges() == [("run", RunStatus.QUEUED, 0), ("run", RunStatus.RUNNING, 0),
                               ("session", RunStatus.QUEUED, 0), ("session", RunStatus.RUNNING, 0)]  # fmt: skip
    assert census.public() == {
        "runs": 0, "sessions": 0, "top_tenants": [], "reads": ACTIVE_SHARDS, "ended_but_listed": 0,
        "by_status": {"run:QUEUED": 0, "run:RUNNING": 0, "session:QUEUED": 0, "session:RUNNING": 0},
    }  # fmt: skip


def test_the_gauges_are_each_kind_queued_and_running_and_any_other_status_counted() -> None:
    census = Census({("run", RunStatus.RUNNING): 2, ("session", RunStatus.WAITING_APPROVAL): 1}, {"acme": 3})

    assert census.gauges() == [
        ("run", RunStatus.QUEUED, 0), ("run", RunStatus.RUNNING, 2), ("session", RunStatus.QUEUED, 0),
        ("session", RunStatus.RUNNING, 0), ("session", RunStatus.WAITING_APPROVAL, 1),
    ]  # fmt: skip
    assert census.summary() == "2 runs (2 running), 1 session (1 waiting_approval); most: acme 3"


def test_a_store_that_fails_fails_the_count() -> None:
    class Throttled(ActiveRuns):
        def list_active(self, shard: int, **_: Any) -> list[ActiveEntry]:  # type: ignore[override]
            if shard == 5:
                raise RuntimeError("ProvisionedThroughputExceededException")
            return []

    with pytest.raises(RuntimeError, match="ProvisionedThroughputExceeded"):
        count_active(Throttled())


def test_the_doctors_row_is_the_count_for_information() -> None:
    store = InMemoryRunStore()
    store.create_run(run("run_a", "acme"))
    store.create_run(session("sesn_a", "globex"))
    assert shard_of("acme") != shard_of("globex")

    finding = active_finding(count_active(store))

    assert finding.check == "active" and finding.status is Status.OK and not finding.next_steps
    assert finding.detail == "1 run (1 queued), 1 session (1 running); most: acme 1, globex 1"
