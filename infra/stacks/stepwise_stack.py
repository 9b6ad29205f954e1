"""The Stepwise stack: composes the constructs; each grants the functions what infra/functions.py declares."""

from __future__ import annotations

from typing import Any

from aws_cdk import Acknowledgment, CfnOutput, Duration, RemovalPolicy, Stack, Validations
from aws_cdk import aws_logs as logs
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

from functions.adapters.settings import StepSettings
from infra.constants import (
    LOG_RETENTION,
    MODEL_RETRY_INTERVAL_SECONDS,
    MODEL_RETRY_MAX_DELAY_SECONDS,
    RELEASE_AFTER_STEP_TIMEOUT_SECONDS,
    STEP_LOOP_SECONDS,
    STEP_LOOP_STEPS,
    WATCH_DELAY_SECONDS,
)
from infra.constructs.agent_functions import WEB_ADAPTER_LAYER_VERSION, XRAY_WRITE_POLICY, AgentFunctions
from infra.constructs.api import Api, ApiAuth
from infra.constructs.deploys import ALL_AT_ONCE, SafeDeploys
from infra.constructs.event_stream import EventStream
from infra.constructs.gauges import Gauges
from infra.constructs.intake import Intake
from infra.constructs.model_access import ModelAccess
from infra.constructs.monitoring import AlarmThresholds, Monitoring
from infra.constructs.results import ToolResults
from infra.constructs.state_table import StateTable
from infra.constructs.tool_access import ToolAccess
from infra.constructs.webhooks import Webhooks
from infra.constructs.workflow import AgentWorkflow
from infra.functions import FUNCTIONS

# Settings a deployment does not choose yet: the code's defaults, given explicitly (so every setting a
# function reads is one the stack gives it, see infra/functions.py)
CODE_DEFAULTS = (
    "STEPWISE_CIRCUIT_FAILURE_THRESHOLD",
    "STEPWISE_CIRCUIT_WINDOW_SECONDS",
    "STEPWISE_CIRCUIT_COOLDOWN_SECONDS",
    "STEPWISE_RESPONSE_CACHE_TTL_SECONDS",
)


def code_default(variable: str) -> str:
    (field,) = [info for info in StepSettings.model_fields.values() if info.alias == variable]
    return str(field.default)


