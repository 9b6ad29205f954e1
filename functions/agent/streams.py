"""Live events: a session's (or a run's) events followed as they happen, and the single-use tickets that open a
stream. Pure.

A stream reads with the same derivation as the event list (functions/agent/sessions.py): each poll reads the
history and sends the events whose ids sort after the last one sent. Ids sort in the order events happen, and an
event is shown only once nothing can be shown before it (``SessionView``), so the cursor misses nothing and sends
nothing twice. That also makes the id the SSE ``Last-Event-ID`` a client resumes from.

Where a stream begins: after ``Last-Event-ID`` when the client sends one, else at the moment it connects (the
newest event then): the anthropic SDK's pattern is to open the stream, then list the events and drop the ids it
has twice, which misses nothing because the stream is fixed before the list is read.

Where it ends: at its time limit; at the event that ends what it follows (a run's idle); or once a session has been
idle with nothing sent for ``idle_seconds``. Lambda does not tell a response-streaming function that its client went
away (its writes go on succeeding), so a stream whose client left would otherwise poll until its time limit, holding
one of the stream function's executions: a client that follows a session across quiet spells reconnects.

A ticket opens one stream: the API (which authenticated the caller) issues it for one tenant's session or run;
the stream function, behind its own URL, takes it once, within ``TICKET_SECONDS``. Only its digest is stored.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict

from functions.agent.errors import RequestRejectedError, TicketError, clip
from functions.agent.models import RunKey
from functions.agent.ports import Clock, TicketStore

EVENT_ID = re.compile(r"sevt_[0-9]{13}")  # functions/agent/sessions.py event_id: sevt_ + turn(4) section(1) a(5) b(3)
BEFORE_ALL = "sevt_" + "0" * 13  # a Last-Event-ID before every event: the stream replays them all
TICKET = re.compile(r"[A-Za-z0-9_-]{43}")
TICKET_SECONDS = 30
MIN_SLEEP = 0.001

Event = dict[str, Any]


def check_cursor(value: str | None) -> str | None:
    """A ``Last-Event-ID``: an event id (``BEFORE_ALL`` for all of them), or None when absent.

    Raises RequestRejectedError."""
    if value is None:
        return None
    if not EVENT_ID.fullmatch(value):
        raise RequestRejectedError(
            f"Last-Event-ID {clip(value)!r} is not an event id (sevt_ and 13 digits; {BEFORE_ALL} for every event)"
        )
    return value


@dataclass(frozen=True)
class StreamLimits:
    poll_seconds: float = 1.0  # how often the history is read while nothing new is found
    ping_seconds: float = 15.0  # the longest silence: a ping keeps proxies and clients from timing the stream out
    max_seconds: float = 840.0  # a stream ends after this (a Lambda lives 15 minutes): the client reconnects
    idle_seconds: float = 60.0  # a session's stream ends once it has rested (idle, nothing sent) this long


@dataclass(frozen=True)
class Frame:
    """What a stream sends next: an event, or (``event`` None) a ping."""

    event: Event | None = None


PING = Frame()
IDLE, RUNNING = "session.status_idle", "session.status_running"


def session_idle(events: list[Event]) -> bool:
    """Whether a session rests, read from its events: it has had no turn, or its latest status event is an idle
    (a turn's running comes after the idle it ends; answers sent while it waits for more come without one)."""
    statuses = [event["type"] for event in events if event["type"] in (IDLE, RUNNING)]
    return not statuses or statuses[-1] == IDLE


class Follower:
    """One stream: its start fixed when it is opened, its frames read as they come.

    ``read`` returns every event in id order (raises NotFoundError once the session or run is gone); ``last``
    says whether an event ends the stream (a run's idle: nothing can follow it); ``rests`` whether what it follows
    is at rest, from its events (a session's idle: the stream ends once it has rested ``idle_seconds`` with
    nothing sent). Time is injected. ``end`` says why the stream ended: ``limit``, ``last`` or ``idle``."""

    def __init__(
        self,
        read: Callable[[], list[Event]],
        *,
        after: str | None,
        limits: StreamLimits,
        monotonic: Callable[[], float],
        sleep: Callable[[float], None],
        last: Callable[[Event], bool] = lambda event: False,
        rests: Callable[[list[Event]], bool] = lambda events: False,
    ) -> None:
        """Reads once, now (raises NotFoundError): the stream starts after ``after``, or at this moment."""
        self.read, self.limits, self.monotonic, self.sleep, self.last = read, limits, monotonic, sleep, last
        self.rests = rests
        self._found = read()
        self.cursor = after if after is not None else (str(self._found[-1]["id"]) if self._found else BEFORE_ALL)
        # what ends the stream happened already (a run that had ended): nothing can follow
        self.ended = any(last(event) for event in self._found if str(event["id"]) <= self.cursor)
        self.end: str | None = "last" if self.ended else None
        self.sent = 0

    def frames(self) -> Iterator[Frame]:
        """Each new event once, in order, and a ping after ``ping_seconds`` of silence, until ``max_seconds`` have
        passed, an event ends the stream, or what it follows has rested ``idle_seconds`` with nothing sent. Raises
        NotFoundError when the session or run disappears meanwhile."""
        limits = self.limits
        quiet_since = self.monotonic()  # when the last event was sent (or the stream opened)
        deadline, ping_at = quiet_since + limits.max_seconds, quiet_since + limits.ping_seconds
        found = self._found
        while not self.ended:
            for event in found:
                if str(event["id"]) <= self.cursor:
                    continue
                self.cursor = str(event["id"])
                self.sent += 1
                yield Frame(event)
                quiet_since = self.monotonic()
                ping_at = quiet_since + limits.ping_seconds
                if self.last(event):
                    self.ended, self.end = True, "last"
                    return
            now = self.monotonic()
            if now >= deadline:
                self.end = "limit"
                return
            if now - quiet_since >= limits.idle_seconds and self.rests(found):
                self.end = "idle"
                return
            if now >= ping_at:
                yield PING
                now = self.monotonic()
                ping_at = now + limits.ping_seconds
            # the next poll, ping or end, whichever comes first (at least a millisecond away: time always moves on)
            self.sleep(max(min(limits.poll_seconds, ping_at - now, deadline - now), MIN_SLEEP))
            found = self.read()


# ------------------------------------------------------------------------------------------- tickets


class StreamTicket(BaseModel):
    """What a ticket opens: one tenant's session or run, until ``expires_at`` (epoch seconds)."""

    model_config = ConfigDict(defer_build=True)

    tenant: str
    target: str  # a session id (sesn_...) or a run id (run_...)
    expires_at: int

    @property
    def key(self) -> RunKey:
        return RunKey(self.tenant, self.target)


def ticket_digest(ticket: str) -> str:
    return hashlib.sha256(ticket.encode()).hexdigest()


class Tickets:
    def __init__(
        self, *, store: TicketStore, clock: Clock, token: Callable[[int], str] = secrets.token_urlsafe
    ) -> None:
        self.store, self.clock, self.token = store, clock, token

    def issue(self, key: RunKey) -> str:
        """A ticket for one stream of ``key`` (whose existence the caller has checked), valid TICKET_SECONDS."""
        ticket = self.token(32)
        expires = int(self.clock.now().timestamp()) + TICKET_SECONDS
        self.store.put_ticket(ticket_digest(ticket), StreamTicket(tenant=key.tenant, target=key.run_id,
                                                                  expires_at=expires))  # fmt: skip
        return ticket

    def redeem(self, ticket: str | None) -> StreamTicket:
        """The ticket's target; the ticket cannot be used again. Raises TicketError."""
        if ticket is None or not TICKET.fullmatch(ticket):
            raise TicketError("a stream opens with the ticket the API gives: request the stream from the API")
        found = self.store.take_ticket(ticket_digest(ticket))
        if found is None or found.expires_at < self.clock.now().timestamp():
            raise TicketError(
                f"the stream ticket is unknown, used or older than {TICKET_SECONDS} s: request the stream from the API"
            )
        return found
