"""Sessions: multi-turn conversations with a pinned agent version, in the shape of the Managed Agents API. Pure.

A session is a run (one item, the same engine) that has turns. A turn starts with user events and is one
execution of the workflow; it ends when the run reaches a status no execution works under (TERMINAL_STATUSES):
the session is then idle, and the status says why (``stop_reason``). Nothing runs while a session is idle.

Events are not a second copy of the session: what the client sent is stored as it arrived (``UserEvent``),
and everything else (the model's messages and tool calls, the spans, status changes) is read off the steps,
tool results and turns the engine stores anyway. Event ids sort in the order the events happened, so they
are also the cursor of a page, a long-poll and a stream: once an event is shown, nothing can appear before it.
A turn's end is shown once nothing of the turn can land any more: every end gives the tool calls it leaves
without a result their error result before its status is written, and a result reported later is dropped
(functions/agent/lifecycle.py ``settle_calls``); a model call still in flight holds the reservation, and the
idle waits for it (``SessionView.settled``).
"""

from __future__ import annotations

import time
from bisect import bisect_right
from collections.abc import Callable
from dataclasses import replace
from decimal import ROUND_HALF_UP, Decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, model_validator

from functions.agent.active import MAX_PAGE, active_page, entry_token
from functions.agent.agents import Agent, Agents, check_metadata, engine_config
from functions.agent.errors import (
    ConflictError,
    EnqueueError,
    NotFoundError,
    RequestRejectedError,
    RunNotFoundError,
    ToolServerError,
    ToolServerUnavailableError,
    clip,
)
from functions.agent.lifecycle import Lifecycle
from functions.agent.models import (
    MAX_INPUT_BYTES,
    Budget,
    Run,
    RunError,
    RunKey,
    RunStatus,
    StepRef,
    ToolError,
    ToolOutcome,
    Turn,
    UserEvent,
)
from functions.agent.ports import (
    Clock,
    McpCatalog,
    RunHistory,
    RunQueue,
    RunReader,
    Runs,
    RunStore,
    SessionStore,
    Workflow,
)
from functions.agent.requests import Strict, parse

SESSION_PREFIX = "sesn_"
MAX_EVENTS_PER_REQUEST = 50
MAX_STEPS_PER_TURN = 25
MAX_TOKENS_PER_CALL = 4096
MAX_TURNS = 500  # a session's item keeps its turns (and a copy of its agent version): a bounded list
MAX_WAIT_SECONDS = 20  # a long-poll stays inside the api function's 28 s timeout and API Gateway's 30 s
POLL_SECONDS = 0.5
DEFAULT_DENY_MESSAGE = "The user denied this tool call."

# ------------------------------------------------------------------------------------------- requests


class TextBlock(Strict):
    type: Literal["text"]
    text: str = Field(min_length=1)


class UserMessage(Strict):
    type: Literal["user.message"]
    content: list[TextBlock] = Field(min_length=1)


class ToolConfirmation(Strict):
    type: Literal["user.tool_confirmation"]
    tool_use_id: str
    result: Literal["allow", "deny"]
    deny_message: str | None = Field(default=None, max_length=10_000)

    @model_validator(mode="after")
    def _deny_only(self) -> ToolConfirmation:
        if self.deny_message is not None and self.result != "deny":
            raise ValueError("deny_message goes with result 'deny' only")
        return self


class CustomToolResult(Strict):
    type: Literal["user.custom_tool_result"]
    custom_tool_use_id: str
    content: list[TextBlock] = Field(default_factory=list)
    is_error: bool | None = None


class Interrupt(Strict):
    type: Literal["user.interrupt"]


SentEvent = Annotated[UserMessage | ToolConfirmation | CustomToolResult | Interrupt, Field(discriminator="type")]
SUPPORTED_EVENTS = ("user.message", "user.tool_confirmation", "user.custom_tool_result", "user.interrupt")


class SendEvents(Strict):
    events: list[SentEvent] = Field(min_length=1, max_length=MAX_EVENTS_PER_REQUEST)


class AgentRef(Strict):
    type: Literal["agent"]
    id: str
    version: int | None = Field(default=None, ge=1)


class Money(Strict):
    amount: str = Field(pattern=r"^[1-9][0-9]{0,9}$", description="minor units (cents), no leading zeros")
    currency: Literal["USD"]


class BudgetLimit(Strict):
    type: Literal["limit"]
    max_list_cost: Money


class CreateSession(Strict):
    agent: str | AgentRef
    environment_id: str | None = Field(default=None, max_length=256)
    title: str | None = Field(default=None, max_length=512)
    metadata: dict[str, str] = Field(default_factory=dict)
    budget: BudgetLimit | None = None
    initial_events: list[UserMessage] = Field(default_factory=list, max_length=MAX_EVENTS_PER_REQUEST)
    resources: list[Any] = Field(default_factory=list)
    vault_ids: list[str] = Field(default_factory=list)


