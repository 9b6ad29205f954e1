"""Builds the real adapters and the use cases from a function's settings, once per Lambda container.

Each factory takes the narrowest settings group it reads, so a handler can only build what its settings
model holds (mypy checks it). Handlers call these on their first invocation, never at import, so tests can
set the environment first; ``reset`` forgets everything built.
"""

from __future__ import annotations

import sys
import time
import uuid
from functools import cache, lru_cache
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config

from functions.adapters import settings as settings_module
from functions.adapters.aws import SqsRunQueue, StepFunctionsWorkflow, SystemClock
from functions.adapters.dynamodb_history import HistoryCache
from functions.adapters.dynamodb_store import DynamoDBRunStore
from functions.adapters.dynamodb_tenants import DynamoDBTenantStore
from functions.adapters.settings import (
    ApiSettings,
    BudgetSettings,
    CachingSettings,
    EgressSettings,
    IntakeSettings,
    ModelSettings,
    PricingSettings,
    QueueSettings,
    ResultSettings,
    Settings,
    StepSettings,
    StopSettings,
    ToolAccessSettings,
    ToolSettings,
    WebhookSettings,
    WebhooksSettings,
    WorkflowSettings,
)
from functions.agent.keys import ApiKeys
from functions.agent.lifecycle import Lifecycle
from functions.agent.ports import McpCatalog, ModelClient
from functions.agent.pricing import PriceBook, default_price_book, parse_extra_prices
from functions.agent.tenants import LimitsCache, RateLimiter, Tenants

# What only some functions use is imported where it is built (the api and intake functions never build a step runner,
# a breaker or a tool runner): each function's cold start imports what it runs.
if TYPE_CHECKING:
    from aws_lambda_powertools import Tracer

    from functions.adapters.dynamodb_response_cache import DynamoDBResponseCache
    from functions.adapters.dynamodb_sessions import DynamoDBSessionStore
    from functions.adapters.dynamodb_webhooks import DynamoDBWebhookStore
    from functions.adapters.mcp_tools import McpClient
    from functions.adapters.s3_results import S3ResultStore
    from functions.agent.agents import Agents, LambdaFunction
    from functions.agent.breaker import Breaker
    from functions.agent.intake import Intake
    from functions.agent.killswitch import KillSwitch
    from functions.agent.ledger import BudgetLimits
    from functions.agent.sessions import Sessions
    from functions.agent.step import StepRunner
    from functions.agent.step_loop import StepLoop
    from functions.agent.streams import Tickets
    from functions.agent.submit import Submitter
    from functions.agent.tool import ToolRunner
    from functions.agent.webhooks import Deliveries, Endpoints, WebhookNotifier, Webhooks
    from functions.tools import Tool, ToolRegistry
    from functions.tools.egress import Egress

_BOTO_CONFIG = Config(retries={"mode": "standard", "max_attempts": 3}, connect_timeout=5, read_timeout=10)
# announcing a run's end to the webhooks queue: one quick try and one retry, so an SQS outage costs a function that
# ends runs (Finalize: 15 s) a few seconds at most, never its run
_ANNOUNCE_CONFIG = Config(retries={"mode": "standard", "max_attempts": 2}, connect_timeout=1, read_timeout=2)
CLOCK = SystemClock()
HISTORY = HistoryCache()  # the runs' histories this container has read (the step function's)


@cache
def aws_client(service: str) -> Any:
    return boto3.client(service, config=_BOTO_CONFIG)


# ------------------------------------------------------------------------------------------- adapters


@cache
def store(settings: Settings) -> DynamoDBRunStore:
    return DynamoDBRunStore(settings.table_name, aws_client("dynamodb"))


@cache
def step_store(settings: Settings) -> DynamoDBRunStore:
    """The step function's store: it keeps what it read of each run (``HISTORY``), so a step reads only what
    changed since this container's last step of the run, and the daily spend for a few seconds
    (functions/adapters/dynamodb_step_store.py)."""
    from functions.adapters.dynamodb_step_store import StepRunStore

    return StepRunStore(settings.table_name, aws_client("dynamodb"), history=HISTORY)


