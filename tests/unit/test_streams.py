"""Live events (functions/agent/streams.py): a stream's start, its frames, its end, on a fake clock; and the tickets
that open one."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest

from functions.agent.errors import NotFoundError, RequestRejectedError, TicketError
from functions.agent.models import (
    Budget,
    Run,
    RunError,
    RunKey,
    RunStatus,
    StepDecision,
    StepRecord,
    ToolOutcome,
    Usage,
)
from functions.agent.sessions import check_target, event_id, run_events
from functions.agent.streams import (
    BEFORE_ALL,
    PING,
    TICKET_SECONDS,
    Follower,
    Frame,
    StreamLimits,
    Tickets,
    check_cursor,
    session_idle,
    ticket_digest,
)
from tests.fakes.clock import FixedClock
from tests.fakes.memory_store import InMemoryRunStore
from tests.fakes.tickets import MemoryTickets

LIMITS = StreamLimits(poll_seconds=1.0, ping_seconds=15.0, max_seconds=840.0)


class FakeTime:
    """A monotonic clock that moves only when the stream sleeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def event(turn: int, section: int, a: int = 0, kind: str = "agent.message") -> dict[str, Any]:
    return {"id": event_id(turn, section, a), "type": kind, "processed_at": "2026-12-01T00:00:00.000+00:00"}


class Log:
    """A session's events as a stream reads them: each read sees what has happened by then."""

    def __init__(self, *events: dict[str, Any]) -> None:
        self.events = list(events)
        self.reads = 0
        self.on_read: Callable[[int], None] = lambda n: None

    def read(self) -> list[dict[str, Any]]:
        self.reads += 1
        self.on_read(self.reads)
        return sorted(self.events, key=lambda e: str(e["id"]))


def follower(log: Log, clock: FakeTime, *, after: str | None = None, limits: StreamLimits = LIMITS,
             last: Callable[[dict[str, Any]], bool] = lambda e: False,
             rests: Callable[[list[dict[str, Any]]], bool] = lambda events: False) -> Follower:  # fmt: skip
    return Follower(log.read, after=after, limits=limits, monotonic=clock.monotonic, sleep=clock.sleep, last=last,
                    rests=rests)  # fmt: skip


def ids(frames: list[Frame]) -> list[str | None]:
    return [frame.event["id"] if frame.event else None for frame in frames]


def test_a_stream_starts_when_it_opens_and_sends_each_new_event_once_in_order() -> None:
    # Given a session with two events already, and two more arriving on the 3rd and 5th reads
    clock, log = FakeTime(), Log(event(1, 0), event(1, 1))
    later = [event(1, 3, 0, "span.model_request_start"), event(1, 6, 0, "session.status_idle")]
    log.on_read = lambda n: log.events.append(later.pop(0)) if n in (3, 5) and later else None
    # When a client opens the stream without Last-Event-ID
    stream = follower(log, clock, limits=StreamLimits(1.0, 15.0, 6.0))
    assert stream.cursor == event_id(1, 1)  # fixed at the moment it opened (the open's read is the 1st)
    frames = list(stream.frames())
    # Then only what happened after it opened is sent, once, in order; then it ends at its time limit
    assert ids(frames) == [event_id(1, 3), event_id(1, 6)]
    assert stream.sent == 2 and clock.now == pytest.approx(6.0)
    assert all(seconds <= 1.0 for seconds in clock.sleeps)  # it polls, it does not wait past its end


def test_last_event_id_resumes_after_that_event_and_the_first_id_replays_everything() -> None:
    log = Log(event(1, 0), event(1, 1), event(1, 3), event(1, 6, 0, "session.status_idle"))
    short = StreamLimits(1.0, 15.0, 0.5)
    assert ids(list(follower(log, FakeTime(), after=event_id(1, 1), limits=short).frames())) == [
        event_id(1, 3), event_id(1, 6)]  # fmt: skip
    assert len(list(follower(log, FakeTime(), after=BEFORE_ALL, limits=short).frames())) == 4


def test_an_empty_session_starts_before_every_event() -> None:
    log = Log()
    stream = follower(log, FakeTime(), limits=StreamLimits(1.0, 15.0, 2.0))
    log.on_read = lambda n: log.events.append(event(1, 0)) if n == 2 else None
    assert stream.cursor == BEFORE_ALL and ids(list(stream.frames())) == [event_id(1, 0)]


def test_a_ping_after_each_quiet_spell_and_none_while_events_flow() -> None:
    # Given a stream that pings after 3 s of silence and lasts 10 s, with one event arriving on the 6th read
    clock, log = FakeTime(), Log()
    log.on_read = lambda n: log.events.append(event(1, 0)) if n == 6 else None
    frames = list(follower(log, clock, limits=StreamLimits(1.0, 3.0, 10.0)).frames())
    # Then: silence (a ping at 3 s), the event at 5 s, silence again (a ping at 8 s, 3 s after it), until 10 s
    assert frames == [PING, Frame(event(1, 0)), PING]
    assert clock.now == pytest.approx(10.0)


