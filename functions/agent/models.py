"""Domain models of an agent run. Pure pydantic: no AWS, no model provider."""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, field_validator

from functions.agent.redact import redact

MAX_INPUT_CHARS = 100_000
MAX_INPUT_BYTES = 100_000  # the run item holds it; DynamoDB items are at most 400 KB
MAX_TOKENS_PER_CALL = 8_192
MAX_METADATA_BYTES = 4_096
MAX_STEPS_LIMIT = 100
MAX_RUN_USD = 1_000_000  # budgets a table can hold exactly and a person could mean
MAX_RUN_TOKENS = 10**12
MAX_ERROR_CHARS = 2_000


@dataclass(frozen=True)
class RunKey:
    """Names one run: every key, message and execution of a run is scoped by its tenant."""

    tenant: str
    run_id: str

    def __str__(self) -> str:
        return f"{self.tenant}/{self.run_id}"


def turn_of(execution_name: str) -> int:
    """The turn an execution runs (see ``Run.execution_name``): 0 for a /runs run's."""
    match = _TURN_SUFFIX.search(execution_name)
    return int(match.group(1)) if match else 0


_TURN_SUFFIX = re.compile(r"_t(\d+)$")


@dataclass(frozen=True)
class StepRef:
    """One step of one run: what the workflow passes to the step and tool functions."""

    key: RunKey
    step: int


class RunStatus(StrEnum):
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    WAITING_APPROVAL = "WAITING_APPROVAL"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    BUDGET_EXCEEDED = "BUDGET_EXCEEDED"
    TIMED_OUT = "TIMED_OUT"
    # A session's turn stopped for its client: a custom tool's result or a tool confirmation is awaited. Like
    # every status above it, it ends the turn's execution; the next user event starts the next turn.
    IDLE = "IDLE"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES = frozenset(
    {
        RunStatus.SUCCEEDED,
        RunStatus.FAILED,
        RunStatus.CANCELLED,
        RunStatus.BUDGET_EXCEEDED,
        RunStatus.TIMED_OUT,
        RunStatus.IDLE,
    }
)
"""Statuses no execution works under: a run's end, or the end of a session's turn (a session's run item goes
back to QUEUED when its next turn starts; a /runs run never does)."""


class Usage(BaseModel):
    """Token usage as the provider reports it. Total input = input + cache writes + cache reads."""

    model_config = ConfigDict(frozen=True, defer_build=True)

    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0
    # Split of cache_creation_input_tokens by TTL, when the provider reports it.
    cache_creation_1h_input_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(**{name: getattr(self, name) + getattr(other, name) for name in Usage.model_fields})

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens + self.cache_creation_input_tokens + self.cache_read_input_tokens

    def public(self) -> dict[str, int]:
        """The four fields of the HTTP contract."""
        return {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cache_creation_input_tokens": self.cache_creation_input_tokens,
            "cache_read_input_tokens": self.cache_read_input_tokens,
        }


class Budget(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)

    max_usd: float | None = Field(default=None, gt=0, le=MAX_RUN_USD, allow_inf_nan=False)
    max_steps: StrictInt = Field(default=10, ge=1, le=MAX_STEPS_LIMIT)
    max_tokens: StrictInt | None = Field(
        default=None, gt=0, le=MAX_RUN_TOKENS, description="total tokens the run may use"
    )