@cache
def queue(settings: QueueSettings) -> SqsRunQueue:
    return SqsRunQueue(
        settings.queue_url, aws_client("sqs"), settings.release_delay_seconds, settings.watch_delay_seconds
    )


@cache
def workflow(settings: WorkflowSettings) -> StepFunctionsWorkflow:
    return StepFunctionsWorkflow(settings.state_machine_arn, aws_client("stepfunctions"))


@cache
def registry() -> ToolRegistry:
    """The built-ins and the deployer's own tools (the tools/ package beside app.py)."""
    from functions.tools import ToolRegistry, builtin_registry

    return ToolRegistry([*builtin_registry(CLOCK.now).tools, *deployer_tools()])


def deployer_tools() -> list[Tool]:
    """The deployer's own tools (functions/tools/registry.py)."""
    from functions.tools.registry import deployer_tools as found

    return found()


@cache
def results(settings: ResultSettings) -> S3ResultStore:
    from functions.adapters.s3_results import S3ResultStore

    return S3ResultStore(settings.results_bucket, aws_client("s3"))


@cache
def egress(settings: EgressSettings) -> Egress:
    from functions.tools.egress import Egress

    return Egress.parse(settings.egress_allow_addresses)


@cache
def lambda_functions(settings: ToolAccessSettings) -> list[LambdaFunction]:
    from functions.agent.agents import LAMBDA_FUNCTIONS

    return LAMBDA_FUNCTIONS.validate_json(settings.lambda_tools) if settings.lambda_tools else []


@cache
def mcp_client(settings: ToolAccessSettings) -> McpClient:
    """Credentials are read from Secrets Manager at most every 5 minutes (powertools caches them)."""
    from aws_lambda_powertools.utilities.parameters import get_secret

    from functions.adapters.mcp_tools import McpAccess, McpClient, parse_servers

    access = McpAccess(parse_servers(settings.mcp_servers), egress(settings),
                       secret=lambda name: str(get_secret(name, max_age=300)))  # fmt: skip
    return McpClient(access)


@cache
def api_keys(settings: Settings) -> ApiKeys:
    from functions.adapters.dynamodb_keys import DynamoDBKeyStore

    return ApiKeys(store=DynamoDBKeyStore(settings.table_name, aws_client("dynamodb")), clock=CLOCK)


@cache
def tickets(settings: Settings) -> Tickets:
    """Stream tickets: the api function issues them, the stream function takes them."""
    from functions.adapters.dynamodb_tickets import DynamoDBTicketStore
    from functions.agent.streams import Tickets

    return Tickets(store=DynamoDBTicketStore(settings.table_name, aws_client("dynamodb")), clock=CLOCK)


@cache
def tenant_store(settings: Settings) -> DynamoDBTenantStore:
    return DynamoDBTenantStore(settings.table_name, aws_client("dynamodb"))


@cache
def tenant_limits(settings: Settings) -> LimitsCache:
    """Tenants' own limits, read at most every LIMITS_CACHE_SECONDS per container."""
    return LimitsCache(tenant_store(settings))


@cache
def tenants(settings: Settings) -> Tenants:
    return Tenants(store=tenant_store(settings), clock=CLOCK)


@cache
def rate_limiter(settings: ApiSettings) -> RateLimiter:
    return RateLimiter(
        store=tenant_store(settings), limits=tenant_limits(settings), clock=CLOCK,
        default=settings.tenant_requests_per_minute,
    )  # fmt: skip


def forget_tenant_limits() -> None:
    """Drop every container-cached tenant limit (the local stack: an operator's change applies at once)."""
    tenant_limits.cache_clear()
    rate_limiter.cache_clear()