def _refuse_unsupported_events(raw: Any) -> None:
    events = raw.get("events") if isinstance(raw, dict) else None
    for index, event in enumerate(events if isinstance(events, list) else []):
        kind = event.get("type") if isinstance(event, dict) else None
        if kind not in SUPPORTED_EVENTS:
            raise RequestRejectedError(
                f"events.{index}.type: {clip(kind)!r} is not supported (Stepwise accepts {', '.join(SUPPORTED_EVENTS)})"
            )
        content = event.get("content") if isinstance(event, dict) else None
        for block_index, block in enumerate(content if isinstance(content, list) else []):
            if isinstance(block, dict) and block.get("type") != "text":
                raise RequestRejectedError(
                    f"events.{index}.content.{block_index}.type: only text blocks are supported, not "
                    f"{clip(block.get('type'))!r}"
                )


# ------------------------------------------------------------------------------------------- ids and order


def event_id(turn: int, section: int, a: int = 0, b: int = 0) -> str:
    """Ids sort in the order events happen: turn, then section (0 what the client sent to start it, 1 running,
    2 approved tools run first, 3 the steps, 4 an interrupt, 5 an error, 6 idle), then position."""
    return f"sevt_{turn:04d}{section}{a:05d}{b:03d}"


TOOL_USE_BASE = 10  # b of a step's tool-use events: 10 + the call's index
TOOL_RESULT_BASE = 600
COMPACTED = 499  # b of the event saying a step's call had older tool results cleared: inside its span, before its end


def stop_reason(status: RunStatus, error: RunError | None, pending: list[str]) -> dict[str, Any]:
    """Why a turn idled, as the Managed Agents API says it."""
    if status is RunStatus.IDLE:
        return {"type": "requires_action", "event_ids": pending}
    if status is RunStatus.BUDGET_EXCEEDED:
        return {"type": "budget_reached"}
    if status is RunStatus.FAILED and error is not None and error.code == "REFUSAL":
        return {"type": "refusal"}
    if status in (RunStatus.SUCCEEDED, RunStatus.CANCELLED):
        return {"type": "end_turn"}
    return {"type": "retries_exhausted"}


def _error_event(status: RunStatus, error: RunError | None) -> dict[str, Any] | None:
    if status is RunStatus.BUDGET_EXCEEDED and error is not None and error.code == "MAX_STEPS":
        message = f"MAX_STEPS: {error.message}"
        return {"type": "tool_use_limit_reached_error", "message": message, "retry_status": {"type": "terminal"}}
    if status not in (RunStatus.FAILED, RunStatus.TIMED_OUT) or (error is not None and error.code == "REFUSAL"):
        return None
    code = error.code if error else status.value
    # retries of the model ran out (the workflow's Catch names the error), or the provider refused the request
    failed_call = code == "RetryableModelError" or code.startswith("MODEL_")
    kind = "model_request_failed_error" if failed_call else "unknown_error"
    message = f"{code}: {error.message}" if error else f"the turn ended {status.value}"
    return {"type": kind, "message": message, "retry_status": {"type": "exhausted"}}


# ------------------------------------------------------------------------------------------- the view