def test_pings_keep_their_interval_when_it_is_shorter_than_the_poll() -> None:
    clock = FakeTime()
    frames = list(follower(Log(), clock, limits=StreamLimits(1.0, 0.3, 1.0)).frames())
    assert frames == [PING, PING, PING] and clock.now == pytest.approx(1.0)


def test_a_run_stream_ends_with_its_idle_and_one_that_had_ended_sends_nothing() -> None:
    idle = event(1, 6, 0, "session.status_idle")
    is_idle: Callable[[dict[str, Any]], bool] = lambda e: e["type"] == "session.status_idle"  # noqa: E731
    clock, log = FakeTime(), Log(event(1, 1))
    log.on_read = lambda n: log.events.append(idle) if n == 2 else None
    assert ids(list(follower(log, clock, last=is_idle).frames())) == [idle["id"]]
    assert clock.now == pytest.approx(1.0)  # not held open until its time limit
    ended = follower(Log(event(1, 1), idle), FakeTime(), last=is_idle)
    assert list(ended.frames()) == []


def test_a_sessions_stream_ends_once_the_session_has_rested_idle_with_nothing_sent() -> None:
    # Given a stream opened on an idle session (pings every 15 s, an idle end after 60 s, a 840 s limit), whose
    # next turn starts on the 10th read (10 s) and idles on the 30th (30 s)
    clock, log = FakeTime(), Log(event(1, 0, 0, "user.message"), event(1, 1, 0, "session.status_running"),
                                 event(1, 6, 0, "session.status_idle"))  # fmt: skip
    turn = {10: [event(2, 0, 0, "user.message"), event(2, 1, 0, "session.status_running")],
            30: [event(2, 3, 0, "span.model_request_start"), event(2, 6, 0, "session.status_idle")]}  # fmt: skip
    log.on_read = lambda n: log.events.extend(turn.pop(n, []))
    stream = follower(log, clock, rests=session_idle)
    frames = list(stream.frames())
    # Then it sent the turn, pinged while it was quiet, and ended 60 s after the turn's idle: not at its 840 s
    assert [f.event["type"] for f in frames if f.event] == [
        "user.message", "session.status_running", "span.model_request_start", "session.status_idle"]  # fmt: skip
    assert stream.end == "idle" and clock.now == pytest.approx(29.0 + 60.0)
    assert frames.count(PING) == 4  # 15 s into the turn (nothing new), then 15, 30, 45 s after its idle


def test_a_quiet_running_session_or_a_run_stays_followed_until_the_limit() -> None:
    # a turn that runs quietly (a long tool call) is not at rest; a run's stream ends with its idle only
    running = Log(event(1, 0, 0, "user.message"), event(1, 1, 0, "session.status_running"))
    clock = FakeTime()
    stream = follower(running, clock, rests=session_idle, limits=StreamLimits(1.0, 15.0, 300.0, 60.0))
    assert list(stream.frames()).count(PING) == 19 and stream.end == "limit" and clock.now == pytest.approx(300.0)
    idle_run = Log(event(1, 1, 0, "session.status_running"))
    stream = follower(idle_run, FakeTime(), limits=StreamLimits(1.0, 15.0, 120.0, 60.0))
    list(stream.frames())
    assert stream.end == "limit"


@pytest.mark.parametrize(
    ("kinds", "idle"),
    [
        ([], True),  # no turn yet
        (["user.message", "session.status_running"], False),
        (["user.message", "session.status_running", "session.status_idle"], True),
        # a confirmation sent while it waits for another: still idle (no running comes with it)
        (["session.status_running", "agent.tool_use", "session.status_idle", "user.tool_confirmation"], True),
        (["session.status_idle", "user.message", "session.status_running"], False),
    ],
)
def test_a_session_rests_when_its_latest_status_is_idle(kinds: list[str], idle: bool) -> None:
    assert session_idle([{"id": f"sevt_{n}", "type": kind} for n, kind in enumerate(kinds)]) is idle


def test_a_session_deleted_while_followed_raises_not_found() -> None:
    log = Log(event(1, 0))

    def gone(n: int) -> None:
        if n == 3:
            raise NotFoundError("session sesn_1 not found")

    log.on_read = gone
    with pytest.raises(NotFoundError):
        list(follower(log, FakeTime()).frames())


@pytest.mark.parametrize("value", ["sevt_0001300000500", BEFORE_ALL])
def test_a_last_event_id_is_an_event_id(value: str) -> None:
    assert check_cursor(value) == value and check_cursor(None) is None


@pytest.mark.parametrize("value", ["", "sevt_1", "42", "sevt_0001300000500x", "run_abc"])
def test_anything_else_is_refused_naming_it(value: str) -> None:
    with pytest.raises(RequestRejectedError, match="Last-Event-ID"):
        check_cursor(value)


