"""Builds the real adapters from the environment, once per Lambda container.

Handlers call these lazily on first use, never at import, so tests can set the environment first and
nothing is created that a test would have to patch.
"""

from __future__ import annotations

import uuid
from functools import cache, lru_cache
from typing import Any

import boto3
from botocore.config import Config

from functions.adapters.aws import SqsRunQueue, StepFunctionsWorkflow, SystemClock
from functions.adapters.dynamodb_circuits import DynamoDBCircuitStore
from functions.adapters.dynamodb_response_cache import DynamoDBResponseCache
from functions.adapters.dynamodb_store import DynamoDBRunStore
from functions.adapters.settings import get_settings
from functions.adapters.stub_model import OfflineStubModel
from functions.agent.breaker import Breaker
from functions.agent.budgets import BudgetLimits
from functions.agent.caching import CacheTTL
from functions.agent.circuit import CircuitConfig
from functions.agent.ports import ModelClient
from functions.agent.pricing import PriceBook, default_price_book, parse_extra_prices
from functions.tools import ToolRegistry, builtin_registry

_BOTO_CONFIG = Config(retries={"mode": "standard", "max_attempts": 3}, connect_timeout=5, read_timeout=10)
CLOCK = SystemClock()


@cache
def aws_client(service: str) -> Any:
    return boto3.client(service, config=_BOTO_CONFIG)


@cache
def store() -> DynamoDBRunStore:
    return DynamoDBRunStore(get_settings().table_name, aws_client("dynamodb"), CLOCK)


@cache
def response_cache() -> DynamoDBResponseCache:
    settings = get_settings()
    return DynamoDBResponseCache(
        settings.table_name, aws_client("dynamodb"), CLOCK, ttl_seconds=settings.response_cache_ttl_seconds
    )


def breaker() -> Breaker:
    """A breaker for one invocation (its transitions are this invocation's, for metrics); the state is shared."""
    settings = get_settings()
    config = CircuitConfig(
        failure_threshold=settings.circuit_failure_threshold,
        window_seconds=settings.circuit_window_seconds,
        cooldown_seconds=settings.circuit_cooldown_seconds,
    )
    return Breaker(circuits(), config, now=lambda: CLOCK.now().timestamp())


@cache
def circuits() -> DynamoDBCircuitStore:
    return DynamoDBCircuitStore(get_settings().table_name, aws_client("dynamodb"))


@cache
def queue() -> SqsRunQueue:
    settings = get_settings()
    return SqsRunQueue(
        settings.required("queue_url"), aws_client("sqs"), settings.release_delay_seconds, settings.watch_delay_seconds
    )


@cache
def workflow() -> StepFunctionsWorkflow:
    return StepFunctionsWorkflow(get_settings().required("state_machine_arn"), aws_client("stepfunctions"))


@cache
def registry() -> ToolRegistry:
    return builtin_registry(CLOCK.now)


@cache
def prices() -> PriceBook:
    """The pricing file, plus any prices configured at deploy time."""
    extra = get_settings().extra_prices
    return default_price_book().with_extra(parse_extra_prices(extra)) if extra else default_price_book()


def cache_ttl() -> CacheTTL | None:
    ttl = get_settings().prompt_cache_ttl
    return None if ttl == "off" else ttl


def limits() -> BudgetLimits:
    settings = get_settings()
    return BudgetLimits(
        tenant_daily_usd=settings.tenant_daily_budget_usd, global_daily_usd=settings.global_daily_budget_usd
    )


def new_run_id() -> str:
    return "run_" + uuid.uuid4().hex[:26]


def model() -> ModelClient:
    """The model client: the real API, or the labelled offline stub (local stack, no key).

    The key is read from Secrets Manager at most every 5 minutes (powertools caches it), so a key put or
    rotated after deploy reaches warm containers without a redeploy.
    """
    settings = get_settings()
    if settings.model_provider == "stub" or (settings.model_provider == "auto" and not settings.anthropic_api_key):
        return _stub()
    api_key = settings.anthropic_api_key
    if not api_key and settings.anthropic_secret_arn:
        from aws_lambda_powertools.utilities.parameters import get_secret

        api_key = str(get_secret(settings.anthropic_secret_arn, max_age=300)).strip()
    if not api_key:
        raise RuntimeError("no Anthropic API key: set ANTHROPIC_API_KEY or STEPWISE_ANTHROPIC_SECRET_ARN")
    if settings.bedrock_fallback:
        return _providers(api_key, settings.model_timeout_seconds)
    return _anthropic(api_key, settings.model_timeout_seconds)


def providers() -> set[str]:
    """The model providers this deployment can call (a run naming a model of another is refused)."""
    return {"anthropic", "bedrock"} if get_settings().bedrock_fallback else {"anthropic"}


@lru_cache(maxsize=2)
def _providers(api_key: str, timeout_seconds: float) -> ModelClient:
    from functions.adapters.bedrock_model import BedrockModel, ProviderModels

    bedrock = boto3.client(
        "bedrock-runtime",
        config=Config(retries={"mode": "standard", "max_attempts": 1}, read_timeout=timeout_seconds),
    )
    return ProviderModels(
        provider_of=lambda model: prices().price(model).provider,
        clients={"anthropic": _anthropic(api_key, timeout_seconds), "bedrock": BedrockModel(bedrock)},
    )


@cache
def _stub() -> ModelClient:
    return OfflineStubModel()


@lru_cache(maxsize=2)
def _anthropic(api_key: str, timeout_seconds: float) -> ModelClient:
    from functions.adapters.anthropic_model import AnthropicModel  # ~650 ms of imports, only where needed

    return AnthropicModel.create_client(api_key=api_key, timeout_seconds=timeout_seconds)


def reset() -> None:
    """Forget every cached client and setting (tests switch environments)."""
    for built in (
        aws_client,
        store,
        circuits,
        response_cache,
        queue,
        workflow,
        registry,
        prices,
        _stub,
        _anthropic,
        _providers,
        get_settings,
    ):
        built.cache_clear()
