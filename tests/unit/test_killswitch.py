"""The index of active work (functions/agent/active.py) and the kill switch (functions/agent/killswitch.py), on the
in-memory store: which runs are listed, which writes list and unlist them, pages, and stopping a tenant's work through
the one cancel and the one interrupt."""

from __future__ import annotations

import itertools
from decimal import Decimal
from typing import Any

import pytest

from functions.agent import ledger
from functions.agent.active import (
    ACTIVE_SHARDS,
    BY_OPERATOR,
    BY_TENANT,
    ActiveEntry,
    Listing,
    listing,
    page_token,
    place,
    read_page,
    shard_of,
)
from functions.agent.errors import NotFoundError, RequestRejectedError
from functions.agent.killswitch import KillSwitch
from functions.agent.ledger import BudgetLimits, RunChange
from functions.agent.models import TERMINAL_STATUSES, Budget, Reservation, Run, RunKey, RunStatus, Turn, UserEvent
from functions.agent.sessions import Sessions, TurnInterrupts
from tests.fakes import core
from tests.fakes.clock import FixedClock
from tests.fakes.memory_store import InMemoryRunStore
from tests.fakes.services import RecordingQueue, RecordingWorkflow

DAY = "2026-11-21"
T0, T1 = f"{DAY}T12:00:00.000+00:00", f"{DAY}T12:05:00.000+00:00"


def run(run_id: str, tenant: str = "acme", status: RunStatus = RunStatus.QUEUED, **extra: Any) -> Run:
    return Run(run_id=run_id, tenant=tenant, status=status, input="x", model="claude-haiku-4-5", tools=[],
               budget=Budget(), created_at=T0, updated_at=T0, **extra)  # fmt: skip


def session(run_id: str, tenant: str = "acme", status: RunStatus = RunStatus.RUNNING) -> Run:
    turns = [Turn(first_step=0, started_at=T0), Turn(first_step=1, started_at=T1)]
    return run(run_id, tenant, status, session={"rev": 2}, turns=turns, completed_steps=1)


def held(step: int = 0) -> Reservation:
    return Reservation(step=step, amount_usd=Decimal("0.05"), day=DAY, model="claude-haiku-4-5")


class Interrupts:
    """The sessions' own writes an interrupt makes (the DynamoDB session store's: tests/functional)."""

    def __init__(self) -> None:
        self.stored: dict[str, UserEvent] = {}

    def save_interrupt(self, key: RunKey, event: UserEvent) -> bool:
        return self.stored.setdefault(f"{key}/{event.id}", event) is event

    def delete_event(self, key: RunKey, event_id: str) -> None:
        self.stored.pop(f"{key}/{event_id}", None)


def kill_switch(store: InMemoryRunStore, queue: RecordingQueue, workflow: RecordingWorkflow, **kw: Any) -> KillSwitch:
    lifecycle = core.lifecycle(store, queue)
    interrupts = TurnInterrupts(store=store, sessions=Interrupts(), lifecycle=lifecycle, workflow=workflow)  # type: ignore[arg-type]
    return KillSwitch(store=store, interrupts=interrupts, lifecycle=lifecycle, workflow=workflow, clock=FixedClock(),
                      **kw)  # fmt: skip


# ------------------------------------------------------------------------------------------- the rule


@pytest.mark.parametrize("status", list(RunStatus))
def test_a_run_is_listed_exactly_while_its_status_is_not_terminal(status: RunStatus) -> None:
    found = listing(run("run_a", status=status))
    assert (found is None) == (status in TERMINAL_STATUSES)
    if found is not None:
        assert found == Listing(shard_of("acme"), f"acme#{T0}#run_a") and found.partition.startswith("ACTIVE#")


def test_a_session_is_listed_from_its_current_turns_start_in_its_tenants_shard() -> None:
    assert place(session("sesn_a")).key == f"acme#{T1}#sesn_a"
    assert listing(session("sesn_a", status=RunStatus.IDLE)) is None
    # a tenant is always in the same shard (CRC-32, not Python's salted hash), and tenants spread over the shards
    assert shard_of("acme") == 14 and all(0 <= shard_of(f"t{n}") < ACTIVE_SHARDS for n in range(100))
    assert len({shard_of(f"tenant-{n}") for n in range(200)}) == ACTIVE_SHARDS


def test_every_plan_that_keeps_a_run_active_carries_its_listing_and_every_end_removes_it() -> None:
    active = run("run_a")
    reserve = ledger.reserve_plan(active, held(), BudgetLimits(), replacing=None, now=T0)
    assert reserve.run.listing == place(active) and not reserve.run.delists
    ending = ledger.end_plan(active, RunStatus.CANCELLED, error=None, release=False, now=T0)
    assert ending.run.delists and ending.run.listing is None
    release = ledger.release_plan(run("run_a", status=RunStatus.CANCELLED, reservation=held()))
    assert not release.run.delists and release.run.listing is None
    # a change that would keep a run active without saying where it is listed cannot be made
    with pytest.raises(ValueError, match="needs the run's listing"):
        RunChange(active.key, (), status=RunStatus.RUNNING)
    with pytest.raises(ValueError, match="it is not listed"):
        RunChange(active.key, (), status=RunStatus.FAILED, listing=place(active))


