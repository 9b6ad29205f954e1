"""Domain models of an agent run. Pure pydantic: no AWS, no model provider."""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictInt, field_validator

MAX_INPUT_CHARS = 100_000
MAX_INPUT_BYTES = 100_000  # the run item holds it; DynamoDB items are at most 400 KB
MAX_TOKENS_PER_CALL = 8_192
MAX_METADATA_BYTES = 4_096
MAX_STEPS_LIMIT = 100


@dataclass(frozen=True)
class RunKey:
    """Names one run: every key, message and execution of a run is scoped by its tenant."""

    tenant: str
    run_id: str

    def __str__(self) -> str:
        return f"{self.tenant}/{self.run_id}"


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

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES = frozenset(
    {RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.BUDGET_EXCEEDED, RunStatus.TIMED_OUT}
)


class Usage(BaseModel):
    """Token usage as the provider reports it. Total input = input + cache writes + cache reads."""

    model_config = ConfigDict(frozen=True)

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
    model_config = ConfigDict(extra="forbid")

    max_usd: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    max_steps: StrictInt = Field(default=10, ge=1, le=MAX_STEPS_LIMIT)
    max_tokens: StrictInt | None = Field(default=None, gt=0, description="total tokens the run may use")


class RunRequest(BaseModel):
    """Body of POST /runs."""

    model_config = ConfigDict(extra="forbid")

    input: str = Field(min_length=1, max_length=MAX_INPUT_CHARS)
    model: str | None = Field(default=None, min_length=1, max_length=200)
    tools: list[str] | None = Field(default=None, max_length=64)
    budget: Budget = Field(default_factory=Budget)
    metadata: dict[str, Any] = Field(default_factory=dict)
    # Calls are not streamed: the cap keeps the longest answer well inside the model call timeout.
    max_tokens_per_call: StrictInt = Field(default=1024, ge=1, le=MAX_TOKENS_PER_CALL)
    # Serve identical requests from the exact-match response cache (None: the deployment's default)
    response_cache: bool | None = None
    # Models to fall back to, in order, when the chosen one's circuit is open or its retries run out
    fallbacks: list[str] | None = Field(default=None, max_length=5)

    @field_validator("input")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("input must not be blank")
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


class RunError(BaseModel):
    code: str
    message: str


class Run(BaseModel):
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
    reservation: Reservation | None = None
    cache_responses: bool | None = None  # the request's "response_cache" (None: the deployment's default)
    fallbacks: list[str] | None = None
    created_at: str
    updated_at: str

    @property
    def key(self) -> RunKey:
        return RunKey(self.tenant, self.run_id)

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
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }


class ToolCall(BaseModel):
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


class ToolOutcome(BaseModel):
    tool_use_id: str
    name: str
    content: str
    is_error: bool = False
    error_kind: ToolError | None = None  # set exactly when is_error
    duration_ms: int = 0


class ModelRequest(BaseModel):
    model: str
    system: str | list[dict[str, Any]] | None = None  # a list of text blocks when cache breakpoints are placed
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] = Field(default_factory=list)
    max_tokens: int


class ModelResponse(BaseModel):
    content: list[dict[str, Any]]
    stop_reason: str | None
    usage: Usage
    model: str
    provider: str

    def tool_calls(self) -> list[ToolCall]:
        return [
            ToolCall(id=block["id"], name=block["name"], input=block.get("input") or {})
            for block in self.content
            if block.get("type") == "tool_use"
        ]

    def text(self) -> str:
        return "".join(block.get("text", "") for block in self.content if block.get("type") == "text")


class StepDecision(StrEnum):
    TOOLS = "tools"
    FINISH = "finish"
    REDO = "redo"  # a policy's cheap answer was superseded: take the step again with the strong model
    WAIT = "wait"  # the provider asked to retry after a while: wait (a Wait state), then take the step again


class StepRecord(BaseModel):
    """One model call of a run, as persisted. ``content`` is the assistant turn."""

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
    started_at: str
    finished_at: str
    duration_ms: int

    def tool_calls(self) -> list[ToolCall]:
        return ModelResponse(
            content=self.content,
            stop_reason=self.stop_reason,
            usage=self.usage,
            model=self.model,
            provider=self.provider,
        ).tool_calls()
