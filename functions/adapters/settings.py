"""The settings of each Lambda function, read from its environment and validated once per container.

Each function has one settings model (``ApiSettings``, ``StepSettings``, ...), composed of the groups it
reads; the wiring takes the narrowest group it needs (``queue(settings: QueueSettings)``), so mypy checks a
function's model holds every setting its code reads. infra/functions.py declares each function with its
model, and the stack gives a function exactly the variables its model names (``Settings.variables``): a
setting the code reads that the stack does not give fails ``cdk synth`` and a test.

An empty variable means "not set" (the stack writes ``""`` for an optional limit it leaves off).
"""

from __future__ import annotations

import os
from decimal import Decimal
from functools import cache
from typing import Any, Literal, TypeVar, cast

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.config import JsonDict

from functions.agent.keys import AuthMode
from functions.agent.tenants import MAX_REQUESTS_PER_MINUTE

LOCAL_ONLY: JsonDict = {"local_only": True}  # json_schema_extra of a setting a deployment never sets


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True, defer_build=True)  # a function builds only the model it validates

    table_name: str = Field(alias="STEPWISE_TABLE", min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _empty_is_unset(cls, values: Any) -> Any:
        return {k: v for k, v in values.items() if v != ""} if isinstance(values, dict) else values

    @classmethod
    def variables(cls) -> list[str]:
        """The environment variables a deployment gives a function with these settings."""
        return sorted(
            str(info.alias)
            for info in cls.model_fields.values()
            if not (isinstance(info.json_schema_extra, dict) and info.json_schema_extra.get("local_only"))
        )


class WebhookSettings(Settings):
    """Webhooks (functions/agent/webhooks.py): the queue a run's end is announced on, and the hosts endpoints may be
    on. Every function that ends runs reads these; with no hosts allowed it announces nothing (webhooks are off)."""

    # every deployed function that ends runs is given it; without it (an operator's `stepwise kill --table`) ends are
    # not announced
    webhooks_queue_url: str | None = Field(default=None, alias="STEPWISE_WEBHOOKS_QUEUE_URL", min_length=1)
    # comma-separated hosts (exact, or "*.example.com" for subdomains) endpoints may be on, by https
    # (CDK context webhook_allowed_hosts); none: no webhook can be registered, and nothing is announced
    webhook_allowed_hosts: str | None = Field(default=None, alias="STEPWISE_WEBHOOK_ALLOWED_HOSTS")
    # hosts endpoints may be on by plain http as well: the local stack's 127.0.0.1, never a deployment's
    webhook_http_hosts: str | None = Field(
        default=None, alias="STEPWISE_WEBHOOK_HTTP_HOSTS", json_schema_extra=LOCAL_ONLY
    )

    @property
    def webhooks_on(self) -> bool:
        hosts = (self.webhook_allowed_hosts or "").strip() or (self.webhook_http_hosts or "").strip()
        return bool(self.webhooks_queue_url and hosts)


class QueueSettings(WebhookSettings):
    """The intake queue: new runs, delayed releases, watchdog checks (and, as every function that ends runs, the
    webhooks queue)."""

    queue_url: str = Field(alias="STEPWISE_QUEUE_URL", min_length=1)
    # > the step function's timeout: a cancelled run's reservation is released only once its call cannot run on
    release_delay_seconds: int = Field(default=355, alias="STEPWISE_RELEASE_DELAY_SECONDS", ge=0, le=900)
    # how often a started run is checked for being stuck (SQS delay: at most 900 s)
    watch_delay_seconds: int = Field(default=900, alias="STEPWISE_WATCH_DELAY_SECONDS", ge=0, le=900)


class WorkflowSettings(Settings):
    state_machine_arn: str = Field(alias="STEPWISE_STATE_MACHINE_ARN", min_length=1)


class StopSettings(QueueSettings, WorkflowSettings):
    """What stopping work needs (a cancel, an interrupt, the kill switch): the table, the intake queue (a failed
    stop retried, a delayed release) and the state machine. An operator's `stepwise kill --table` builds these."""


class PricingSettings(Settings):
    # JSON {model_id: {input, output, cache_write_5m, cache_write_1h, cache_read, source, as_of}}, USD per MTok
    extra_prices: str | None = Field(default=None, alias="STEPWISE_EXTRA_PRICES")
    # Claude on Amazon Bedrock (Converse API) as a provider, e.g. the last fallback (needs model access)
    bedrock_fallback: bool = Field(default=False, alias="STEPWISE_BEDROCK_FALLBACK")


class BudgetSettings(Settings):
    tenant_daily_budget_usd: Decimal | None = Field(default=None, alias="STEPWISE_TENANT_DAILY_BUDGET_USD", gt=0)
    global_daily_budget_usd: Decimal | None = Field(default=None, alias="STEPWISE_GLOBAL_DAILY_BUDGET_USD", gt=0)


class ModelSettings(PricingSettings):
    # anthropic: always the real API (key from ANTHROPIC_API_KEY or the secret);
    # auto: the real API when a key is set, else the labelled offline stub (local stack only).
    model_provider: Literal["anthropic", "auto", "stub"] = Field(default="anthropic", alias="STEPWISE_MODEL_PROVIDER")
    anthropic_secret_arn: str | None = Field(default=None, alias="STEPWISE_ANTHROPIC_SECRET_ARN")
    anthropic_api_key: str | None = Field(
        default=None, alias="ANTHROPIC_API_KEY", repr=False, json_schema_extra=LOCAL_ONLY
    )
    model_timeout_seconds: float = Field(default=60.0, alias="STEPWISE_MODEL_TIMEOUT_SECONDS", gt=0)


class CircuitSettings(Settings):
    """The circuit breaker per provider+model, shared through the table."""

    circuit_failure_threshold: int = Field(default=5, alias="STEPWISE_CIRCUIT_FAILURE_THRESHOLD", ge=1)
    circuit_window_seconds: float = Field(default=60, alias="STEPWISE_CIRCUIT_WINDOW_SECONDS", gt=0)
    circuit_cooldown_seconds: float = Field(default=30, alias="STEPWISE_CIRCUIT_COOLDOWN_SECONDS", gt=0)


class CachingSettings(Settings):
    # Prompt caching placed automatically on every model call ("off" to disable)
    prompt_cache_ttl: Literal["5m", "1h", "off"] = Field(default="5m", alias="STEPWISE_PROMPT_CACHE_TTL")
    # Exact-match response cache: the default for runs that do not say (a run's "response_cache" wins)
    response_cache_by_default: bool = Field(default=False, alias="STEPWISE_RESPONSE_CACHE")
    response_cache_ttl_seconds: int = Field(default=86_400, alias="STEPWISE_RESPONSE_CACHE_TTL_SECONDS", gt=0)


class StepLoopSettings(Settings):
    """One step invocation takes a run's next steps while their calls all run in it (functions/agent/step_loop.py):
    at most ``step_loop_steps`` (1: one model call an invocation), starting none after ``step_loop_seconds`` (the
    step function's timeout covers that and one more step at its worst: infra/functions.py)."""

    step_loop_steps: int = Field(default=10, alias="STEPWISE_STEP_LOOP_STEPS", ge=1, le=100)
    step_loop_seconds: float = Field(default=120, alias="STEPWISE_STEP_LOOP_SECONDS", gt=0, le=600)


class EgressSettings(Settings):
    # comma-separated addresses or CIDR ranges tools and webhooks may reach though not public (locally: 127.0.0.1)
    egress_allow_addresses: str | None = Field(default=None, alias="STEPWISE_EGRESS_ALLOW_ADDRESSES")


class ToolAccessSettings(EgressSettings):
    """What the deployment lets tools reach (CDK context mcp_servers, lambda_tools, egress_allow_addresses)."""

    # JSON [{url, secret?, header?, prefix?}]: the MCP servers agents may name, and each one's credential
    mcp_servers: str | None = Field(default=None, alias="STEPWISE_MCP_SERVERS")
    # JSON [{function, idempotent, timeout_seconds}]: the Lambda functions agents may use as tools
    lambda_tools: str | None = Field(default=None, alias="STEPWISE_LAMBDA_TOOLS")


class ResultSettings(Settings):
    """The bucket that keeps whole tool results too large for the table."""

    results_bucket: str = Field(alias="STEPWISE_RESULTS_BUCKET", min_length=1)


# ------------------------------------------------------------------------------------------- per function


class ApiSettings(StopSettings, PricingSettings, BudgetSettings, ToolAccessSettings, ResultSettings):
    # how callers authenticate (functions/handlers/tenancy.py): api_key (the stack's authorizer), jwt (an OIDC
    # issuer's token, its tenant_claim), iam (SigV4, principals mapped by iam_tenants); none: the local stack's
    # open mode, where a request without a tenant is the default tenant's
    auth: AuthMode = Field(default="api_key", alias="STEPWISE_AUTH")
    tenant_claim: str = Field(default="tenant", alias="STEPWISE_TENANT_CLAIM", min_length=1)
    iam_tenants: str | None = Field(default=None, alias="STEPWISE_IAM_TENANTS")  # JSON {principal ARN: tenant}
    default_tenant: str = Field(default="default", alias="STEPWISE_DEFAULT_TENANT", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    default_model: str = Field(default="claude-sonnet-5-5", alias="STEPWISE_DEFAULT_MODEL", min_length=1)
    # requests per minute per tenant for a tenant without its own (`stepwise tenants set`); unset: no limit
    tenant_requests_per_minute: int | None = Field(
        default=None, alias="STEPWISE_TENANT_REQUESTS_PER_MINUTE", ge=1, le=MAX_REQUESTS_PER_MINUTE
    )
    # the stream function's URL (a Lambda function URL): where GET .../events/stream redirects, with a ticket
    stream_url: str | None = Field(default=None, alias="STEPWISE_STREAM_URL", pattern=r"^https?://[^?#]+$")


class IntakeSettings(StopSettings):
    intake_max_receive_count: int = Field(default=5, alias="STEPWISE_INTAKE_MAX_RECEIVE_COUNT", ge=1)


class StepSettings(ModelSettings, BudgetSettings, CircuitSettings, CachingSettings, ResultSettings, StepLoopSettings):
    """The step function: a model call, then the fast tool calls it asked for (their large results go to the
    results bucket, as the tool function's do); and the run's next steps while their calls all run in it."""


class ToolSettings(ToolAccessSettings, ResultSettings):
    # the http_fetch tool's (tools/http_fetch.py) allowed domains, comma-separated ("*.example.com": subdomains)
    http_fetch_domains: str | None = Field(default=None, alias="STEPWISE_HTTP_FETCH_DOMAINS")


class StreamSettings(Settings):
    """The stream function (functions/handlers/stream.py): it reads sessions and runs, and takes stream tickets."""

    stream_poll_seconds: float = Field(default=1.0, alias="STEPWISE_STREAM_POLL_SECONDS", gt=0, le=10)
    stream_ping_seconds: float = Field(default=15.0, alias="STEPWISE_STREAM_PING_SECONDS", gt=0, le=60)
    # a stream ends after this (the client reconnects): inside the function's 900 s timeout
    stream_max_seconds: float = Field(default=840.0, alias="STEPWISE_STREAM_MAX_SECONDS", gt=0, le=880)
    # a session's stream ends once the session has been idle this long with nothing sent (Lambda does not tell the
    # function that a client went away: without this, a stream the client closed would run to its end)
    stream_idle_seconds: float = Field(default=60.0, alias="STEPWISE_STREAM_IDLE_SECONDS", gt=0, le=880)


class AuthorizerSettings(Settings):
    """The API's Lambda authorizer: it reads API keys (their digests) and nothing else."""


class EndSettings(WebhookSettings):
    """Finalize and MarkFailed: they end runs, with no call in flight."""


class WorkflowEndedSettings(QueueSettings):
    """An execution that ended outside the graph: a call may be in flight, its release is scheduled."""


class GaugesSettings(Settings):
    """The gauges function (functions/handlers/gauges.py): it counts the index of active work, and reads nothing
    else."""


class WebhooksSettings(WebhookSettings, EgressSettings):
    """The webhooks function: fans events out and delivers them (functions/handlers/webhooks.py)."""

    webhooks_queue_url: str = Field(alias="STEPWISE_WEBHOOKS_QUEUE_URL", min_length=1)

    # the first retry's delay; each later one doubles (functions/agent/webhooks.py backoff_seconds)
    webhook_retry_base_seconds: int = Field(default=30, alias="STEPWISE_WEBHOOK_RETRY_BASE_SECONDS", ge=1, le=3600)
    # an attempt connects within it and is over within twice it (at 10 s, a batch of 5 fits the 120 s function)
    webhook_timeout_seconds: float = Field(default=10.0, alias="STEPWISE_WEBHOOK_TIMEOUT_SECONDS", gt=0, le=30)


S = TypeVar("S", bound=Settings)


class SettingsError(RuntimeError):
    """The function's environment does not hold valid settings: it fails on its first invocation."""


def load(kind: type[S]) -> S:
    """The function's settings, validated from the environment once per container."""
    return cast(S, _load(kind))


@cache
def _load(kind: type[Settings]) -> Settings:
    try:
        return kind.model_validate(dict(os.environ))
    except ValidationError as exc:
        problems = "; ".join(f"{err['loc'][0] if err['loc'] else ''}: {err['msg']}" for err in exc.errors())
        raise SettingsError(f"{kind.__name__}: {problems}") from exc


def reset() -> None:
    """Forget the loaded settings (tests switch environments)."""
    _load.cache_clear()
