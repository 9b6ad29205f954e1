"""The Stepwise stack: composes the constructs, grants least privilege once, here."""

from __future__ import annotations

from aws_cdk import Acknowledgment, ArnFormat, CfnOutput, Duration, RemovalPolicy, Stack, Token, Validations
from aws_cdk import aws_iam as iam
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

from infra.constants import (
    FUNCTIONS,
    INTAKE_MAX_RECEIVE_COUNT,
    MODEL_RETRY_INTERVAL_SECONDS,
    MODEL_RETRY_MAX_DELAY_SECONDS,
    MODEL_TIMEOUT_SECONDS,
    TABLE_ACCESS,
)
from infra.constructs.agent_functions import AgentFunctions
from infra.constructs.api import Api
from infra.constructs.intake import Intake
from infra.constructs.monitoring import BudgetAlarms
from infra.constructs.state_table import StateTable
from infra.constructs.workflow import AgentWorkflow


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
        extra_prices: str | None = None,
        prompt_cache_ttl: str = "5m",
        response_cache: bool = False,
        bedrock_fallback: bool = False,
        retry_interval_seconds: int = MODEL_RETRY_INTERVAL_SECONDS,
        retry_max_delay_seconds: int = MODEL_RETRY_MAX_DELAY_SECONDS,
        **kwargs: object,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)  # type: ignore[arg-type]

        state = StateTable(self, "State", removal_policy=removal_policy)
        table = state.table
        secret = secretsmanager.Secret(
            self,
            "AnthropicApiKey",
            description="Anthropic API key for Stepwise (replace the generated value with your key)",
        )
        functions = AgentFunctions(
            self,
            "Functions",
            environment={
                "STEPWISE_TABLE": table.table_name,
                "STEPWISE_DEFAULT_MODEL": default_model,
                "STEPWISE_DEFAULT_TENANT": default_tenant,
                "STEPWISE_MODEL_PROVIDER": "anthropic",
                "STEPWISE_MODEL_TIMEOUT_SECONDS": str(MODEL_TIMEOUT_SECONDS),
                "STEPWISE_PROMPT_CACHE_TTL": prompt_cache_ttl,
                "STEPWISE_RESPONSE_CACHE": "true" if response_cache else "false",
            },
        )
        workflow = AgentWorkflow(
            self,
            "Workflow",
            step_fn=functions["step"],
            tool_fn=functions["tool"],
            finalize_fn=functions["finalize"],
            mark_failed_fn=functions["mark_failed"],
            workflow_ended_fn=functions["workflow_ended"],
            run_timeout=Duration.minutes(run_timeout_minutes),
            retry_interval_seconds=retry_interval_seconds,
            retry_max_delay_seconds=retry_max_delay_seconds,
        )
        intake = Intake(
            self,
            "Intake",
            intake_fn=functions["intake"],
            intake_timeout_seconds=FUNCTIONS["intake"][2],
            max_concurrency=intake_max_concurrency,
        )
        api = Api(self, "Api", api_fn=functions["api"], rate_limit=api_rate_limit, burst_limit=api_burst_limit)
        state_machine = workflow.state_machine

        # Least privilege, one grant per need.
        for name, actions in TABLE_ACCESS.items():
            table.grant(functions[name], *actions)
        # the api (new runs, delayed releases after a cancel) and workflow_ended (after a timeout) send to intake
        release_delay = str(FUNCTIONS["step"][2] + 60)  # longer than a step call can run
        for name in ("api", "workflow_ended"):
            intake.queue.grant_send_messages(functions[name])
            functions[name].add_environment("STEPWISE_QUEUE_URL", intake.queue.queue_url)
            functions[name].add_environment("STEPWISE_RELEASE_DELAY_SECONDS", release_delay)
        functions["api"].add_environment("STEPWISE_STATE_MACHINE_ARN", state_machine.state_machine_arn)
        executions = Stack.of(self).format_arn(  # this state machine's executions (named by run id)
            service="states",
            resource="execution",
            resource_name=f"{state_machine.state_machine_name}:*",
            arn_format=ArnFormat.COLON_RESOURCE_NAME,
        )
        functions["api"].add_to_role_policy(
            iam.PolicyStatement(
                actions=["states:StopExecution"],
                resources=[executions],
            )
        )
        state_machine.grant_start_execution(functions["intake"])
        # the run watchdog: intake re-schedules its checks on its own queue and reads execution status
        intake.queue.grant_send_messages(functions["intake"])
        functions["intake"].add_environment("STEPWISE_QUEUE_URL", intake.queue.queue_url)
        functions["intake"].add_to_role_policy(
            iam.PolicyStatement(
                actions=["states:DescribeExecution"],
                resources=[executions],
            )
        )
        functions["intake"].add_environment("STEPWISE_STATE_MACHINE_ARN", state_machine.state_machine_arn)
        functions["intake"].add_environment("STEPWISE_INTAKE_MAX_RECEIVE_COUNT", str(INTAKE_MAX_RECEIVE_COUNT))
        secret.grant_read(functions["step"])
        if bedrock_fallback:  # Claude on Amazon Bedrock through the Converse API (foundation models and profiles)
            for name in ("step", "api"):
                functions[name].add_environment("STEPWISE_BEDROCK_FALLBACK", "true")
            functions["step"].add_to_role_policy(
                iam.PolicyStatement(
                    actions=["bedrock:InvokeModel"],
                    resources=[
                        "arn:aws:bedrock:*::foundation-model/anthropic.claude-*",
                        Stack.of(self).format_arn(
                            service="bedrock",
                            resource="inference-profile",
                            resource_name="*anthropic.claude-*",
                            region="*",
                        ),
                    ],
                )
            )
            account = "<AWS::AccountId>" if Token.is_unresolved(self.account) else self.account
            for resource in (
                "arn:aws:bedrock:*::foundation-model/anthropic.claude-*",
                f"arn:<AWS::Partition>:bedrock:*:{account}:inference-profile/*anthropic.claude-*",
            ):
                Validations.of(functions["step"]).acknowledge(
                    Acknowledgment(
                        id=f"AwsSolutions::AwsSolutions-IAM5[Resource::{resource}]",
                        reason="Claude models and inference profiles on Bedrock, in any region a cross-region "
                        "profile routes to: the narrowest grant the Converse API allows for them.",
                    )
                )
        budgets = {"TenantDaily": tenant_daily_budget_usd, "GlobalDaily": global_daily_budget_usd}
        for budget, env in (
            ("TenantDaily", "STEPWISE_TENANT_DAILY_BUDGET_USD"),
            ("GlobalDaily", "STEPWISE_GLOBAL_DAILY_BUDGET_USD"),
        ):
            if budgets[budget] is not None:  # the step function enforces them; the api reports against them
                for name in ("step", "api"):
                    functions[name].add_environment(env, str(budgets[budget]))
        if extra_prices:  # both the api (refuses unpriced models) and the step function (prices calls) read them
            for name in ("api", "step"):
                functions[name].add_environment("STEPWISE_EXTRA_PRICES", extra_prices)
        self.budget_alarms = BudgetAlarms(
            self, "BudgetAlarms", budgets=[name for name, limit in budgets.items() if limit is not None]
        )
        functions["step"].add_environment("STEPWISE_ANTHROPIC_SECRET_ARN", secret.secret_arn)

        CfnOutput(self, "ApiUrl", value=api.url, description="Base URL of the Stepwise HTTP API")
        CfnOutput(self, "AnthropicSecretName", value=secret.secret_name, description="Put your Anthropic API key here")
        CfnOutput(self, "TableName", value=table.table_name)
        CfnOutput(self, "StateMachineArn", value=state_machine.state_machine_arn)
        CfnOutput(self, "IntakeDeadLetterQueueUrl", value=intake.dead_letter_queue.queue_url)
        CfnOutput(self, "IntakeDeadLetterAlarmName", value=intake.dead_letter_alarm.alarm_name)

        self._acknowledge_nag_findings(functions, workflow, api)

    def _acknowledge_nag_findings(self, functions: AgentFunctions, workflow: AgentWorkflow, api: Api) -> None:
        """cdk-nag (AwsSolutions) findings accepted on purpose: exact findings, narrowest scope, with reasons."""

        def ack(scope: Construct, finding: str, reason: str) -> None:
            Validations.of(scope).acknowledge(Acknowledgment(id=f"AwsSolutions::AwsSolutions-{finding}", reason=reason))

        def ref(construct: Construct) -> str:
            return str(self.resolve(self.get_logical_id(construct.node.default_child)))  # type: ignore[arg-type]

        basic_role = "Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"
        ack(self, f"IAM4[{basic_role}]", "The AWS-maintained minimum for writing function logs.")
        ack(self, "L1", "Functions pin Python 3.13, the runtime the dependency layer is built for; bump both together.")
        ack(self, "SMG4", "The secret holds an API key that Anthropic issues; a rotation Lambda cannot mint one.")
        for fn in functions.functions.values():
            ack(
                fn,
                "IAM5[Resource::*]",
                "X-Ray PutTraceSegments/PutTelemetryRecords have no resource-level permissions.",
            )
        ack(workflow.state_machine, "IAM5[Resource::*]", "X-Ray and CloudWatch Logs delivery are account-level APIs.")
        for fn in (functions["step"], functions["tool"], functions["finalize"], functions["mark_failed"]):
            ack(
                workflow.state_machine,
                f"IAM5[Resource::<{ref(fn)}.Arn>:*]",
                "CDK grants invoke of the function's versions.",
            )
        region = "<AWS::Region>" if Token.is_unresolved(self.region) else self.region
        account = "<AWS::AccountId>" if Token.is_unresolved(self.account) else self.account
        executions = (
            f"Resource::arn:<AWS::Partition>:states:{region}:{account}:execution:<{ref(workflow.state_machine)}.Name>:*"
        )
        ack(functions["api"], f"IAM5[{executions}]", "StopExecution on executions of this stack's state machine only.")
        ack(
            functions["intake"],
            f"IAM5[{executions}]",
            "DescribeExecution (the run watchdog) on this machine's executions.",
        )
        ack(api.health_route, "APIG4", "GET /health is a public liveness probe; it returns no data.")