def tool_runner(settings: ToolSettings, tracer: Tracer | None = None) -> ToolRunner:
    """With the function's ``tracer`` (on), each tool call is a subsegment of its trace (adapters/tracing.py)."""
    from functions.adapters.tracing import traced_tools
    from functions.agent.tool import ToolRunner

    toolbox, mcp = traced_tools(registry(), mcp_client(settings) if settings.mcp_servers else None, tracer)
    return ToolRunner(
        store=store(settings),
        toolbox=toolbox,
        mcp=mcp,
        results=results(settings),
        clock=CLOCK,
    )


@cache
def prices(settings: PricingSettings) -> PriceBook:
    """The pricing file, plus any prices configured at deploy time."""
    extra = settings.extra_prices
    return default_price_book().with_extra(parse_extra_prices(extra)) if extra else default_price_book()


def providers(settings: PricingSettings) -> frozenset[str]:
    """The model providers this deployment can call (a run naming a model of another is refused)."""
    return frozenset({"anthropic", "bedrock"} if settings.bedrock_fallback else {"anthropic"})


def limits(settings: BudgetSettings) -> BudgetLimits:
    from functions.agent.ledger import BudgetLimits

    return BudgetLimits(
        tenant_daily_usd=settings.tenant_daily_budget_usd, global_daily_usd=settings.global_daily_budget_usd
    )


@cache
def response_cache(settings: CachingSettings) -> DynamoDBResponseCache:
    from functions.adapters.dynamodb_response_cache import DynamoDBResponseCache

    return DynamoDBResponseCache(
        settings.table_name, aws_client("dynamodb"), CLOCK, ttl_seconds=settings.response_cache_ttl_seconds
    )


@cache
def breaker(settings: StepSettings) -> Breaker:
    """The breaker of this container (its circuits' states are shared through the table; one read closed is not
    read again for CLOSED_FRESH_SECONDS; a probe that has not reported within a call's timeout and a margin never
    will)."""
    from functions.adapters.dynamodb_circuits import DynamoDBCircuitStore
    from functions.agent.breaker import CLOSED_FRESH_SECONDS, PROBE_REPORT_MARGIN_SECONDS, Breaker
    from functions.agent.circuit import CircuitConfig

    config = CircuitConfig(
        failure_threshold=settings.circuit_failure_threshold,
        window_seconds=settings.circuit_window_seconds,
        cooldown_seconds=settings.circuit_cooldown_seconds,
        probe_timeout_seconds=settings.model_timeout_seconds + PROBE_REPORT_MARGIN_SECONDS,
    )
    circuits = DynamoDBCircuitStore(settings.table_name, aws_client("dynamodb"))
    return Breaker(circuits, config, now=lambda: CLOCK.now().timestamp(), closed_fresh_seconds=CLOSED_FRESH_SECONDS)


def new_run_id() -> str:
    return "run_" + uuid.uuid4().hex[:26]


def _time_ordered(prefix: str) -> str:
    """A prefix, 12 hex digits of milliseconds, 14 random: ids sort by creation time."""
    return f"{prefix}{int(time.time() * 1000):012x}{uuid.uuid4().hex[:14]}"


def new_agent_id() -> str:
    return _time_ordered("agent_")


def new_session_id() -> str:
    return _time_ordered("sesn_")


def model(settings: ModelSettings) -> ModelClient:
    """The model client: the real API, or the labelled offline stub (local stack, no key).

    The key is read from Secrets Manager at most every 5 minutes (powertools caches it), so a key put or
    rotated after deploy reaches warm containers without a redeploy.
    """
    if settings.model_provider == "stub" or (settings.model_provider == "auto" and not settings.anthropic_api_key):
        return _stub()
    api_key = settings.anthropic_api_key
    if not api_key and settings.anthropic_secret_arn:
        from aws_lambda_powertools.utilities.parameters import get_secret

        api_key = str(get_secret(settings.anthropic_secret_arn, max_age=300)).strip()
    if not api_key:
        raise RuntimeError("no Anthropic API key: set ANTHROPIC_API_KEY or STEPWISE_ANTHROPIC_SECRET_ARN")
    if settings.bedrock_fallback:
        return _providers(api_key, settings.model_timeout_seconds, settings)
    return _anthropic(api_key, settings.model_timeout_seconds)