class RunRequest(BaseModel):
    """Body of POST /runs."""

    model_config = ConfigDict(extra="forbid", defer_build=True)

    input: str = Field(min_length=1, max_length=MAX_INPUT_CHARS)
    model: str | None = Field(default=None, min_length=1, max_length=200)
    tools: list[str] | None = Field(default=None, max_length=64)
    budget: Budget = Field(default_factory=Budget)
    metadata: dict[str, Any] = Field(default_factory=dict)
    # Calls are not streamed: the cap keeps the longest answer well inside the model call timeout.
    max_tokens_per_call: StrictInt = Field(default=1024, ge=1, le=MAX_TOKENS_PER_CALL)
    # Serve identical requests from the exact-match response cache (None: the deployment's default)
    response_cache: StrictBool | None = None
    # Models to fall back to, in order, when the chosen one's circuit is open or its retries run out
    fallbacks: list[str] | None = Field(default=None, max_length=5)

    @field_validator("input")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip() or all(unicodedata.category(c)[0] in "ZC" for c in value):
            raise ValueError("input must not be blank")  # (zero-width and control characters are blank too)
        if len(value.encode()) > MAX_INPUT_BYTES:
            raise ValueError(f"input must be at most {MAX_INPUT_BYTES} bytes of UTF-8")
        return value

    @field_validator("tools")
    @classmethod
    def _unique_tools(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and len(set(value)) != len(value):
            raise ValueError("tools must not repeat a name")
        return value

    @field_validator("metadata")
    @classmethod
    def _small_metadata(cls, value: dict[str, Any]) -> dict[str, Any]:
        if len(json.dumps(value, default=str, ensure_ascii=False).encode()) > MAX_METADATA_BYTES:
            raise ValueError(f"metadata must serialise to at most {MAX_METADATA_BYTES} bytes")
        return value


class Reservation(BaseModel):
    """Worst-case cost held against every budget while one model call of the run is in flight.

    It also pins the route: a retried step calls the same model it reserved for."""

    model_config = ConfigDict(defer_build=True)

    step: int
    amount_usd: Decimal
    day: str  # UTC day whose counters hold it
    model: str
    cheap: bool = False
    reason: str = ""

    @property
    def identity(self) -> tuple[int, str, str, Decimal]:
        """What tells two reservations apart: the step, the day and model it holds for, and the amount.

        Conditions compare these (never the whole record), so a field added later changes no condition."""
        return self.step, self.day, self.model, self.amount_usd


class Lease(BaseModel):
    """Budget a run took from its UTC day's tenant and global counters for several calls (functions/agent/ledger.py).

    Counted in both counters' ``committed_usd`` until the run spends it or gives it back; a call reserves from it
    with a write to the run item alone."""

    day: str
    usd: Decimal  # committed on the day's counters for the run and not spent yet (a call in flight is carved from it)
    tenant_limit: Decimal | None = None  # the daily limits it was taken under (None: no limit was set)
    global_limit: Decimal | None = None
    held: Reservation | None = None  # the call in flight under it (for the run's current step, else stale)


class RunError(BaseModel):
    model_config = ConfigDict(defer_build=True)
    code: str
    message: str

    @field_validator("message")
    @classmethod
    def _redacted(cls, value: str) -> str:
        """What a provider or AWS said never carries a key, a token, an ARN or an account id into a run."""
        return redact(value)[:MAX_ERROR_CHARS]


class CustomTool(BaseModel):
    """A client-executed tool: the model may call it; the session's client runs it and sends the result."""

    model_config = ConfigDict(defer_build=True)

    name: str
    description: str
    input_schema: dict[str, Any]

    def definition(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "input_schema": self.input_schema}


class McpTool(BaseModel):
    """A tool an MCP server lists, as a session's agent offers it to the model."""

    model_config = ConfigDict(defer_build=True)

    name: str
    server: str  # the agent's mcp_servers[].name
    description: str = ""
    input_schema: dict[str, Any]
    idempotent: bool = False  # the server marked it read-only or idempotent

    def definition(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "input_schema": self.input_schema}


class LambdaTool(BaseModel):
    """A tool that is a Lambda function of the deployer's: the workflow invokes it directly."""

    model_config = ConfigDict(defer_build=True)

    name: str
    description: str
    input_schema: dict[str, Any]
    function: str  # the function's ARN (or name), one the deployment allows
    idempotent: bool = False
    timeout_seconds: int = 30

    def definition(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "input_schema": self.input_schema}


class AgentConfig(BaseModel):
    """What the engine needs of a session's agent version (the session keeps the whole version too)."""

    model_config = ConfigDict(defer_build=True)

    system: str | None = None
    custom_tools: list[CustomTool] = Field(default_factory=list)
    ask: list[str] = Field(default_factory=list)  # server-side tools that need a person's confirmation
    mcp_tools: list[McpTool] = Field(default_factory=list)  # listed once per agent version (enabled ones only)
    mcp_servers: dict[str, str] = Field(default_factory=dict)  # name -> URL
    lambda_tools: list[LambdaTool] = Field(default_factory=list)

    def needs_client(self, name: str) -> bool:
        """Whether a call of ``name`` waits for the session's client (its result, or a confirmation)."""
        return name in self.ask or any(tool.name == name for tool in self.custom_tools)

    def mcp_tool(self, name: str) -> McpTool | None:
        return next((tool for tool in self.mcp_tools if tool.name == name), None)

    def lambda_tool(self, name: str) -> LambdaTool | None:
        return next((tool for tool in self.lambda_tools if tool.name == name), None)

    def definitions(self) -> list[dict[str, Any]]:
        """The definitions of the agent's own tools (MCP, Lambda, custom), after the deployment's built-ins."""
        tools: list[McpTool | LambdaTool | CustomTool] = [*self.mcp_tools, *self.lambda_tools, *self.custom_tools]
        return [tool.definition() for tool in tools]


class Turn(BaseModel):
    """One turn of a session: from the user events that started it until the session idled."""

    model_config = ConfigDict(defer_build=True)

    first_step: int
    started_at: str
    tools: list[dict[str, Any]] = Field(default_factory=list)  # approved calls it runs first: {id, name, step}
    ended_status: RunStatus | None = None  # set when the next turn starts (the current one's is the run's)
    ended_error: RunError | None = None
    ended_at: str | None = None


class Run(BaseModel):
    model_config = ConfigDict(defer_build=True)
    run_id: str
    tenant: str
    status: RunStatus
    input: str
    model: str
    tools: list[str]
    budget: Budget
    metadata: dict[str, Any] = Field(default_factory=dict)
    max_tokens_per_call: int = 1024
    completed_steps: int = 0  # also the number of the next step
    usage: Usage = Field(default_factory=Usage)
    cost_usd: Decimal = Decimal(0)
    output: str | None = None
    error: RunError | None = None
    request_hash: str | None = None
    reservation: Reservation | None = None  # held on the day counters themselves (made by an earlier version)
    lease: Lease | None = None
    cache_responses: bool | None = None  # the request's "response_cache" (None: the deployment's default)
    fallbacks: list[str] | None = None
    agent: AgentConfig | None = None  # a session's agent (None: a /runs run, with the default system prompt)
    session: dict[str, Any] | None = None  # a session's own fields (see functions/agent/sessions.py)
    turns: list[Turn] = Field(default_factory=list)  # a session's turns, oldest first (a /runs run has none)
    created_by: str | None = None  # the API key (its id) that created it; None locally without keys
    created_at: str
    updated_at: str

    @property
    def key(self) -> RunKey:
        return RunKey(self.tenant, self.run_id)

    @property
    def held(self) -> Reservation | None:
        """The reservation of the call in flight: on the day counters (an earlier version's) or under the lease."""
        if self.reservation is not None:
            return self.reservation
        lease = self.lease
        return lease.held if lease is not None and lease.held and lease.held.step == self.completed_steps else None

    @property
    def turn(self) -> int:
        """The current turn's number (1 for the first); 0 for a session with no turn yet and for /runs runs."""
        return len(self.turns)

    @property
    def turn_first_step(self) -> int:
        return self.turns[-1].first_step if self.turns else 0

    @property
    def turn_steps(self) -> int:
        """Steps taken in the current turn: what ``budget.max_steps`` limits (a /runs run has one turn)."""
        return self.completed_steps - self.turn_first_step

    @property
    def execution_name(self) -> str:
        """Its current execution's name: the run id, or for a session's turn the session id and turn number
        (so a duplicate delivery of a turn starts nothing)."""
        return f"{self.run_id}_t{self.turn}" if self.turns else self.run_id

    def public(self) -> dict[str, Any]:
        """The GET /runs/{id} body of the HTTP contract."""
        return {
            "run_id": self.run_id,
            "status": self.status.value,
            "model": self.model,
            "tools": self.tools,
            "budget": self.budget.model_dump(),
            "metadata": self.metadata,
            "steps": self.completed_steps,
            "usage": self.usage.public(),
            "cost_usd": float(self.cost_usd),
            "output": self.output,
            "error": self.error.model_dump() if self.error else None,
            "created_by": self.created_by,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }


class UserEvent(BaseModel):
    """An event a session's client sent, as stored: ``turn`` is the turn it started or belongs to."""

    model_config = ConfigDict(defer_build=True)

    id: str
    type: str
    turn: int
    processed_at: str
    body: dict[str, Any]  # the event as sent (without its type)


class ToolCall(BaseModel):
    model_config = ConfigDict(defer_build=True)
    id: str
    name: str
    input: dict[str, Any] = Field(default_factory=dict)


class ToolError(StrEnum):
    """Why a tool call produced an error result (the model sees the message; routing reads the kind)."""

    INVALID_INPUT = "invalid_input"  # the input failed the tool's schema
    REJECTED = "rejected"  # the tool refused its schema-valid input (ToolInputError)
    CRASHED = "crashed"  # the tool raised
    UNAVAILABLE = "unavailable"  # no such tool, or not allowed for this run
    RUN_ENDED = "run_ended"  # the run ended before the tool ran
    MISSING = "missing"  # no result was recorded for the call
    DENIED = "denied"  # a person denied the call (always_ask)
    CLIENT = "client"  # the session's client reported an error running its custom tool
    TIMED_OUT = "timed_out"  # the tool did not answer within its timeout
    UNKNOWN_OUTCOME = "unknown_outcome"  # a tool with side effects started but its invocation died: not repeated
    FAILED = "failed"  # the tool's server or function failed (MCP error, Lambda error, unreachable, refused host)


class ToolOutcome(BaseModel):
    model_config = ConfigDict(defer_build=True)
    tool_use_id: str
    name: str
    content: str  # what the model sees: the whole result, or a bounded view of one stored elsewhere
    is_error: bool = False
    error_kind: ToolError | None = None  # set exactly when is_error
    duration_ms: int = 0
    size: int = 0  # characters of the whole result (``content`` may be a view of it)
    stored: str | None = None  # where the whole result is kept when ``content`` is a view (a result store key)
    # False for the provisional "outcome unknown" result written before a tool with side effects runs: replaced by
    # the real one when it returns, kept (and then final) when its invocation died
    final: bool = True


class ModelRequest(BaseModel):
    model_config = ConfigDict(defer_build=True)
    model: str
    system: str | list[dict[str, Any]] | None = None  # a list of text blocks when cache breakpoints are placed
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] = Field(default_factory=list)
    max_tokens: int
    cleared_before: int = 0  # the tool results of steps below this one were cleared to fit the context window