class StepwiseStack(Stack):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        default_model: str,
        default_tenant: str = "default",
        run_timeout_minutes: int = 120,
        intake_max_concurrency: int = 10,
        api_rate_limit: int = 50,
        api_burst_limit: int = 100,
        removal_policy: RemovalPolicy = RemovalPolicy.RETAIN,
        tenant_daily_budget_usd: float | None = None,
        global_daily_budget_usd: float | None = None,
        tenant_requests_per_minute: int | None = None,
        extra_prices: str | None = None,
        prompt_cache_ttl: str = "5m",
        response_cache: bool = False,
        bedrock_fallback: bool = False,
        retry_interval_seconds: int = MODEL_RETRY_INTERVAL_SECONDS,
        retry_max_delay_seconds: int = MODEL_RETRY_MAX_DELAY_SECONDS,
        mcp_servers: list[dict[str, Any]] | None = None,
        lambda_tools: list[dict[str, Any]] | None = None,
        egress_allow_addresses: list[str] | None = None,
        http_fetch_allowed_domains: list[str] | None = None,
        tool_result_retention_days: int = 30,
        log_retention_days: int = 30,
        webhook_allowed_hosts: list[str] | None = None,
        auth: ApiAuth | None = None,
        stream_max_concurrency: int = 20,
        web_adapter_layer_version: int = WEB_ADAPTER_LAYER_VERSION,
        deploy_strategy: str = ALL_AT_ONCE,
        alarm_thresholds: AlarmThresholds | None = None,
        alarm_email: str | None = None,
        step_snap_start: bool = False,
        step_provisioned_concurrency: int = 0,
        **kwargs: object,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)  # type: ignore[arg-type]

        log_retention = retention(log_retention_days)
        state = StateTable(self, "State", removal_policy=removal_policy)
        functions = AgentFunctions(
            self, "Functions", log_retention=log_retention, web_adapter_layer_version=web_adapter_layer_version,
            snap_start=frozenset({"step"} if step_snap_start else ()),
            provisioned_concurrency={"step": step_provisioned_concurrency},
        )  # fmt: skip
        self.functions = functions
        tool_access = ToolAccess(
            self,
            "ToolAccess",
            mcp_servers=mcp_servers or [],
            lambda_tools=lambda_tools or [],
            egress_allow_addresses=egress_allow_addresses or [],
            http_fetch_allowed_domains=http_fetch_allowed_domains or [],
        )
        results = ToolResults(self, "Results", retention_days=tool_result_retention_days, removal_policy=removal_policy)
        workflow = AgentWorkflow(
            self,
            "Workflow",
            functions=functions,
            run_timeout=Duration.minutes(run_timeout_minutes),
            lambda_tools=tool_access.lambda_functions,
            retry_interval_seconds=retry_interval_seconds,
            retry_max_delay_seconds=retry_max_delay_seconds,
            log_retention=log_retention,
        )
        intake = Intake(
            self,
            "Intake",
            intake_fn=functions.alias("intake"),
            intake_timeout_seconds=FUNCTIONS["intake"].timeout_seconds,
            max_concurrency=intake_max_concurrency,
        )
        webhooks = Webhooks(
            self, "Webhooks", webhooks_fn=functions.alias("webhooks"),
            timeout_seconds=FUNCTIONS["webhooks"].timeout_seconds,
            allowed_hosts=webhook_allowed_hosts or [],
        )  # fmt: skip
        api = Api(
            self,
            "Api",
            api_fn=functions.alias("api"),
            authorizer_fn=functions.alias("authorizer"),
            auth=auth or ApiAuth(),
            log_retention=log_retention,
            rate_limit=api_rate_limit,
            burst_limit=api_burst_limit,
        )
        Gauges(self, "Gauges", gauges_fn=functions.alias("gauges"))
        stream = EventStream(self, "EventStream", stream_fn=functions["stream"], stream_alias=functions.alias("stream"),
                             max_streams=stream_max_concurrency)  # fmt: skip
        secret = secretsmanager.Secret(
            self,
            "AnthropicApiKey",
            description="Anthropic API key for Stepwise (replace the generated value with your key)",
        )
        models = ModelAccess(self, "Models", secret=secret, bedrock=bedrock_fallback)
        for construct in (state, workflow, intake, models, tool_access, results, webhooks):
            construct.grant(functions)
        workflow.grant_lambda_tools(tool_access.lambda_functions)
        # TenantDaily always: an operator may give any tenant a daily budget at run time (`stepwise tenants set`)
        budgets = {"TenantDaily": True, "GlobalDaily": global_daily_budget_usd is not None}
        functions.configure(
            {
                **state.settings,
                **workflow.settings,
                **intake.settings,
                **models.settings,
                **tool_access.settings,
                **results.settings,
                **webhooks.settings,
                **stream.settings,
                "STEPWISE_DEFAULT_MODEL": default_model,
                "STEPWISE_DEFAULT_TENANT": default_tenant,
                **(auth or ApiAuth()).settings,
                "STEPWISE_TENANT_DAILY_BUDGET_USD": _optional(tenant_daily_budget_usd),
                "STEPWISE_GLOBAL_DAILY_BUDGET_USD": _optional(global_daily_budget_usd),
                "STEPWISE_TENANT_REQUESTS_PER_MINUTE": _optional(tenant_requests_per_minute),
                "STEPWISE_EXTRA_PRICES": extra_prices or "",
                "STEPWISE_PROMPT_CACHE_TTL": prompt_cache_ttl,
                "STEPWISE_RESPONSE_CACHE": "true" if response_cache else "false",
                # a reservation is released only once the call it covered can no longer be running
                "STEPWISE_RELEASE_DELAY_SECONDS": str(
                    FUNCTIONS["step"].timeout_seconds + RELEASE_AFTER_STEP_TIMEOUT_SECONDS
                ),
                "STEPWISE_WATCH_DELAY_SECONDS": str(WATCH_DELAY_SECONDS),
                "STEPWISE_STEP_LOOP_STEPS": str(STEP_LOOP_STEPS),
                "STEPWISE_STEP_LOOP_SECONDS": str(STEP_LOOP_SECONDS),
                **{name: code_default(name) for name in CODE_DEFAULTS},
            }
        )
        # canary/linear shifts of the functions' aliases, rolled back on their alarms (deploys.rollback_alarms)
        self.deploys = SafeDeploys(self, "Deploys", functions=functions, strategy=deploy_strategy)
        monitoring = Monitoring(
            self,
            "Monitoring",
            thresholds=alarm_thresholds or AlarmThresholds(),
            alarm_email=alarm_email,
            state_machine=workflow.state_machine,
            intake_queue=intake.queue,
            budgets=[name for name, wanted in budgets.items() if wanted],
            dead_letters={
                "intake": (intake.dead_letter_queue, intake.dead_letter_alarm),
                "execution ended": (workflow.ended_dead_letters, workflow.ended_dead_letter_alarm),
                "webhooks": (webhooks.dead_letter_queue, webhooks.dead_letter_alarm),
            },
            rollback_alarms=self.deploys.rollback_alarms,
        )

        CfnOutput(self, "ApiUrl", value=api.url, description="Base URL of the Stepwise HTTP API")
        CfnOutput(self, "AnthropicSecretName", value=secret.secret_name, description="Put your Anthropic API key here")
        CfnOutput(self, "TableName", value=state.table.table_name)
        CfnOutput(self, "ToolResultsBucket", value=results.bucket.bucket_name)
        CfnOutput(self, "StateMachineArn", value=workflow.state_machine.state_machine_arn)
        CfnOutput(self, "IntakeQueueUrl", value=intake.queue.queue_url, description="stepwise kill --queue")
        CfnOutput(self, "IntakeDeadLetterQueueUrl", value=intake.dead_letter_queue.queue_url)
        CfnOutput(self, "IntakeDeadLetterAlarmName", value=intake.dead_letter_alarm.alarm_name)
        CfnOutput(self, "ExecutionEndedDeadLetterAlarmName", value=workflow.ended_dead_letter_alarm.alarm_name)
        CfnOutput(
            self, "WebhooksQueueUrl", value=webhooks.queue.queue_url, description="stepwise kill --webhooks-queue"
        )
        CfnOutput(self, "WebhooksDeadLetterQueueUrl", value=webhooks.dead_letter_queue.queue_url)
        CfnOutput(self, "WebhooksDeadLetterAlarmName", value=webhooks.dead_letter_alarm.alarm_name)
        CfnOutput(self, "AlarmTopicArn", value=monitoring.topic.topic_arn, description="Every alarm notifies it")
        CfnOutput(self, "DashboardName", value=monitoring.dashboard.dashboard_name)
        CfnOutput(
            self,
            "DashboardUrl",
            value=f"https://{self.region}.console.aws.amazon.com/cloudwatch/home?region={self.region}"
            f"#dashboards:name={monitoring.dashboard.dashboard_name}",
        )
        # cdk-nag findings of the whole stack (each construct acknowledges those its own resources cause)
        basic_role = "Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"
        xray = f"Policy::arn:<AWS::Partition>:iam::aws:policy/{XRAY_WRITE_POLICY}"
        for finding, reason in (
            (f"IAM4[{basic_role}]", "The AWS-maintained minimum for writing function logs."),
            (
                f"IAM4[{xray}]",
                "X-Ray's trace writes have no resource-level permissions: the AWS-maintained "
                "write-only policy, named, instead of an inline Resource * statement a new one could hide behind.",
            ),
            ("L1", "Functions pin Python 3.13, the runtime the dependency layer is built for; bump both together."),
        ):
            Validations.of(self).acknowledge(Acknowledgment(id=f"AwsSolutions::AwsSolutions-{finding}", reason=reason))


def retention(days: int) -> logs.RetentionDays:
    """CloudWatch Logs' retention of ``days`` (0: never expire); raises ValueError for a period it does not offer."""
    if days not in LOG_RETENTION:
        raise ValueError(f"log_retention_days {days}: one of {', '.join(map(str, LOG_RETENTION))} (0: forever)")
    return LOG_RETENTION[days]


def _optional(value: float | int | None) -> str:
    return "" if value is None else str(value)