class SessionView:
    """One session's history read as Managed Agents events and object."""

    def __init__(self, history: RunHistory, *, full: bool = True) -> None:
        """``full``: the history has the session's steps and events (a listed session has only its item)."""
        # a provisional result (a call with side effects still running) is not a result yet
        history = replace(history, tool_results={k: v for k, v in history.tool_results.items() if v.final})
        self.history, self.run, self.full = history, history.run, full
        self.agent = self.run.agent
        firsts = [turn.first_step for turn in self.run.turns]
        # the last turn that began at or before the step (first steps never decrease): a binary search
        self._turn_of_step = {record.step: max(bisect_right(firsts, record.step), 1) for record in history.steps}
        # approved calls run by a later turn than the step that asked for them
        self._run_by = {
            (int(call["step"]), str(call["id"])): n for n, turn in enumerate(self.run.turns, 1) for call in turn.tools
        }

    @property
    def settled(self) -> bool:
        """Whether the session is idle with nothing left to land: no model call of its ended turn in flight (its
        tool calls were given their results by the end)."""
        return self.run.status.terminal and self.run.held is None

    def _results_complete(self, record: Any, approved: bool) -> bool:
        """Whether all of a step's results that Stepwise runs (in its turn, or the approved ones in the next) are
        stored, or nothing more can come (a later step, or the session settled)."""
        if record.step < len(self.history.steps) - 1 or self.settled:
            return True
        if self._turn_of_step.get(record.step, 1) < self.run.turn and not approved:
            return True  # an earlier turn's step: its own results are all in
        runs_now = [
            call for call in record.tool_calls()
            if (self.agent is None or not self.agent.needs_client(call.name)) or (record.step, call.id) in self._run_by
        ]  # fmt: skip
        wanted = [call for call in runs_now if ((record.step, call.id) in self._run_by) == approved]
        return all((record.step, call.id) in self.history.tool_results for call in wanted)

    def call_event_id(self, step: int, index: int) -> str:
        return event_id(self._turn_of_step.get(step, 1), 3, step, TOOL_USE_BASE + index)

    def waiting(self) -> dict[str, tuple[int, int, str, str]]:
        """The calls an idle turn waits for: event id -> (step, index, tool_use_id, "custom" | "ask")."""
        run = self.run
        if run.status is not RunStatus.IDLE or not self.history.steps or self.agent is None:
            return {}
        record = self.history.steps[-1]
        approved = {str(call["id"]) for call in (run.session or {}).get("approved", [])}
        waiting = {}
        for index, call in enumerate(record.tool_calls()):
            if not self.agent.needs_client(call.name):
                continue
            if (record.step, call.id) in self.history.tool_results or call.id in approved:
                continue
            kind = "ask" if call.name in self.agent.ask else "custom"
            waiting[self.call_event_id(record.step, index)] = (record.step, index, call.id, kind)
        return waiting

    def events(self) -> list[dict[str, Any]]:
        run, history = self.run, self.history
        # An interrupt is shown once the turn has settled (with its idle): the model call it interrupted may still
        # be recorded, and its events sort before the interrupt's, so a follower past the interrupt would miss them.
        hidden = None if self.settled else event_id(run.turn, 4)[:10]
        events: list[dict[str, Any]] = [
            {"id": event.id, "type": event.type, "processed_at": event.processed_at, **event.body}
            for event in history.user_events
            if hidden is None or not event.id.startswith(hidden)
        ]
        for n, turn in enumerate(run.turns, 1):
            events.append({"id": event_id(n, 1), "type": "session.status_running", "processed_at": turn.started_at})
            current = n == len(run.turns)
            status = run.status if current else turn.ended_status
            if status is None or not status.terminal or (current and not self.settled):
                continue  # (a stopped turn idles once its last model call has settled: its events come first)
            error = run.error if current else turn.ended_error
            at = run.updated_at if current else (turn.ended_at or turn.started_at)
            if failure := _error_event(status, error):
                events.append({"id": event_id(n, 5), "type": "session.error", "processed_at": at, "error": failure})
            pending = list(self.waiting()) if current else self._asked_in(n)
            events.append(
                {
                    "id": event_id(n, 6),
                    "type": "session.status_idle",
                    "processed_at": at,
                    "stop_reason": stop_reason(status, error, pending),
                }
            )
        cleared = 0
        for record in history.steps:
            events += self._step_events(record, compacted=record.cleared_before > cleared)
            cleared = max(cleared, record.cleared_before)
        return sorted(events, key=lambda event: str(event["id"]))

    def _asked_in(self, turn: int) -> list[str]:
        """The calls an ended turn that idled for its client had waited for."""
        steps = [record for record in self.history.steps if self._turn_of_step.get(record.step) == turn]
        if not steps or self.agent is None:
            return []
        last = steps[-1]
        return [
            self.call_event_id(last.step, i) for i, c in enumerate(last.tool_calls()) if self.agent.needs_client(c.name)
        ]

    def _step_events(self, record: Any, *, compacted: bool = False) -> list[dict[str, Any]]:
        n, k = self._turn_of_step.get(record.step, 1), record.step
        start = event_id(n, 3, k, 0)
        events: list[dict[str, Any]] = [
            {"id": start, "type": "span.model_request_start", "processed_at": record.started_at}
        ]
        if compacted:  # this call was the first sent with more of the oldest tool results cleared (conversation.py)
            events.append(
                {"id": event_id(n, 3, k, COMPACTED), "type": "agent.thread_context_compacted",
                 "processed_at": record.started_at, "cleared_before_step": record.cleared_before}  # Stepwise: the bound
            )  # fmt: skip
        if not record.superseded:
            text = [
                {"type": "text", "text": b["text"]} for b in record.content if b.get("type") == "text" and b.get("text")
            ]
            if text:
                events.append(
                    {"id": event_id(n, 3, k, 1), "type": "agent.message", "processed_at": record.finished_at,
                     "content": text}
                )  # fmt: skip
            for index, call in enumerate(record.tool_calls()):
                custom = self.agent is not None and any(t.name == call.name for t in self.agent.custom_tools)
                mcp = self.agent.mcp_tool(call.name) if self.agent is not None else None
                kind = "agent.custom_tool_use" if custom else "agent.mcp_tool_use" if mcp else "agent.tool_use"
                event: dict[str, Any] = {
                    "id": event_id(n, 3, k, TOOL_USE_BASE + index),
                    "type": kind,
                    "processed_at": record.finished_at,
                    "name": call.name,
                    "input": call.input,
                    "tool_use_id": call.id,  # Stepwise: the model's id for the call
                }
                if mcp is not None:
                    event["mcp_server_name"] = mcp.server
                if not custom:
                    asks = self.agent is not None and call.name in self.agent.ask
                    event["evaluated_permission"] = "ask" if asks else "allow"
                events.append(event)
                outcome = self.history.tool_results.get((k, call.id))
                if outcome is None or custom or outcome.error_kind is ToolError.DENIED:
                    continue  # the client's own result or decision is its event
                if not self._results_complete(record, (k, call.id) in self._run_by):
                    continue  # parallel results land in any order: a step's are shown together
                later = self._run_by.get((k, call.id))
                where = event_id(later, 2, k, index) if later else event_id(n, 3, k, TOOL_RESULT_BASE + index)
                result: dict[str, Any] = {
                    "id": where,
                    "type": "agent.mcp_tool_result" if mcp else "agent.tool_result",
                    "processed_at": record.finished_at,
                    "mcp_tool_use_id" if mcp else "tool_use_id": event["id"],
                    "content": [{"type": "text", "text": outcome.content}],
                    "is_error": outcome.is_error,
                }
                if outcome.stored is not None:  # Stepwise: the content is a view of a larger result
                    result["size"] = outcome.size
                events.append(result)
        usage = record.usage
        events.append(
            {
                "id": event_id(n, 3, k, 500),
                "type": "span.model_request_end",
                "processed_at": record.finished_at,
                "model_request_start_id": start,
                "is_error": False,
                "model_usage": {
                    "input_tokens": usage.input_tokens,
                    "output_tokens": usage.output_tokens,
                    "cache_creation_input_tokens": usage.cache_creation_input_tokens,
                    "cache_read_input_tokens": usage.cache_read_input_tokens,
                },
                # Stepwise: what served the call and its exact cost
                "model": record.model,
                "provider": record.provider,
                "cost_usd": format(record.cost_usd, "f"),
                "superseded": record.superseded,
            }
        )
        return events

    def public(self) -> dict[str, Any]:
        run = self.run
        session = run.session or {}
        usage = run.usage
        cents = (run.cost_usd * 100).quantize(Decimal(1), rounding=ROUND_HALF_UP)
        active_ms = sum(record.duration_ms for record in self.history.steps)
        status = "idle" if self.settled else "running"
        body: dict[str, Any] = {
            "id": run.run_id,
            "type": "session",
            "agent": session.get("agent"),
            "archived_at": session.get("archived_at"),
            "budget": session.get("budget"),
            "created_at": run.created_at,
            "updated_at": run.updated_at,
            "environment_id": session.get("environment_id") or "",
            "metadata": session.get("metadata", {}),
            "title": session.get("title"),
            "status": status,
            "outcome_evaluations": [],
            "resources": [],
            "vault_ids": [],
            "stats": {"active_seconds": active_ms / 1000 if self.full else None, "duration_seconds": None},
            "usage": {
                "input_tokens": usage.input_tokens,
                "output_tokens": usage.output_tokens,
                "cache_read_input_tokens": usage.cache_read_input_tokens,
                "cache_creation": {
                    "ephemeral_5m_input_tokens": usage.cache_creation_input_tokens
                    - usage.cache_creation_1h_input_tokens,
                    "ephemeral_1h_input_tokens": usage.cache_creation_1h_input_tokens,
                },
                "list_cost": {"amount": str(int(cents)), "currency": "USD"},
                "cost_usd": format(run.cost_usd, "f"),  # Stepwise: exact, not rounded to cents
            },
            "turns": run.turn,  # Stepwise
            "created_by": run.created_by,  # Stepwise: the API key (its id) that created it
        }
        if self.settled and run.turns and self.full:
            body["stop_reason"] = stop_reason(run.status, run.error, list(self.waiting()))  # Stepwise
        return body