@lru_cache(maxsize=2)
def _providers(api_key: str, timeout_seconds: float, settings: PricingSettings) -> ModelClient:
    from functions.adapters.bedrock_model import BedrockModel, ProviderModels

    bedrock = boto3.client(
        "bedrock-runtime",
        config=Config(retries={"mode": "standard", "max_attempts": 1}, read_timeout=timeout_seconds),
    )
    book = prices(settings)
    return ProviderModels(
        provider_of=lambda name: book.price(name).provider,
        clients={"anthropic": _anthropic(api_key, timeout_seconds), "bedrock": BedrockModel(bedrock)},
    )


@cache
def _stub() -> ModelClient:
    from functions.adapters.stub_model import OfflineStubModel

    return OfflineStubModel()


@lru_cache(maxsize=2)
def _anthropic(api_key: str, timeout_seconds: float) -> ModelClient:
    from functions.adapters.anthropic_model import AnthropicModel  # ~650 ms of imports, only where needed

    return AnthropicModel.create_client(api_key=api_key, timeout_seconds=timeout_seconds)


# ------------------------------------------------------------------------------------------- use cases


@cache
def submitter(settings: ApiSettings) -> Submitter:
    from functions.agent.submit import SubmitConfig, Submitter

    config = SubmitConfig(default_model=settings.default_model, providers=providers(settings))
    return Submitter(
        store=store(settings),
        queue=queue(settings),
        toolbox=registry(),
        prices=prices(settings),
        clock=CLOCK,
        new_id=new_run_id,
        config=config,
        notifier=notifier(settings),
    )


def step_runner(settings: StepSettings, tracer: Tracer | None = None) -> StepRunner:
    """Assembled per invocation from adapters built once: the model client is resolved on every invocation,
    so an API key put or rotated after deploy reaches warm containers (see ``model``). With the function's
    ``tracer`` (on), the model call and each fast tool call it runs are subsegments of its trace
    (adapters/tracing.py). Its ToolRunner runs only fast tools (never MCP: no MCP client here)."""
    from functions.adapters.tracing import traced_model, traced_tools
    from functions.agent.step import StepConfig, StepRunner
    from functions.agent.tool import ToolRunner

    ttl = settings.prompt_cache_ttl
    config = StepConfig(
        limits=limits(settings),
        prompt_cache_ttl=None if ttl == "off" else ttl,
        cache_responses_by_default=settings.response_cache_by_default,
    )
    toolbox, _ = traced_tools(registry(), None, tracer)
    return StepRunner(
        store=step_store(settings),
        model=traced_model(model(settings), tracer),
        toolbox=toolbox,
        prices=prices(settings),
        clock=CLOCK,
        config=config,
        response_cache=response_cache(settings),
        breaker=breaker(settings),
        tenant_limits=tenant_limits(settings),
        tools=ToolRunner(store=store(settings), toolbox=toolbox, results=results(settings), clock=CLOCK),
    )


def step_loop(settings: StepSettings) -> StepLoop:
    """How many steps one step invocation may take in a row (functions/agent/step_loop.py)."""
    from functions.agent.step_loop import StepLoop

    return StepLoop(max_steps=settings.step_loop_steps, max_seconds=settings.step_loop_seconds,
                    call_seconds=settings.model_timeout_seconds)  # fmt: skip


