"""The cost model of bench/orchestration.py: counts in, list prices out. Pure arithmetic, no I/O but the price file.

Every price comes from ``functions/agent/data/aws_prices.json`` (AWS) and ``functions/agent/data/pricing.json``
(the model's tokens); nothing here hard-codes one. What is assumed rather than priced (latencies, the vCPU and
memory of an AgentCore session, the operations a durable function checkpoints) is named in the constants below
and printed with the figures.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

ROOT = Path(__file__).resolve().parents[1]
PRICES_FILE = ROOT / "functions" / "agent" / "data" / "aws_prices.json"
LAMBDA_MAX_SECONDS = 900  # one Lambda invocation runs at most 15 minutes
FULL_VCPU_MB = 1769  # Lambda gives a function CPU in proportion to its memory: one vCPU at 1,769 MB
REFERENCE_MODEL = "claude-sonnet-5-5"
REFERENCE_TOKENS = (5000, 300)  # "a Sonnet step": 5,000 tokens in, 300 out


class Price(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    usd: float = Field(ge=0, allow_inf_nan=False)
    unit: str = Field(min_length=1)
    source: str = Field(min_length=1)
    as_of: str = Field(pattern=r"^\d{4}-\d{2}-\d{2}$")


class AwsPrices(BaseModel):
    """The price file. ``usd(name)`` is the only way the bench reads a price, so each one it uses is in the file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: str
    currency: str = Field(pattern="^USD$")
    region: str
    notes: str
    prices: dict[str, Price]

    def usd(self, name: str) -> float:
        try:
            return self.prices[name].usd
        except KeyError:
            known = ", ".join(sorted(self.prices))
            raise KeyError(f"no price {name!r} in {PRICES_FILE.name} (it has: {known})") from None


def load_prices(path: Path = PRICES_FILE) -> AwsPrices:
    return AwsPrices.model_validate_json(path.read_text())


def reference_step_usd() -> float:
    """What one Sonnet step's tokens cost, priced from pricing.json (the yardstick of the orchestration's share)."""
    from decimal import Decimal

    from functions.agent.models import Usage
    from functions.agent.pricing import default_price_book

    tokens_in, tokens_out = REFERENCE_TOKENS
    cost: Decimal = default_price_book().cost(REFERENCE_MODEL, Usage(input_tokens=tokens_in, output_tokens=tokens_out))
    return float(cost)


# ------------------------------------------------------------------------------------------ counts


@dataclass(frozen=True)
class LambdaUse:
    """Invocations of one function: how many, at what memory, for how many billed milliseconds in all."""

    memory_mb: int
    invocations: float
    billed_ms: float


@dataclass(frozen=True)
class Counts:
    """What some unit of work (a tool step, a session) does on AWS, by billable item."""

    transitions: float = 0.0
    lambdas: tuple[LambdaUse, ...] = ()
    rru: float = 0.0
    wru: float = 0.0
    sqs_requests: float = 0.0
    api_requests: float = 0.0


def billed_ms(seconds: float) -> int:
    """Lambda bills duration per 1 ms, rounded up."""
    return math.ceil(round(seconds * 1000, 6))


def lambda_usd(prices: AwsPrices, use: LambdaUse) -> float:
    gb_seconds = use.memory_mb / 1024 * use.billed_ms / 1000
    return use.invocations * prices.usd("lambda_request") + gb_seconds * prices.usd("lambda_arm_gb_second")


@dataclass(frozen=True)
class Bill:
    """A cost by item, in USD."""

    items: dict[str, float] = field(default_factory=dict)

    @property
    def total(self) -> float:
        return sum(self.items.values())


def stepwise_bill(prices: AwsPrices, counts: Counts) -> Bill:
    return Bill({
        "Step Functions transitions": counts.transitions * prices.usd("stepfunctions_standard_transition"),
        "Lambda": sum(lambda_usd(prices, use) for use in counts.lambdas),
        "DynamoDB": counts.wru * prices.usd("dynamodb_write_request_unit")
        + counts.rru * prices.usd("dynamodb_read_request_unit"),
        "SQS": counts.sqs_requests * prices.usd("sqs_request"),
        "HTTP API": counts.api_requests * prices.usd("http_api_request"),
    })  # fmt: skip


def waiting_usd(prices: AwsPrices, memory_mb: int, seconds: float) -> float:
    """What a Lambda of ``memory_mb`` costs while it waits ``seconds`` (on the model)."""
    return memory_mb / 1024 * seconds * prices.usd("lambda_arm_gb_second")


# ------------------------------------------------------------------------------------------ the alternatives


def naive_loop_usd(prices: AwsPrices, memory_mb: int, steps: int, model_seconds: float) -> float | None:
    """One Lambda invocation that loops the model calls and runs the tools in process, no durability: one request and
    its GB-s while it waits on the model (its own compute is left out, which favours it). None when the session
    would outlast one invocation (15 minutes): a naive loop cannot run it."""
    seconds = steps * model_seconds
    if seconds > LAMBDA_MAX_SECONDS:
        return None
    return lambda_usd(prices, LambdaUse(memory_mb, 1, billed_ms(seconds)))