def session_agent(agent: Agent) -> dict[str, Any]:
    """The copy of the agent version a session keeps (the Managed Agents ``session.agent``)."""
    public = agent.public()
    return {k: v for k, v in public.items() if k not in ("created_at", "updated_at", "archived_at", "metadata")}


# ------------------------------------------------------------------------------------------- the use case


class Sessions:
    def __init__(
        self,
        *,
        store: RunStore,
        sessions: SessionStore,
        agents: Agents,
        queue: RunQueue,
        workflow: Workflow,
        lifecycle: Lifecycle,
        clock: Clock,
        new_id: Callable[[], str],
        builtins: list[str],
        mcp: McpCatalog | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.store, self.sessions, self.agents, self.queue = store, sessions, agents, queue
        self.workflow, self.lifecycle, self.clock, self.new_id = workflow, lifecycle, clock, new_id
        self.builtins, self.mcp, self.sleep = builtins, mcp, sleep
        self.interrupts = TurnInterrupts(store=store, sessions=sessions, lifecycle=lifecycle, workflow=workflow)

    def _mcp_listing(self, agent: Agent) -> Callable[[str, str], list[dict[str, Any]]]:
        catalog = self.mcp
        assert catalog is not None

        def listing(server: str, url: str) -> list[dict[str, Any]]:
            try:
                return catalog.tools(agent, server, url)
            except ToolServerError as exc:
                raise ToolServerUnavailableError(f"MCP server {server!r} cannot be listed: {exc}") from exc

        return listing

    # -------------------------------------------------------------------------------------- sessions

    def create(self, tenant: str, raw: Any, *, created_by: str | None = None) -> SessionView:
        """Raises RequestRejectedError (nothing is written), NotFoundError (the agent or version)."""
        request: CreateSession = parse(CreateSession, raw)
        if request.resources:
            raise RequestRejectedError("resources: not supported by Stepwise (it has no sandbox to mount them in)")
        if request.vault_ids:
            raise RequestRejectedError("vault_ids: not supported by Stepwise")
        check_metadata({}, dict(request.metadata))
        ref = request.agent if isinstance(request.agent, AgentRef) else AgentRef(type="agent", id=request.agent)
        agent = self.agents.get(tenant, ref.id, ref.version)
        if agent.archived_at is not None and ref.version is None:
            raise RequestRejectedError(f"agent {agent.id} is archived")
        builtins, config = engine_config(
            agent,
            self.builtins,
            functions=self.agents.lambda_functions,
            mcp_tools=self._mcp_listing(agent) if self.mcp is not None else None,
        )
        max_usd = float(Decimal(request.budget.max_list_cost.amount) / 100) if request.budget else None
        now = self._now()
        run = Run(
            run_id=self.new_id(),
            tenant=tenant,
            status=RunStatus.SUCCEEDED,  # idle: no turn yet (the public status says idle)
            input="",
            model=agent.model,
            tools=builtins,
            budget=Budget(max_usd=max_usd, max_steps=MAX_STEPS_PER_TURN),
            max_tokens_per_call=MAX_TOKENS_PER_CALL,
            agent=config,
            session={
                "rev": 0,
                "agent": session_agent(agent),
                "agent_id": agent.id,
                "environment_id": request.environment_id,
                "title": request.title,
                "metadata": request.metadata,
                "budget": request.budget.model_dump() if request.budget else None,
                "archived_at": None,
                "approved": [],
            },
            created_by=created_by,
            created_at=now,
            updated_at=now,
        )
        _check_size(request.initial_events)
        events: list[UserEvent] = []
        if request.initial_events:
            events = [self._user_event(1, 0, i, e, now) for i, e in enumerate(request.initial_events)]
            run = _with_turn(run, Turn(first_step=0, started_at=now), now)
        self.sessions.create_session(run, events)
        if events:
            self._enqueue(run)
        return SessionView(RunHistory(run=run, user_events=events))

    def view(self, key: RunKey) -> SessionView:
        return SessionView(self._history(key))

    def list_page(
        self, tenant: str, *, limit: int, page: str | None, agent_id: str | None, include_archived: bool
    ) -> tuple[list[SessionView], str | None]:
        runs, next_page = self.sessions.list_sessions(
            tenant, limit=limit, after=page, agent_id=agent_id, include_archived=include_archived
        )
        return [SessionView(RunHistory(run=run), full=False) for run in runs], next_page

    def running_page(
        self, tenant: str, *, limit: int, page: str | None, agent_id: str | None
    ) -> tuple[list[SessionView], str | None]:
        """The tenant's sessions with a turn queued or running (read off the index of active work, never a scan),
        oldest turn first; an archived session is never running. Each is read (consistently) before it is listed:
        the index is eventually consistent, and a turn that idled a moment ago is not listed as running.

        Raises:
            RequestRejectedError: ``page`` is not a next_page of this list.
        """
        found: list[SessionView] = []
        while len(found) < limit:
            entries, page = active_page(self.store, tenant, limit=MAX_PAGE, page=page)
            for entry in entries:
                run = self.store.get_run(entry.run_key) if entry.kind == "session" else None
                running = run is not None and run.session is not None and not run.status.terminal
                if running and run is not None and agent_id in (None, (run.session or {}).get("agent_id")):
                    found.append(SessionView(RunHistory(run=run), full=False))
                if len(found) == limit:
                    return found, entry_token(entry)
            if page is None:
                break
        return found, None

    def archive(self, key: RunKey) -> SessionView:
        history = self._history(key)
        run = history.run
        if not (run.session or {}).get("archived_at"):
            if not run.status.terminal:
                raise ConflictError(f"session {key.run_id} is running: interrupt it before archiving it")
            if run.held is not None:  # an interrupted turn's call is still in flight: it settles first
                raise ConflictError(f"session {key.run_id} still has a model call in flight; retry in a few minutes")
            archived = _revised(run, {"archived_at": self._now()}, self._now())
            if not self.sessions.save_session(archived, read=run, events=[], results=[]):
                raise ConflictError(f"session {key.run_id} changed meanwhile; retry")
            history.run = archived
        return SessionView(history)

    def delete(self, key: RunKey) -> dict[str, Any]:
        run = self._history(key).run
        if not run.status.terminal or run.held is not None:
            raise ConflictError(f"session {key.run_id} is running: interrupt it before deleting it")
        self.sessions.delete_session(key)
        return {"id": key.run_id, "type": "session_deleted"}

    # -------------------------------------------------------------------------------------- events

    def send(self, key: RunKey, raw: Any) -> list[dict[str, Any]]:
        """Store the client's events and start the next turn when nothing is left to answer.

        Raises:
            RequestRejectedError: a malformed or unsupported event, an id no call waits for (nothing stored).
            ConflictError: the session is running (only user.interrupt is accepted then), or it changed
                while the events were stored (nothing stored; send them again).
        """
        _refuse_unsupported_events(raw)
        request: SendEvents = parse(SendEvents, raw)
        history = self._history(key)
        run, now = history.run, self._now()
        if (run.session or {}).get("archived_at"):
            raise RequestRejectedError(f"session {key.run_id} is archived")
        interrupts = [e for e in request.events if isinstance(e, Interrupt)]
        if not run.status.terminal:
            if len(interrupts) != len(request.events):
                raise ConflictError(
                    f"session {key.run_id} is running: events are refused until it is idle "
                    "(wait for session.status_idle, or send user.interrupt)"
                )
            return self._interrupt(history, now)
        only_interrupts = len(interrupts) == len(request.events)
        if interrupts and only_interrupts and (stored := _interrupt_of(history)) is not None:
            return [_public(stored)]  # the turn was interrupted already (a retried request): the same answer
        if interrupts:
            raise ConflictError(f"session {key.run_id} is idle: there is nothing to interrupt")
        if run.held is not None:
            raise ConflictError(
                f"session {key.run_id}: the interrupted turn's last model call is still being settled; "
                "send the events again in a few minutes"
            )
        return self._answer(history, request.events, now)

    def _interrupt(self, history: RunHistory, now: str) -> list[dict[str, Any]]:
        event, _ = self.interrupts.interrupt(history, now)
        return [_public(event)]

    def _answer(self, history: RunHistory, sent: list[Any], now: str) -> list[dict[str, Any]]:
        view = SessionView(history)
        run = history.run
        waiting = view.waiting()
        rev = int((run.session or {}).get("rev", 0))
        next_turn = run.turn + 1
        results: list[tuple[StepRef, ToolOutcome]] = []
        approved = list((run.session or {}).get("approved", []))
        answered: set[str] = set()
        messages = False
        events: list[UserEvent] = []
        for index, event in enumerate(sent):
            events.append(self._user_event(next_turn, rev + 1, index, event, now))
            if isinstance(event, UserMessage):
                messages = True
                continue
            target = event.tool_use_id if isinstance(event, ToolConfirmation) else event.custom_tool_use_id
            field = "tool_use_id" if isinstance(event, ToolConfirmation) else "custom_tool_use_id"
            kind = "ask" if isinstance(event, ToolConfirmation) else "custom"
            if target in answered:
                raise RequestRejectedError(f"events.{index}.{field}: {target} is answered twice")
            call = waiting.get(target)
            if call is None or call[3] != kind:
                what = "a confirmation" if kind == "ask" else "a custom tool result"
                open_ids = ", ".join(k for k, v in waiting.items() if v[3] == kind) or "none"
                raise RequestRejectedError(
                    f"events.{index}.{field}: no call waits for {what} with id {target} (waiting: {open_ids})"
                )
            answered.add(target)
            step, _, tool_use_id, _ = call
            name = history.steps[-1].tool_calls()[call[1]].name
            if isinstance(event, ToolConfirmation) and event.result == "allow":
                entry: dict[str, Any] = {"id": tool_use_id, "name": name, "step": step}
                if run.agent is not None and run.agent.lambda_tool(name) is not None:  # the Map invokes it with this
                    entry["input"] = history.steps[-1].tool_calls()[call[1]].input
                approved.append(entry)
                continue
            if isinstance(event, ToolConfirmation):
                outcome = ToolOutcome(
                    tool_use_id=tool_use_id, name=name, content=event.deny_message or DEFAULT_DENY_MESSAGE,
                    is_error=True, error_kind=ToolError.DENIED,
                )  # fmt: skip
            else:
                text = "\n".join(block.text for block in event.content)
                outcome = ToolOutcome(
                    tool_use_id=tool_use_id, name=name, content=text, is_error=bool(event.is_error),
                    error_kind=ToolError.CLIENT if event.is_error else None,
                )  # fmt: skip
            results.append((StepRef(run.key, step), outcome))
        left = [event_id for event_id in waiting if event_id not in answered]
        if messages and left:
            raise ConflictError(f"session {run.run_id} waits for its tool calls first: answer {', '.join(left)}")
        _check_size(sent)
        if not left and run.turn >= MAX_TURNS:
            raise ConflictError(
                f"session {run.run_id} has had {MAX_TURNS} turns, the most one session takes: open a new one"
            )
        updated = _revised(run, {"approved": [] if not left else approved}, now)
        if not left:  # everything answered: the next turn starts, with the calls a person allowed
            updated = _with_turn(updated, Turn(first_step=run.completed_steps, started_at=now, tools=approved), now)
        else:  # still idle: the events wait with the next turn
            updated = updated.model_copy(update={"updated_at": run.updated_at})
        # an answer an interrupted turn stored for the step the next turn starts at was never its answer
        discard = run.completed_steps if not left else None
        if not self.sessions.save_session(updated, read=run, events=events, results=results, discard_pending=discard):
            raise ConflictError(f"session {run.run_id} changed while the events were stored; send them again")
        if not left:
            self._enqueue(updated)
        return [_public(event) for event in events]

    def events(
        self,
        key: RunKey,
        *,
        page: str | None,
        limit: int,
        order: Literal["asc", "desc"],
        types: list[str] | None,
        wait_seconds: float = 0,
    ) -> tuple[list[dict[str, Any]], str | None]:
        """A page of the session's events. With ``wait_seconds`` (ascending only) an empty page is read again
        until an event arrives or the time is up: a client follows a session without hot polling."""
        deadline = time.monotonic() + min(max(wait_seconds, 0), MAX_WAIT_SECONDS)
        while True:
            found = self.view(key).events()
            if types:
                found = [event for event in found if event["type"] in types]
            if order == "desc":
                found.reverse()
                found = [event for event in found if page is None or event["id"] < page]
            else:
                found = [event for event in found if page is None or event["id"] > page]
            if found or order == "desc" or time.monotonic() >= deadline:
                break
            self.sleep(POLL_SECONDS)
        chosen = found[:limit]
        return chosen, (str(chosen[-1]["id"]) if len(found) > limit else None)

    # -------------------------------------------------------------------------------------- helpers

    def _enqueue(self, run: Run) -> None:
        try:
            self.queue.enqueue(run.key)
        except Exception as exc:
            reason = RunError(code="ENQUEUE_FAILED", message=str(exc)[:500])
            self.lifecycle.end(run.key, RunStatus.FAILED, reason, turn=run.turn)  # announced like any end
            raise EnqueueError(
                f"the turn could not be queued: {exc}; it ended with an error", retry_with_key=False
            ) from exc

    def _history(self, key: RunKey) -> RunHistory:
        return load_session(self.store, key)

    @staticmethod
    def _user_event(turn: int, rev: int, index: int, event: BaseModel, now: str) -> UserEvent:
        body = event.model_dump(exclude={"type"}, exclude_none=True)
        kind = str(event.model_dump()["type"])
        return UserEvent(id=event_id(turn, 0, rev, index), type=kind, turn=turn, processed_at=now, body=body)

    def _now(self) -> str:
        return self.clock.now().isoformat(timespec="milliseconds")


INTERRUPTED = "interrupted by the user"
RUN_PREFIX = "run_"


def load_session(store: Runs, key: RunKey) -> RunHistory:
    """A session's history. Raises NotFoundError (no such session of the tenant, or not a session)."""
    history = _load(store, key, SESSION_PREFIX, "session")
    if history.run.session is None:
        raise NotFoundError(f"session {clip(key.run_id)} not found")
    return history


def session_events(store: Runs, key: RunKey) -> list[dict[str, Any]]:
    """Every event of a session, in id order (what the list pages and a stream follows). Raises NotFoundError."""
    return SessionView(load_session(store, key)).events()


def run_events(store: Runs, key: RunKey) -> list[dict[str, Any]]:
    """A /runs run read as a session of one turn, with the same derivation: ``session.status_running``, its steps'
    events, and once it has ended (and settled) ``session.error`` if it failed and ``session.status_idle`` with why.
    Raises NotFoundError."""
    history = _load(store, key, RUN_PREFIX, "run")
    run = history.run
    if run.session is not None:
        raise NotFoundError(f"run {clip(key.run_id)} not found")
    one_turn = run.model_copy(update={"turns": [Turn(first_step=0, started_at=run.created_at)]})
    return SessionView(replace(history, run=one_turn)).events()


def check_target(store: RunReader, key: RunKey, kind: Literal["session", "run"]) -> None:
    """That the tenant has this session (``kind`` "session") or /runs run (reads its item only). Raises
    NotFoundError."""
    prefix = SESSION_PREFIX if kind == "session" else RUN_PREFIX
    run = store.get_run(key) if key.run_id.startswith(prefix) else None
    if run is None or (run.session is not None) != (kind == "session"):
        raise NotFoundError(f"{kind} {clip(key.run_id)} not found")


def _load(store: Runs, key: RunKey, prefix: str, what: str) -> RunHistory:
    if not key.run_id.startswith(prefix):
        raise NotFoundError(f"{what} {clip(key.run_id)} not found")
    try:
        return store.load_history(key)
    except RunNotFoundError:
        raise NotFoundError(f"{what} {clip(key.run_id)} not found") from None


class TurnInterrupts:
    """Stopping a session's running turn, the one way: the client's ``user.interrupt`` and the kill switch
    (functions/agent/killswitch.py) both come here."""

    def __init__(self, *, store: RunStore, sessions: SessionStore, lifecycle: Lifecycle, workflow: Workflow) -> None:
        self.store, self.sessions, self.lifecycle, self.workflow = store, sessions, lifecycle, workflow

    def interrupt(self, history: RunHistory, now: str, *, reason: str = INTERRUPTED) -> tuple[UserEvent, bool]:
        """Store the running turn's interrupt and cancel the turn: the calls it has not finished get their
        interrupted results, then its status is written, then StopExecution (``Lifecycle.cancel``; a failed stop is
        retried from the queue, and what it reserved is released once its call can no longer be running). The
        session idles ``end_turn``.

        An interrupt stored by an earlier request is carried on, not taken as done: that request may have failed
        after storing it (its cancel throttled, its function cut off), and then this one stops the turn.

        Returns the turn's interrupt and whether this call stopped it (False: another request interrupted it first).

        Raises:
            ConflictError: the turn idled on its own meanwhile (its interrupt is not left stored).
        """
        run = history.run
        event = UserEvent(id=event_id(run.turn, 4), type="user.interrupt", turn=run.turn, processed_at=now, body={})
        if not self.sessions.save_interrupt(run.key, event):  # stored before, by another request (maybe a failed one)
            event = _interrupt_of(self.store.load_history(run.key)) or event
        try:
            self.lifecycle.cancel(run.key, self.workflow, reason=reason, turn=run.turn)
        except ConflictError:  # the turn ended meanwhile: stopped by another interrupt, or idled on its own
            current = self.store.get_run(run.key)
            if current is not None and current.turn == run.turn and current.status is RunStatus.CANCELLED:
                return event, False  # another request's interrupt stopped it: the turn's interrupt stays
            self.sessions.delete_event(run.key, event.id)
            raise ConflictError(f"session {run.run_id} is idle: there is nothing to interrupt") from None
        return event, True


def _interrupt_of(history: RunHistory) -> UserEvent | None:
    """The interrupt stored for the session's current turn, if any."""
    wanted = event_id(history.run.turn, 4)
    return next((event for event in history.user_events if event.id == wanted), None)


def _check_size(events: list[Any]) -> None:
    """What one request sends is at most MAX_INPUT_BYTES of UTF-8 text (the items that keep it are bounded)."""
    size = sum(len(block.text.encode()) for event in events for block in getattr(event, "content", []))
    if size > MAX_INPUT_BYTES:
        raise RequestRejectedError(f"events: their text is {size} bytes of UTF-8, at most {MAX_INPUT_BYTES}")


def _public(event: UserEvent) -> dict[str, Any]:
    return {"id": event.id, "type": event.type, "processed_at": event.processed_at, **event.body}


def _revised(run: Run, session: dict[str, Any], now: str) -> Run:
    merged = {**(run.session or {}), **session, "rev": int((run.session or {}).get("rev", 0)) + 1}
    return run.model_copy(update={"session": merged, "updated_at": now})


def _with_turn(run: Run, turn: Turn, now: str) -> Run:
    """The session with its next turn started (QUEUED until intake starts its execution); the turn that ended
    keeps how it ended."""
    turns = list(run.turns)
    if turns:
        turns[-1] = turns[-1].model_copy(
            update={"ended_status": run.status, "ended_error": run.error, "ended_at": run.updated_at}
        )
    return run.model_copy(
        update={"turns": [*turns, turn], "status": RunStatus.QUEUED, "output": None, "error": None, "updated_at": now}
    )