@pytest.mark.parametrize(
    "end",
    [
        lambda store, key: ledger.end_run(store, key, RunStatus.SUCCEEDED, now=T0),  # Finalize
        lambda store, key: core.lifecycle(store).fail(key, "States.Timeout", None),  # MarkFailed
        lambda store, key: core.lifecycle(store, RecordingQueue()).end(  # the workflow ended, the watchdog
            key, RunStatus.TIMED_OUT, None, call_in_flight=True),
        lambda store, key: core.lifecycle(store, RecordingQueue()).cancel(key, RecordingWorkflow()),  # a cancel
    ],
    ids=["finalize", "mark_failed", "workflow_ended_or_watchdog", "cancel"],
)  # fmt: skip
def test_whatever_ends_a_run_unlists_it_in_the_same_write(end: Any) -> None:
    store = InMemoryRunStore()
    store.create_run(run("run_a"))
    ledger.reserve(store, run("run_a"), held(), BudgetLimits(), now=T0)
    writes = store.writes
    end(store, RunKey("acme", "run_a"))
    assert store.list_active(shard_of("acme"), tenant="acme", limit=10, after=None) == []
    assert store.writes == writes + 1  # one write ended it and unlisted it


def test_a_page_token_is_good_only_for_the_list_it_came_from() -> None:
    token = page_token(shard_of("acme"), f"acme#{T0}#run_a")
    assert read_page(token, "acme") == (shard_of("acme"), f"acme#{T0}#run_a")
    assert read_page(token, None) == (shard_of("acme"), f"acme#{T0}#run_a")
    too_long = page_token(shard_of("acme"), f"acme#{T0}#run_{'a' * 3000}")  # no key this list writes
    for bad, tenant in ((token, "globex"), ("%%%", "acme"), (page_token(99, "a#b#c"), None), ("YWJj", None),
                        (too_long, "acme"), (too_long, None)):  # fmt: skip
        with pytest.raises(RequestRejectedError, match="not a next_page"):
            read_page(bad, tenant)


# ------------------------------------------------------------------------------------------- the kill switch


def test_everyones_active_work_is_listed_shard_by_shard_in_pages() -> None:
    store = InMemoryRunStore()
    tenants = [f"t{n}" for n in range(12)]
    for tenant, n in itertools.product(tenants, range(3)):
        store.create_run(run(f"run_{tenant}_{n}", tenant))
    store.create_run(run("run_done", "t0", status=RunStatus.SUCCEEDED))
    switch = kill_switch(store, RecordingQueue(), RecordingWorkflow())
    seen, page = [], None
    while True:
        entries, page = switch.list(None, limit=5, page=page)
        assert len(entries) <= 5
        seen += entries
        if page is None:
            break
    assert sorted(e.run_id for e in seen) == sorted(f"run_{t}_{n}" for t, n in itertools.product(tenants, range(3)))
    mine, more = switch.list("t3", limit=10)
    assert [e.run_id for e in mine] == ["run_t3_0", "run_t3_1", "run_t3_2"] and more is None
    assert mine[0].public() == {"id": "run_t3_0", "type": "run", "tenant": "t3", "status": "QUEUED", "since": T0,
                                "created_by": None}  # fmt: skip


def test_an_entry_an_earlier_release_left_on_an_ended_run_is_not_listed() -> None:
    store = InMemoryRunStore()
    for n in range(4):
        store.create_run(run(f"run_a{n}"))
    ended = run("run_old", status=RunStatus.SUCCEEDED)
    store.create_run(ended)
    store.listed[ended.key] = place(ended)  # as a version before the index's unlisting ended it
    switch = kill_switch(store, RecordingQueue(), RecordingWorkflow())
    first, page = switch.list("acme", limit=2)
    rest, last = switch.list("acme", limit=2, page=page)
    assert [e.run_id for e in first + rest] == ["run_a0", "run_a1", "run_a2", "run_a3"] and last is None
    assert [r.run_id for r in switch.stop_all("acme", reason=BY_TENANT, limit=10).results] == [
        "run_a0", "run_a1", "run_a2", "run_a3"]  # fmt: skip


