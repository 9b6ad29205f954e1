"""The kill switch: list active runs and sessions (the index of active work, functions/agent/active.py, never a
scan), and stop one, a tenant's, or everyone's.

Stopping reuses the one cancel and the one interrupt: a run is cancelled as ``POST /runs/{id}/cancel`` cancels it
(``Lifecycle.cancel``), a session's running turn is interrupted as its client's ``user.interrupt`` interrupts it
(``TurnInterrupts``). So the status is written first (what every reader sees, and what ends the execution at its
next step), then the execution is stopped (a failed stop is retried from the intake queue), and a reservation is
released once the model call it covers can no longer be running (the delayed release). A stopped session idles
(``end_turn``) and takes new events: stopping is not archiving (see the README's "Kill switch").
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from functions.agent.active import MAX_PAGE, ActiveEntry, active_page, entry_token
from functions.agent.errors import ConflictError, NotFoundError, RunNotFoundError, clip
from functions.agent.lifecycle import Lifecycle
from functions.agent.models import RunKey
from functions.agent.ports import Clock, RunStore, Workflow
from functions.agent.redact import redact
from functions.agent.sessions import SESSION_PREFIX, TurnInterrupts

STOPPED, ENDED, FAILED = "stopped", "already_ended", "failed"


@dataclass(frozen=True)
class Stopped:
    """What happened to one run or session: ``stopped`` here, ``already_ended`` (it ended, or another request
    stopped it, before this one could), or ``failed`` (``detail`` says why; it is still listed, try again)."""

    tenant: str
    run_id: str
    outcome: str
    detail: str | None = None

    def public(self) -> dict[str, Any]:
        kind = "session" if self.run_id.startswith(SESSION_PREFIX) else "run"
        body = {"id": self.run_id, "type": kind, "tenant": self.tenant, "outcome": self.outcome}
        return body | ({"detail": self.detail} if self.detail else {})


@dataclass
class KillReport:
    results: list[Stopped] = field(default_factory=list)
    next_page: str | None = None  # more may be active: call again with it

    def public(self) -> dict[str, Any]:
        return {
            "data": [result.public() for result in self.results],
            "stopped": sum(result.outcome == STOPPED for result in self.results),
            "next_page": self.next_page,
        }


class KillSwitch:
    def __init__(
        self,
        *,
        store: RunStore,
        interrupts: TurnInterrupts,
        lifecycle: Lifecycle,
        workflow: Workflow,
        clock: Clock,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store, self.interrupts, self.lifecycle, self.workflow = store, interrupts, lifecycle, workflow
        self.clock, self.monotonic = clock, monotonic

    def list(
        self, tenant: str | None, *, limit: int = MAX_PAGE, page: str | None = None
    ) -> tuple[list[ActiveEntry], str | None]:
        """A page of active runs and sessions: a tenant's (one Query of its shard), or everyone's (shard by shard),
        oldest first within a tenant; the cursor of the next page, if there may be one.

        Raises:
            RequestRejectedError: ``page`` is not a next_page of this list.
        """
        return active_page(self.store, tenant, limit=limit, page=page)

    def stop(self, key: RunKey, *, reason: str) -> Stopped:
        """Stop one run (cancel it) or session (interrupt its running turn).

        Raises:
            NotFoundError: the tenant has no such run or session.
        """
        if key.run_id.startswith(SESSION_PREFIX):
            return self._interrupt(key, reason)
        try:
            self.lifecycle.cancel(key, self.workflow, reason=reason)
        except RunNotFoundError:
            raise NotFoundError(f"{clip(key.run_id)} not found in tenant {key.tenant}") from None
        except ConflictError:
            return Stopped(key.tenant, key.run_id, ENDED)
        return Stopped(key.tenant, key.run_id, STOPPED)

    def stop_all(
        self, tenant: str | None, *, reason: str, limit: int, page: str | None = None, seconds: float | None = None
    ) -> KillReport:
        """Stop up to ``limit`` active runs and sessions (a tenant's, or everyone's), taking no new one once
        ``seconds`` have passed (at least one is always taken). One failing does not stop the others: it is
        reported, and stays listed. ``next_page``: more may be active after the last one taken (what this call
        stopped has left the index, so calling again from the start is also right, and idempotent).

        Raises:
            RequestRejectedError: ``page`` is not a next_page of this list.
        """
        deadline = None if seconds is None else self.monotonic() + seconds
        report, cursor = KillReport(), page
        while len(report.results) < limit:
            entries, next_page = self.list(tenant, limit=min(limit - len(report.results), MAX_PAGE), page=cursor)
            for entry in entries:
                if report.results and deadline is not None and self.monotonic() >= deadline:
                    report.next_page = cursor
                    return report
                report.results.append(self._stop_listed(entry, reason))
                cursor = entry_token(entry)
            if next_page is None:
                return report
        report.next_page = cursor
        return report

    def _stop_listed(self, entry: ActiveEntry, reason: str) -> Stopped:
        try:
            return self.stop(entry.run_key, reason=reason)
        except NotFoundError:  # deleted since it was listed
            return Stopped(entry.tenant, entry.run_id, ENDED)
        except Exception as exc:  # an outage on this one (throttled, a conflict that kept winning): the rest go on
            return Stopped(entry.tenant, entry.run_id, FAILED, redact(f"{type(exc).__name__}: {exc}")[:500])

    def _interrupt(self, key: RunKey, reason: str) -> Stopped:
        try:
            history = self.store.load_history(key)
        except RunNotFoundError:
            history = None
        if history is None or history.run.session is None:
            raise NotFoundError(f"{clip(key.run_id)} not found in tenant {key.tenant}")
        if history.run.status.terminal:
            return Stopped(key.tenant, key.run_id, ENDED)
        now = self.clock.now().isoformat(timespec="milliseconds")
        try:
            _, stopped_here = self.interrupts.interrupt(history, now, reason=reason)
        except ConflictError:
            return Stopped(key.tenant, key.run_id, ENDED)
        return Stopped(key.tenant, key.run_id, STOPPED if stopped_here else ENDED)