@dataclass(frozen=True)
class DurableAssumptions:
    """Lambda durable functions: one checkpointed operation per model call and per tool call (each a durable step),
    plus one for the execution; compute billed as any Lambda while the function runs, i.e. while it waits on the
    model; one more invocation (and its request) each time 15 minutes run out (the replay is left out)."""

    operations_per_model_call: int = 1
    operations_per_tool_call: int = 1
    operations_per_execution: int = 1

    def describe(self) -> str:
        return (
            f"{self.operations_per_model_call} operation per model call, {self.operations_per_tool_call} per tool "
            f"call, {self.operations_per_execution} per execution, plus compute while it waits on the model"
        )


DURABLE = DurableAssumptions()


def durable_usd(
    prices: AwsPrices, memory_mb: int, steps: int, tool_calls: int, model_seconds: float, compute_seconds: float,
    assumptions: DurableAssumptions = DURABLE,
) -> float:  # fmt: skip
    """``compute_seconds``: the function's own compute per step (building the request, running the tool)."""
    seconds = steps * (model_seconds + compute_seconds)
    invocations = max(1, math.ceil(seconds / LAMBDA_MAX_SECONDS))
    operations = (
        steps * assumptions.operations_per_model_call
        + tool_calls * assumptions.operations_per_tool_call
        + assumptions.operations_per_execution
    )
    compute = lambda_usd(prices, LambdaUse(memory_mb, invocations, billed_ms(seconds)))
    return compute + operations * prices.usd("lambda_durable_operation")


@dataclass(frozen=True)
class AgentCoreAssumptions:
    """AgentCore Runtime: the session's vCPUs billed only while it computes (not while it waits on the model's I/O),
    its memory billed from the first call to the answer (the idle timeout after it, up to 15 minutes, left out)."""

    vcpus: float = 1.0
    memory_gb: float = 1.0

    def describe(self) -> str:
        return (
            f"{self.vcpus:g} vCPU billed only while computing (the measured own CPU time of a step and its tool), "
            f"{self.memory_gb:g} GB billed throughout the session"
        )


AGENTCORE = AgentCoreAssumptions()


def agentcore_usd(
    prices: AwsPrices, steps: int, model_seconds: float, compute_seconds: float,
    assumptions: AgentCoreAssumptions = AGENTCORE,
) -> float:  # fmt: skip
    """``compute_seconds``: CPU time per step at one full vCPU."""
    active_hours = steps * compute_seconds / 3600
    session_hours = steps * (model_seconds + compute_seconds) / 3600
    cpu = assumptions.vcpus * active_hours * prices.usd("agentcore_runtime_vcpu_hour")
    return cpu + assumptions.memory_gb * session_hours * prices.usd("agentcore_runtime_gb_hour")


# ------------------------------------------------------------------------------------------ latency


@dataclass(frozen=True)
class AwsLatency:
    """Assumed service latencies in us-east-1, in ms: orders of magnitude, not measured here (no published SLA
    gives them). A deployment's X-Ray traces (the functions are traced) give the real figures."""

    transition_ms: float = 20.0  # a Standard state transition, Choice states included
    invoke_ms: float = 20.0  # a warm Lambda invoke from a Step Functions task, beyond the handler's own time
    read_ms: float = 5.0  # GetItem / Query / BatchGetItem ("single-digit milliseconds", DynamoDB's product page)
    write_ms: float = 8.0  # PutItem / UpdateItem / DeleteItem
    transaction_ms: float = 20.0  # TransactWriteItems / TransactGetItems (two phases)
    other_ms: float = 15.0  # any other AWS call (SQS, Step Functions, S3)

    def describe(self) -> str:
        return (
            f"state transition {self.transition_ms:g} ms, Lambda invoke {self.invoke_ms:g} ms beyond the handler, "
            f"DynamoDB read {self.read_ms:g} ms, write {self.write_ms:g} ms, transaction {self.transaction_ms:g} "
            f"ms, other AWS calls {self.other_ms:g} ms (orders of magnitude: DynamoDB's single-digit ms reads; "
            "no published figure for the others; a deployment's X-Ray traces give them)"
        )

    def call_ms(self, service: str, operation: str) -> float:
        if service != "dynamodb":
            return self.other_ms
        if operation.startswith("Transact"):
            return self.transaction_ms
        if operation in ("PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem"):
            return self.write_ms
        return self.read_ms


LATENCY = AwsLatency()


def cpu_scaled(seconds: float, memory_mb: int) -> float:
    """CPU-bound time measured on one full core, at the CPU share Lambda gives ``memory_mb`` (below 1,769 MB)."""
    return seconds * max(1.0, FULL_VCPU_MB / memory_mb)