def test_killing_a_tenant_stops_its_runs_and_sessions_and_leaves_another_tenants_running() -> None:
    # Given a tenant's runs (one holding a reservation for a call in flight) and a session in a turn, and another's
    store, queue, workflow = InMemoryRunStore(), RecordingQueue(), RecordingWorkflow()
    for n in range(3):
        store.create_run(run(f"run_a{n}"))
    ledger.reserve(store, run("run_a0"), held(), BudgetLimits(), now=T0)
    store.create_run(session("sesn_a"))
    store.create_run(run("run_b", "globex"))
    switch = kill_switch(store, queue, workflow)
    # When the tenant's kill switch is thrown
    report = switch.stop_all("acme", reason=BY_TENANT, limit=50)
    # Then each of its runs is cancelled and its session's turn interrupted, through the one cancel
    assert sorted((r.run_id, r.outcome) for r in report.results) == [
        ("run_a0", "stopped"), ("run_a1", "stopped"), ("run_a2", "stopped"), ("sesn_a", "stopped")]  # fmt: skip
    assert report.next_page is None and report.public()["stopped"] == 4
    for run_id in ("run_a0", "run_a1", "run_a2", "sesn_a"):
        stopped = store.get_run(RunKey("acme", run_id))
        assert stopped is not None and stopped.status is RunStatus.CANCELLED
        assert stopped.error is not None and stopped.error.message == BY_TENANT
    assert sorted(workflow.stopped) == ["run_a0", "run_a1", "run_a2", "sesn_a_t2"]
    # and the reservation of the call that may still be running is released later, not at once
    assert queue.releases == [(RunKey("acme", "run_a0"), 0)] and store.committed("acme", DAY)[0] == Decimal("0.05")
    # And the other tenant's run is untouched and still listed
    assert store.get_run(RunKey("globex", "run_b")).status is RunStatus.QUEUED  # type: ignore[union-attr]
    assert [e.run_id for e in switch.list(None)[0]] == ["run_b"]
    # And throwing it again stops nothing more
    assert switch.stop_all("acme", reason=BY_TENANT, limit=50).results == []


def test_a_kill_is_bounded_in_time_and_goes_on_from_where_it_stopped() -> None:
    store = InMemoryRunStore()
    for n in range(5):
        store.create_run(run(f"run_a{n}"))
    ticks = iter(range(100))
    switch = kill_switch(store, RecordingQueue(), RecordingWorkflow(), monotonic=lambda: float(next(ticks)))
    first = switch.stop_all(None, reason=BY_OPERATOR, limit=100, seconds=2.5)
    assert [r.run_id for r in first.results] == ["run_a0", "run_a1", "run_a2"] and first.next_page is not None
    rest = switch.stop_all(None, reason=BY_OPERATOR, limit=100, page=first.next_page)
    assert [r.run_id for r in rest.results] == ["run_a3", "run_a4"] and rest.next_page is None
    limited = kill_switch(store, RecordingQueue(), RecordingWorkflow()).stop_all(None, reason=BY_OPERATOR, limit=1)
    assert limited.results == [] and limited.next_page is None  # nothing left


def test_one_that_cannot_be_stopped_is_reported_and_the_others_are_stopped() -> None:
    store = InMemoryRunStore()
    for n in range(3):
        store.create_run(run(f"run_a{n}"))
    switch = kill_switch(store, RecordingQueue(), RecordingWorkflow())
    cancel = switch.lifecycle.cancel

    def flaky(key: RunKey, *args: Any, **kwargs: Any) -> Run:
        if key.run_id == "run_a1":
            raise RuntimeError("ThrottlingException: slow down (arn:aws:dynamodb:us-east-1:123456789012:table/x)")
        return cancel(key, *args, **kwargs)

    switch.lifecycle.cancel = flaky  # type: ignore[method-assign]
    report = switch.stop_all("acme", reason=BY_TENANT, limit=10)
    outcomes = {r.run_id: (r.outcome, r.detail) for r in report.results}
    assert outcomes["run_a0"] == ("stopped", None) and outcomes["run_a2"] == ("stopped", None)
    assert outcomes["run_a1"][0] == "failed" and "123456789012" not in str(outcomes["run_a1"][1])
    assert [e.run_id for e in switch.list("acme")[0]] == ["run_a1"]  # still listed: the next kill tries it again


def test_stopping_one_by_id() -> None:
    store = InMemoryRunStore()
    store.create_run(run("run_a"))
    store.create_run(session("sesn_idle", status=RunStatus.IDLE))
    switch = kill_switch(store, RecordingQueue(), RecordingWorkflow())
    assert switch.stop(RunKey("acme", "run_a"), reason=BY_OPERATOR).outcome == "stopped"
    assert switch.stop(RunKey("acme", "run_a"), reason=BY_OPERATOR).outcome == "already_ended"
    assert switch.stop(RunKey("acme", "sesn_idle"), reason=BY_OPERATOR).outcome == "already_ended"
    for missing in (RunKey("globex", "run_a"), RunKey("acme", "sesn_nope"), RunKey("acme", "run_nope")):
        with pytest.raises(NotFoundError):
            switch.stop(missing, reason=BY_OPERATOR)


