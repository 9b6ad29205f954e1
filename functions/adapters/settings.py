"""Environment of the Lambda functions, validated once at cold start."""

from __future__ import annotations

import os
from decimal import Decimal
from functools import cache
from typing import Literal

from pydantic import BaseModel, Field


class Settings(BaseModel):
    table_name: str = Field(alias="STEPWISE_TABLE")
    queue_url: str | None = Field(default=None, alias="STEPWISE_QUEUE_URL")
    state_machine_arn: str | None = Field(default=None, alias="STEPWISE_STATE_MACHINE_ARN")
    default_tenant: str = Field(default="default", alias="STEPWISE_DEFAULT_TENANT", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    default_model: str = Field(default="claude-sonnet-5-5", alias="STEPWISE_DEFAULT_MODEL")
    # anthropic: always the real API (key from ANTHROPIC_API_KEY or the secret);
    # auto: the real API when a key is set, else the labelled offline stub (local stack only).
    model_provider: Literal["anthropic", "auto", "stub"] = Field(default="anthropic", alias="STEPWISE_MODEL_PROVIDER")
    anthropic_secret_arn: str | None = Field(default=None, alias="STEPWISE_ANTHROPIC_SECRET_ARN")
    anthropic_api_key: str | None = Field(default=None, alias="ANTHROPIC_API_KEY", repr=False)
    intake_max_receive_count: int = Field(default=5, alias="STEPWISE_INTAKE_MAX_RECEIVE_COUNT", ge=1)
    tenant_daily_budget_usd: Decimal | None = Field(default=None, alias="STEPWISE_TENANT_DAILY_BUDGET_USD", gt=0)
    global_daily_budget_usd: Decimal | None = Field(default=None, alias="STEPWISE_GLOBAL_DAILY_BUDGET_USD", gt=0)
    # JSON {model_id: {input, output, cache_write_5m, cache_write_1h, cache_read, source, as_of}}, USD per MTok
    extra_prices: str | None = Field(default=None, alias="STEPWISE_EXTRA_PRICES")
    # Prompt caching placed automatically on every model call ("off" to disable)
    prompt_cache_ttl: Literal["5m", "1h", "off"] = Field(default="5m", alias="STEPWISE_PROMPT_CACHE_TTL")
    # Exact-match response cache: the default for runs that do not say (a run's "response_cache" wins)
    response_cache: bool = Field(default=False, alias="STEPWISE_RESPONSE_CACHE")
    response_cache_ttl_seconds: int = Field(default=86_400, alias="STEPWISE_RESPONSE_CACHE_TTL_SECONDS", gt=0)
    # > the step function's timeout: a cancelled run's reservation is released only once its call cannot run on
    release_delay_seconds: int = Field(default=240, alias="STEPWISE_RELEASE_DELAY_SECONDS", ge=0, le=900)
    # circuit breaker per provider+model, shared through the table
    circuit_failure_threshold: int = Field(default=5, alias="STEPWISE_CIRCUIT_FAILURE_THRESHOLD", ge=1)
    circuit_window_seconds: float = Field(default=60, alias="STEPWISE_CIRCUIT_WINDOW_SECONDS", gt=0)
    circuit_cooldown_seconds: float = Field(default=30, alias="STEPWISE_CIRCUIT_COOLDOWN_SECONDS", gt=0)
    # Claude on Amazon Bedrock (Converse API) as a provider, e.g. the last fallback (needs model access)
    bedrock_fallback: bool = Field(default=False, alias="STEPWISE_BEDROCK_FALLBACK")
    # how often a started run is checked for being stuck (SQS delay: at most 900 s)
    watch_delay_seconds: int = Field(default=900, alias="STEPWISE_WATCH_DELAY_SECONDS", ge=0, le=900)
    model_timeout_seconds: float = Field(default=60.0, alias="STEPWISE_MODEL_TIMEOUT_SECONDS", gt=0)

    def required(self, name: str) -> str:
        value = getattr(self, name)
        if not value:
            alias = type(self).model_fields[name].alias
            raise RuntimeError(f"environment variable {alias} is not set")
        return str(value)


@cache
def get_settings() -> Settings:
    return Settings.model_validate(dict(os.environ))
