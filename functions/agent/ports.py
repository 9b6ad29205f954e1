"""Ports: what the core needs from the outside world. Adapters (functions/adapters) and the in-memory fakes
(tests/fakes) implement them; the core never imports either."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Protocol

from functions.agent.active import ActiveEntry
from functions.agent.circuit import Circuit
from functions.agent.ledger import Plan, Rejected
from functions.agent.models import (
    ModelRequest,
    ModelResponse,
    Run,
    RunKey,
    StepRecord,
    StepRef,
    ToolCall,
    ToolOutcome,
    UserEvent,
)
from functions.agent.spend import SpendRow

if TYPE_CHECKING:
    from functions.agent.agents import Agent
    from functions.agent.keys import ApiKey
    from functions.agent.streams import StreamTicket
    from functions.agent.tenants import TenantLimits
    from functions.agent.webhooks import Webhook


class ModelClient(Protocol):
    """One Messages API call.

    Raises:
        RetryableModelError: throttling, overload, 5xx, timeouts.
        FatalModelError: bad request, auth, spend limit.
    """

    provider: str

    def create(self, request: ModelRequest) -> ModelResponse: ...


class Clock(Protocol):
    def now(self) -> datetime: ...


class Toolbox(Protocol):
    """The tools a deployment offers (functions/tools implements it)."""

    @property
    def names(self) -> list[str]: ...

    def check(self, names: Iterable[str]) -> list[str]:
        """The names, in order. Raises UnknownToolError naming the unknown ones."""
        ...

    def schemas(self, names: Iterable[str]) -> list[dict[str, Any]]:
        """The tool definitions the model is given."""
        ...

    def execute(self, call: ToolCall, allowed: Iterable[str]) -> ToolOutcome:
        """Run one call. Never raises for a tool's own failure: that is an error result the model sees."""
        ...

    def idempotent(self, name: str) -> bool:
        """Whether running the tool twice for one call is safe (False: it has side effects)."""
        ...

    def in_step_seconds(self, name: str) -> float | None:
        """The longest a call of a fast tool may take (it may run inside the step that asked for it); None for a
        tool that runs in the tool function only."""
        ...


class McpCaller(Protocol):
    """Calls tools of MCP servers (functions/adapters/mcp_tools.py, over streamable HTTP with the official SDK)."""

    def call(self, url: str, name: str, arguments: dict[str, Any], *, timeout: float) -> tuple[str, bool]:
        """The tool's result as text, and whether the server reported it as an error.

        Raises:
            ToolServerError: the server was refused (host or address), unreachable, timed out or failed.
        """
        ...


class McpCatalog(Protocol):
    """The tools an agent version's MCP servers list: listed once per version, then read from a cache."""

    def tools(self, agent: Agent, server: str, url: str) -> list[dict[str, Any]]:
        """The server's tools as listed: ``{name, description, input_schema, idempotent}`` each.

        Raises:
            ToolServerError: the server was refused, unreachable or failed.
        """
        ...


class KeyStore(Protocol):
    """API keys (functions/agent/keys.py): found by their digest when a request arrives, by id for an operator."""

    def put_key(self, key: ApiKey) -> None:
        """Store (or replace, when revoked) a key under its digest and its id."""
        ...

    def key_by_digest(self, digest: str) -> ApiKey | None: ...

    def get_key(self, key_id: str) -> ApiKey | None: ...

    def list_keys(self, tenant: str | None) -> list[ApiKey]:
        """Every key, or a tenant's, oldest first."""
        ...


class WebhookStore(Protocol):
    """A tenant's webhook endpoints (functions/agent/webhooks.py), secrets included. Raises whatever the table's
    client raised (throttled, unavailable): the caller's request or delivery fails and is retried."""

    def put_webhook(self, webhook: Webhook) -> None: ...

    def get_webhook(self, tenant: str, webhook_id: str) -> Webhook | None: ...

    def list_webhooks(self, tenant: str) -> list[Webhook]: ...

    def delete_webhook(self, tenant: str, webhook_id: str) -> None: ...


class WebhookQueue(Protocol):
    """The webhooks queue: events to fan out, deliveries to make, and when a failed one is tried again. Each method
    raises whatever the queue's client raised (throttled, unavailable, a batch entry refused)."""

    def announce(self, tenant: str, event: dict[str, Any]) -> None:
        """Queue an event for the tenant's endpoints (one message)."""
        ...

    def deliver(self, tenant: str, webhook_ids: list[str], event: dict[str, Any]) -> None:
        """Queue one delivery of ``event`` per endpoint (all of them, or raise)."""
        ...

    def retry_later(self, receipt: str, seconds: int) -> None:
        """Make the delivery being handled (its message's ``receipt``) visible again only after ``seconds``."""
        ...