def test_a_session_whose_interrupt_failed_after_it_was_stored_is_stopped_by_the_next_kill() -> None:
    # Given a session in a running turn, and a first kill whose cancel fails after the interrupt was stored
    store, workflow = InMemoryRunStore(), RecordingWorkflow()
    store.create_run(session("sesn_a"))
    switch = kill_switch(store, RecordingQueue(), workflow)
    cancel, calls = switch.lifecycle.cancel, []

    def throttled_once(key: RunKey, *args: Any, **kwargs: Any) -> Run:
        calls.append(key)
        if len(calls) == 1:
            raise RuntimeError("ThrottlingException: rate exceeded")
        return cancel(key, *args, **kwargs)

    switch.lifecycle.cancel = throttled_once  # type: ignore[method-assign]
    (first,) = switch.stop_all("acme", reason=BY_TENANT, limit=10).results
    assert first.outcome == "failed" and [e.run_id for e in switch.list("acme")[0]] == ["sesn_a"]
    # When the kill is thrown again
    (second,) = switch.stop_all("acme", reason=BY_TENANT, limit=10).results
    # Then the turn is stopped (not taken as stopped because its interrupt was already stored)
    assert second.outcome == "stopped"
    stopped = store.get_run(RunKey("acme", "sesn_a"))
    assert stopped is not None and stopped.status is RunStatus.CANCELLED and workflow.stopped == ["sesn_a_t2"]
    assert switch.list("acme")[0] == []


def test_an_interrupt_that_another_one_beat_to_the_cancel_keeps_the_turns_interrupt() -> None:
    # Given an interrupt that stored the turn's interrupt, and another request that cancelled the turn before it did
    store, queue, workflow = InMemoryRunStore(), RecordingQueue(), RecordingWorkflow()
    store.create_run(session("sesn_a"))
    lifecycle, events = core.lifecycle(store, queue), Interrupts()
    interrupts = TurnInterrupts(store=store, sessions=events, lifecycle=lifecycle, workflow=workflow)  # type: ignore[arg-type]
    cancel = lifecycle.cancel

    def beaten(key: RunKey, *args: Any, **kwargs: Any) -> Run:
        cancel(key, *args, **kwargs)  # the other request's cancel lands first
        return cancel(key, *args, **kwargs)  # this one's finds the turn ended: ConflictError

    lifecycle.cancel = beaten  # type: ignore[method-assign]
    # When it goes on to cancel
    event, stopped_here = interrupts.interrupt(store.load_history(RunKey("acme", "sesn_a")), T1)
    # Then it reports the turn stopped by the other, and the turn's interrupt event stays (the history shows it)
    assert not stopped_here and event.type == "user.interrupt"
    assert list(events.stored) == [f"{RunKey('acme', 'sesn_a')}/{event.id}"]


class LaggingIndex(InMemoryRunStore):
    """The index as DynamoDB's eventually consistent one may read a moment after a turn idled: still listed, with the
    status it had (the runs themselves are read consistently)."""

    def __init__(self) -> None:
        super().__init__()
        self.lagging: dict[RunKey, Listing] = {}

    def list_active(self, shard: int, *, tenant: str | None, limit: int, after: str | None) -> list[Any]:
        live = super().list_active(shard, tenant=tenant, limit=limit, after=after)
        stale = [ActiveEntry.parse(listed.key, RunStatus.RUNNING, 2) for listed in self.lagging.values()]
        return sorted([*live, *stale], key=lambda entry: entry.key)[:limit]


def test_sessions_listed_as_running_are_read_first_and_one_that_idled_meanwhile_is_left_out() -> None:
    store, queue, workflow = LaggingIndex(), RecordingQueue(), RecordingWorkflow()
    for run_id in ("sesn_a", "sesn_b"):
        store.create_run(session(run_id))
    ledger.end_run(store, RunKey("acme", "sesn_a"), RunStatus.SUCCEEDED, now=T1)  # sesn_a's turn idles ...
    store.lagging[RunKey("acme", "sesn_a")] = place(session("sesn_a"))  # ... and the index has not caught up
    lifecycle = core.lifecycle(store, queue)
    sessions = Sessions(store=store, sessions=Interrupts(), agents=None, queue=queue, workflow=workflow,  # type: ignore[arg-type]
                        lifecycle=lifecycle, clock=FixedClock(), new_id=lambda: "sesn_x", builtins=[])  # fmt: skip
    views, _ = sessions.running_page("acme", limit=10, page=None, agent_id=None)
    assert [view.public()["id"] for view in views] == ["sesn_b"]