def test_a_ticket_opens_one_stream_of_its_session_within_its_time() -> None:
    # Given a ticket issued for one tenant's session
    clock, store = FixedClock(tick=timedelta(0)), MemoryTickets()
    tickets = Tickets(store=store, clock=clock)
    ticket = tickets.issue(RunKey("acme", "sesn_1"))
    # Then only its digest is stored, and it opens that session's stream once
    assert list(store.tickets) == [ticket_digest(ticket)] and ticket not in str(store.tickets)
    assert tickets.redeem(ticket).key == RunKey("acme", "sesn_1")
    with pytest.raises(TicketError, match="unknown, used or older"):
        tickets.redeem(ticket)
    # And one used too late opens nothing
    late = tickets.issue(RunKey("acme", "sesn_1"))
    clock.current += timedelta(seconds=TICKET_SECONDS + 1)
    with pytest.raises(TicketError):
        tickets.redeem(late)


@pytest.mark.parametrize("ticket", [None, "", "short", "x" * 43 + "!", "a" * 44])
def test_a_malformed_ticket_is_refused_without_a_read(ticket: str | None) -> None:
    store = MemoryTickets()
    with pytest.raises(TicketError, match="request the stream from the API"):
        Tickets(store=store, clock=FixedClock()).redeem(ticket)


# ------------------------------------------------------------------------------------------- runs read as events


def plain_run(status: RunStatus, steps: int, error: RunError | None = None) -> Run:
    return Run(
        run_id="run_" + "0" * 26, tenant="acme", status=status, input="6*7?", model="claude-haiku-4-5",
        tools=["calculator"], budget=Budget(max_steps=5), completed_steps=steps, error=error,
        created_at="2026-12-01T00:00:00.000+00:00", updated_at="2026-12-01T00:00:09.000+00:00",
    )  # fmt: skip


def record(n: int, content: list[dict[str, Any]]) -> StepRecord:
    return StepRecord(
        run_id="run_" + "0" * 26, step=n, model="claude-haiku-4-5", provider="anthropic", stop_reason="end_turn",
        content=content, usage=Usage(input_tokens=10, output_tokens=2), cost_usd=Decimal("0.00002"),
        decision=StepDecision.FINISH, started_at="2026-12-01T00:00:01.000+00:00",
        finished_at="2026-12-01T00:00:02.000+00:00", duration_ms=1000,
    )  # fmt: skip


def store_with(run: Run, *records: StepRecord, results: dict[int, ToolOutcome] | None = None) -> InMemoryRunStore:
    store = InMemoryRunStore()
    store.create_run(run)
    for each in records:
        store.steps[run.key, each.step] = each
    for step, outcome in (results or {}).items():
        store.tools[run.key, step, outcome.tool_use_id] = outcome
    return store


def test_a_run_reads_as_a_session_of_one_turn_with_the_same_derivation() -> None:
    # Given a run that called the calculator, then answered
    run = plain_run(RunStatus.SUCCEEDED, 2)
    call = {"type": "tool_use", "id": "toolu_1", "name": "calculator", "input": {"expression": "6*7"}}
    store = store_with(run, record(0, [call]), record(1, [{"type": "text", "text": "42"}]),
                       results={0: ToolOutcome(tool_use_id="toolu_1", name="calculator", content="42")})  # fmt: skip
    # Then its events are a session turn's: running, each step's, and the idle that ends it
    events = run_events(store, run.key)
    assert [e["type"] for e in events] == [
        "session.status_running", "span.model_request_start", "agent.tool_use", "span.model_request_end",
        "agent.tool_result", "span.model_request_start", "agent.message", "span.model_request_end",
        "session.status_idle",
    ]  # fmt: skip
    assert events[-1]["stop_reason"] == {"type": "end_turn"}
    assert [e["id"] for e in events] == sorted(e["id"] for e in events)


def test_a_failed_run_ends_with_its_error_and_a_running_one_has_no_end_yet() -> None:
    failed = plain_run(RunStatus.FAILED, 0, RunError(code="MODEL_ERROR", message="Anthropic API 400"))
    events = run_events(store_with(failed), failed.key)
    assert [e["type"] for e in events] == ["session.status_running", "session.error", "session.status_idle"]
    assert events[-1]["stop_reason"] == {"type": "retries_exhausted"}
    running = plain_run(RunStatus.RUNNING, 1)
    assert [e["type"] for e in run_events(store_with(running, record(0, [])), running.key)][-1] == (
        "span.model_request_end")  # fmt: skip


def test_only_a_runs_own_tenant_reads_it_and_a_session_is_not_a_run() -> None:
    run = plain_run(RunStatus.SUCCEEDED, 0)
    store = store_with(run)
    with pytest.raises(NotFoundError, match="run run_0"):
        run_events(store, RunKey("other", run.run_id))
    with pytest.raises(NotFoundError):
        run_events(store, RunKey("acme", "sesn_1"))
    check_target(store, run.key, "run")
    with pytest.raises(NotFoundError, match="session"):
        check_target(store, RunKey("acme", run.run_id), "session")