def prepare_step(settings: StepSettings) -> None:
    """What ``step_runner`` builds that makes no AWS call, built ahead (the step function's init on Lambda,
    functions/handlers/warmup.py): the adapters, the tools and the prices, and the model SDK imported, all but the
    model client (its key may be a secret, read on the first call); and the models (built on first use otherwise) a
    step validates."""
    if settings.model_provider != "stub":
        from functions.adapters import anthropic_model  # noqa: F401  (the step's largest import: the anthropic SDK)
    from functions.adapters import tracing  # noqa: F401
    from functions.agent import models, step, tool  # noqa: F401
    from functions.agent.circuit import Circuit
    from functions.agent.ledger import BudgetLimits

    for build in (step_store, store, results, response_cache, breaker, tenant_limits):
        build(settings)
    prices(settings)
    registry()
    for model in (models.Run, models.StepRecord, models.ModelRequest, models.ModelResponse, models.Reservation,
                  models.ToolOutcome, Circuit, BudgetLimits):  # fmt: skip
        model.model_rebuild()


# Agents and sessions are imported on first use: only the api function has them, and /runs requests never do.


@cache
def session_store(settings: Settings) -> DynamoDBSessionStore:
    from functions.adapters.dynamodb_sessions import DynamoDBSessionStore

    return DynamoDBSessionStore(settings.table_name, aws_client("dynamodb"))


@cache
def agents(settings: ApiSettings) -> Agents:
    from functions.agent.agents import Agents

    return Agents(
        store=session_store(settings),
        clock=CLOCK,
        new_id=new_agent_id,
        builtins=registry().names,
        check_model=submitter(settings).check_model,
        lambda_functions=lambda_functions(settings),
        mcp_allowed=lambda url: bool(settings.mcp_servers) and mcp_client(settings).access.config_for(url) is not None,
    )


@cache
def sessions(settings: ApiSettings) -> Sessions:
    from functions.agent.sessions import Sessions

    return Sessions(
        store=store(settings),
        sessions=session_store(settings),
        agents=agents(settings),
        queue=queue(settings),
        workflow=workflow(settings),
        lifecycle=lifecycle_with_queue(settings),
        clock=CLOCK,
        new_id=new_session_id,
        builtins=registry().names,
        mcp=mcp_catalog(settings) if settings.mcp_servers else None,
    )


@cache
def mcp_catalog(settings: ApiSettings) -> McpCatalog:
    from functions.adapters.mcp_tools import CachedMcpCatalog

    return CachedMcpCatalog(session_store(settings), mcp_client(settings))


@cache
def lifecycle(settings: WebhookSettings) -> Lifecycle:
    """Ends runs with no call in flight (Finalize, MarkFailed): releases what they hold at once."""
    return Lifecycle(store=store(settings), clock=CLOCK, notifier=notifier(settings))


@cache
def lifecycle_with_queue(settings: QueueSettings) -> Lifecycle:
    """Ends runs whose call may be in flight (cancel, a stopped execution): releases are scheduled."""
    return Lifecycle(store=store(settings), clock=CLOCK, queue=queue(settings), notifier=notifier(settings))


# ------------------------------------------------------------------------------------------- webhooks


@cache
def notifier(settings: WebhookSettings) -> WebhookNotifier | None:
    """Announces ended runs to the webhooks queue; None when the deployment allows no webhook host (off)."""
    if not settings.webhooks_on or settings.webhooks_queue_url is None:
        return None
    return _announcer(settings.webhooks_queue_url)


def _announcer(webhooks_queue_url: str) -> WebhookNotifier:
    from functions.adapters.webhook_delivery import SqsWebhookQueue
    from functions.agent.webhooks import WebhookNotifier

    client = boto3.client("sqs", config=_ANNOUNCE_CONFIG)
    return WebhookNotifier(queue=SqsWebhookQueue(webhooks_queue_url, client))


@cache
def webhook_store(settings: Settings) -> DynamoDBWebhookStore:
    from functions.adapters.dynamodb_webhooks import DynamoDBWebhookStore

    return DynamoDBWebhookStore(settings.table_name, aws_client("dynamodb"))


def endpoints(settings: WebhookSettings) -> Endpoints:
    from functions.agent.webhooks import Endpoints

    return Endpoints.parse(settings.webhook_allowed_hosts, settings.webhook_http_hosts)