def tool_calls_of(content: list[dict[str, Any]]) -> list[ToolCall]:
    """The tool calls of an assistant turn, in order."""
    return [
        ToolCall(id=block["id"], name=block["name"], input=block.get("input") or {})
        for block in content
        if block.get("type") == "tool_use"
    ]


class ModelResponse(BaseModel):
    model_config = ConfigDict(defer_build=True)
    content: list[dict[str, Any]]
    stop_reason: str | None
    usage: Usage
    model: str
    provider: str

    def tool_calls(self) -> list[ToolCall]:
        return tool_calls_of(self.content)

    def text(self) -> str:
        return "".join(block.get("text", "") for block in self.content if block.get("type") == "text")


class StepDecision(StrEnum):
    TOOLS = "tools"
    FINISH = "finish"
    REDO = "redo"  # a policy's cheap answer was superseded: take the step again with the strong model
    WAIT = "wait"  # the provider asked to retry after a while: wait (a Wait state), then take the step again
    ACTION = "action"  # a session's tools run, then the turn idles: some calls wait for the client


class StepRecord(BaseModel):
    """One model call of a run, as persisted. ``content`` is the assistant turn."""

    model_config = ConfigDict(defer_build=True)

    run_id: str
    step: int
    model: str
    provider: str
    stop_reason: str | None
    content: list[dict[str, Any]]
    usage: Usage
    cost_usd: Decimal
    decision: StepDecision
    status: RunStatus | None = None
    error: RunError | None = None
    requested_model: str | None = None  # the model routing asked for (``model`` is the id that served it)
    route_reason: str | None = None
    cheap: bool = False
    superseded: bool = False  # recorded and charged, but not part of the conversation
    cleared_before: int = 0  # the call's conversation had the tool results of steps below this one cleared
    started_at: str
    finished_at: str
    duration_ms: int

    def tool_calls(self) -> list[ToolCall]:
        return tool_calls_of(self.content)