class WebhookSender(Protocol):
    """One signed POST (Standard Webhooks: webhook-id, webhook-timestamp, webhook-signature)."""

    def send(self, url: str, secret: str, message_id: str, event: dict[str, Any]) -> None:
        """Raises:
        WebhookDeliveryError: refused, timed out, answered other than 2xx (a redirect too: never followed), or
            an address the deployment does not allow."""
        ...


class TenantStore(Protocol):
    """Tenants' own limits (functions/agent/tenants.py) and their request counts per minute."""

    def get_limits(self, tenant: str) -> TenantLimits | None: ...

    def put_limits(self, limits: TenantLimits) -> None: ...

    def delete_limits(self, tenant: str) -> None: ...

    def list_limits(self) -> list[TenantLimits]: ...

    def count_request(self, tenant: str, window: str, limit: int, expires_at: int) -> bool:
        """Count one request in the tenant's ``window`` if fewer than ``limit`` are counted there (atomically);
        False when the window is full. The count may be dropped after ``expires_at`` (epoch seconds)."""
        ...


class TenantLimitsSource(Protocol):
    """A tenant's own limits, as functions read them (cached: functions/agent/tenants.py ``LimitsCache``)."""

    def limits(self, tenant: str) -> TenantLimits | None: ...


class ResultStore(Protocol):
    """Whole tool results too large for the table (S3): ``key`` is tenant-scoped, see functions/agent/results.py."""

    def put(self, key: str, content: str) -> None: ...

    def get(self, key: str) -> str | None: ...


@dataclass
class RunHistory:
    """Everything persisted about one run: the run item, its steps in order and its tool results."""

    run: Run
    steps: list[StepRecord] = field(default_factory=list)
    tool_results: dict[tuple[int, str], ToolOutcome] = field(default_factory=dict)
    # model answers stored before their step was settled (a settlement that must be retried)
    pending: dict[int, ModelResponse] = field(default_factory=dict)
    user_events: list[UserEvent] = field(default_factory=list)  # a session's, in the order they were stored


class RunReader(ABC):
    @abstractmethod
    def get_run(self, key: RunKey) -> Run | None:
        """The run, read consistently."""


class Runs(RunReader):
    """Runs and what happened in them. Every key is tenant-scoped."""

    @abstractmethod
    def create_run(self, run: Run) -> None:
        """Raises RunAlreadyExistsError if the run id is taken."""

    @abstractmethod
    def load_history(self, key: RunKey) -> RunHistory:
        """The run and everything under it, none of it older than the run: whatever the run's state implies (a
        turn's events and steps) is there, and items written since may be too. Raises RunNotFoundError."""

    @abstractmethod
    def get_step(self, key: RunKey, step: int) -> StepRecord | None: ...


class LedgerStore(RunReader):
    """Applies the ledger's plans (functions/agent/ledger.py): the only writes that move money or status."""

    @abstractmethod
    def apply(self, plan: Plan) -> Rejected | None:
        """Apply every part of ``plan`` if all its conditions hold, atomically; otherwise change nothing and
        return the first part (record, run, counters, in that order) whose condition failed.

        Raises:
            StoreConflictError: concurrent writes kept winning one of the items.
        """

    @abstractmethod
    def committed(self, tenant: str, day: str) -> tuple[Decimal, Decimal]:
        """Spent plus reserved USD on ``day``: (the tenant's, everyone's)."""

    @abstractmethod
    def save_pending(self, key: RunKey, step: int, response: ModelResponse) -> None:
        """Store the model's answer before settling it, so a failed settlement never loses a billed call."""


class SpendRows(ABC):
    @abstractmethod
    def spend_rows(self, tenant: str, first_day: str, last_day: str) -> list[SpendRow]:
        """The tenant's spend counters for the days in [first_day, last_day]: day, day x model, day x run."""


class ToolResults(ABC):
    @abstractmethod
    def load_tool_context(
        self, ref: StepRef, tool_use_id: str
    ) -> tuple[Run | None, StepRecord | None, ToolOutcome | None]:
        """The run, the step that asked for the tool and the stored result if any, in one read."""

    @abstractmethod
    def save_tool_result(self, ref: StepRef, outcome: ToolOutcome) -> ToolOutcome:
        """Store a tool result once (replacing a provisional one); returns the final one if it already existed."""

    @abstractmethod
    def claim_tool(self, ref: StepRef, provisional: ToolOutcome) -> ToolOutcome | None:
        """Store ``provisional`` (``final`` False) if the call has no result yet and return None; else the stored
        result (final or provisional), which means the call was already started."""


class ActiveRuns(ABC):
    @abstractmethod
    def list_active(self, shard: int, *, tenant: str | None, limit: int, after: str | None) -> list[ActiveEntry]:
        """Up to ``limit`` entries of the index of active work (functions/agent/active.py) in ``shard``, only
        ``tenant``'s if given, whose key sorts after ``after``, in key order. The index is eventually consistent
        on DynamoDB (a run that ended a moment ago may still be listed; the cancel that reads it finds it ended)."""