def new_webhook_id() -> str:
    return _time_ordered("wh_")


@cache
def webhooks(settings: ApiSettings) -> Webhooks:
    """Registering a tenant's endpoints (``/v1/webhooks``)."""
    from functions.agent.webhooks import Webhooks

    return Webhooks(store=webhook_store(settings), clock=CLOCK, endpoints=endpoints(settings), new_id=new_webhook_id)


@cache
def deliveries(settings: WebhooksSettings) -> Deliveries:
    """The webhooks function's fan-out and deliveries."""
    from functions.adapters.webhook_delivery import HttpWebhookSender, SqsWebhookQueue
    from functions.agent.webhooks import Deliveries

    allowed = endpoints(settings)
    sender = HttpWebhookSender(egress=egress(settings), hosts=(*allowed.hosts, *allowed.http_hosts),
                               timeout_seconds=settings.webhook_timeout_seconds, clock=CLOCK)  # fmt: skip
    return Deliveries(store=webhook_store(settings), queue=SqsWebhookQueue(settings.webhooks_queue_url,
                      aws_client("sqs")), sender=sender, endpoints=allowed,
                      retry_base_seconds=settings.webhook_retry_base_seconds)  # fmt: skip


@cache
def kill_switch(settings: StopSettings) -> KillSwitch:
    """The kill switch, on the cancel and the interrupt the API's own routes use (the api function and the local
    stack's operator routes)."""
    return _kill_switch(settings, lifecycle_with_queue(settings))


def operator_kill_switch(settings: StopSettings, webhooks_queue_url: str | None) -> KillSwitch:
    """`stepwise kill --table`, with an operator's credentials: what it stops is announced to the tenants' webhooks
    when the deployment's webhooks queue is named (the stack's WebhooksQueueUrl output), as the API announces it."""
    notifier_ = _announcer(webhooks_queue_url) if webhooks_queue_url else None
    return _kill_switch(settings, Lifecycle(store=store(settings), clock=CLOCK, queue=queue(settings),
                                            notifier=notifier_))  # fmt: skip


def _kill_switch(settings: StopSettings, stops: Lifecycle) -> KillSwitch:
    from functions.agent.killswitch import KillSwitch
    from functions.agent.sessions import TurnInterrupts

    interrupts = TurnInterrupts(
        store=store(settings), sessions=session_store(settings), lifecycle=stops, workflow=workflow(settings)
    )
    return KillSwitch(
        store=store(settings), interrupts=interrupts, lifecycle=stops, workflow=workflow(settings), clock=CLOCK
    )


@cache
def intake(settings: IntakeSettings) -> Intake:
    from functions.agent.intake import Intake

    return Intake(
        store=store(settings),
        workflow=workflow(settings),
        queue=queue(settings),
        lifecycle=lifecycle_with_queue(settings),
    )


def reset() -> None:
    """Forget every client, adapter, use case and setting built (tests switch environments)."""
    for built in (
        aws_client,
        store,
        step_store,
        queue,
        workflow,
        registry,
        results,
        egress,
        lambda_functions,
        mcp_client,
        mcp_catalog,
        api_keys,
        tickets,
        tenant_store,
        tenant_limits,
        tenants,
        rate_limiter,
        prices,
        response_cache,
        breaker,
        _stub,
        _anthropic,
        _providers,
        submitter,
        session_store,
        agents,
        sessions,
        lifecycle,
        lifecycle_with_queue,
        kill_switch,
        intake,
        notifier,
        webhook_store,
        webhooks,
        deliveries,
    ):
        built.cache_clear()
    HISTORY.clear()
    settings_module.reset()
    if "aws_lambda_powertools.utilities.parameters" in sys.modules:  # secrets read through powertools' cache
        from aws_lambda_powertools.utilities import parameters

        parameters.clear_caches()  # type: ignore[no-untyped-call]