class RunStore(Runs, LedgerStore, SpendRows, ToolResults, ActiveRuns, ABC):
    """Everything above, on one table (the DynamoDB adapter and the in-memory fake implement it whole)."""


class ResponseCache(Protocol):
    """Answers stored by the exact-match key of their request (tenant-scoped, expiring)."""

    def get(self, tenant: str, key: str) -> ModelResponse | None: ...

    def put(self, tenant: str, key: str, response: ModelResponse) -> None: ...


class RunQueue(Protocol):
    """The intake queue between the API and the workflow."""

    def enqueue(self, key: RunKey) -> None: ...

    def schedule_release(self, key: RunKey, step: int) -> None:
        """Release the step's reservation later, once its model call cannot still be in flight."""
        ...

    def schedule_watch(self, key: RunKey, *, turn: int = 0) -> None:
        """Check the run (a session: that turn) again later: it must be moving (its execution running) or have
        ended."""
        ...

    def schedule_stop(self, key: RunKey, execution: str, reason: str, *, why: str) -> None:
        """Stop the execution soon, from the queue (retried until it is done): a cancel whose stop failed
        (``why``: how it failed, for the operator)."""
        ...


class Workflow(Protocol):
    """The durable workflow that drives a run: one execution per run (or per session turn), named by
    ``Run.execution_name``."""

    def start(self, key: RunKey, *, name: str, state: dict[str, Any]) -> bool:
        """Start the execution ``name`` with the input ``state``; False if one with this name already exists
        (duplicate delivery)."""
        ...

    def stop(self, name: str, reason: str) -> None:
        """Stop the execution if it exists and is running."""
        ...

    def status(self, name: str) -> str | None:
        """The execution's status (RUNNING, SUCCEEDED, FAILED, TIMED_OUT, ABORTED), or None if there is none."""
        ...


class AgentStore(Protocol):
    """Agent versions, tenant-scoped (functions/agent/agents.py)."""

    def create_agent(self, agent: Agent) -> None: ...

    def get_agent(self, tenant: str, agent_id: str, version: int | None) -> Agent | None:
        """The version, or the current one (with its archived_at) when ``version`` is None."""
        ...

    def put_version(self, agent: Agent, *, expected: int) -> bool:
        """Store the next version if ``expected`` is still the current one; False otherwise."""
        ...

    def archive_agent(self, agent: Agent) -> bool:
        """Store the archived version if it is still the current one; False otherwise."""
        ...

    def list_agents(
        self, tenant: str, *, limit: int, after: str | None, include_archived: bool
    ) -> tuple[list[Agent], str | None]:
        """Newest first; the cursor of the next page, if there is one."""
        ...

    def list_versions(
        self, tenant: str, agent_id: str, *, limit: int, after: str | None
    ) -> tuple[list[Agent], str | None]:
        """Newest version first."""
        ...


class SessionStore(Protocol):
    """Sessions are runs with a ``session`` (their items live with the run's); these are the writes only
    sessions make, each conditional on the session being as it was read."""

    def create_session(self, run: Run, events: list[UserEvent]) -> None: ...

    def save_session(
        self,
        run: Run,
        *,
        read: Run,
        events: list[UserEvent],
        results: list[tuple[StepRef, ToolOutcome]],
        discard_pending: int | None = None,
    ) -> bool:
        """Replace the idle session ``read`` with ``run`` and store the events and tool results, atomically
        (dropping a model answer stored for step ``discard_pending``); False if the session changed since it
        was read (nothing is written then)."""
        ...

    def save_interrupt(self, key: RunKey, event: UserEvent) -> bool:
        """Store a running turn's interrupt; False if it has one already."""
        ...

    def delete_event(self, key: RunKey, event_id: str) -> None: ...

    def list_sessions(
        self, tenant: str, *, limit: int, after: str | None, agent_id: str | None, include_archived: bool
    ) -> tuple[list[Run], str | None]:
        """Newest first; the cursor of the next page, if there is one."""
        ...

    def delete_session(self, key: RunKey) -> None:
        """Delete the session and everything stored under it."""
        ...


class CircuitStore(Protocol):
    """Circuit states shared by every Lambda."""

    def load(self, key: str) -> Circuit:
        """The stored circuit, or a closed one with version 0."""
        ...

    def save(self, circuit: Circuit) -> bool:
        """Store ``circuit`` (version + 1) if the stored version is still ``circuit.version``; False otherwise."""
        ...


class TicketStore(Protocol):
    """Stream tickets (functions/agent/streams.py), kept by their digest until used or expired."""

    def put_ticket(self, digest: str, ticket: StreamTicket) -> None: ...

    def take_ticket(self, digest: str) -> StreamTicket | None:
        """The ticket, removed in the same call (atomically: two callers never both get it); None if there is none."""
        ...
