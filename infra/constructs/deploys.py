"""Safe deploys: each function's ``live`` alias shifted to its new version by CodeDeploy, canary or linear
(CDK context ``deploy_strategy``), and rolled back when the new version's rollback alarm goes off.

With ``all_at_once`` (the default) there is nothing here: CloudFormation points each alias at its new version
in one go. Otherwise every function gets a deployment group, because they all ship one code asset (any code
change publishes a new version of each) and each is on a run's path: a function left out would take all of its
traffic at once. A rollback alarm watches the version being deployed, through the alias (the ``ExecutedVersion``
dimension), so a 10 % canary's errors are not diluted by the old version's traffic: its error rate, once at
least ``ROLLBACK_MIN_ERRORS`` invocations failed in a minute, at ``ROLLBACK_ERROR_PERCENT`` for
``ROLLBACK_MINUTES`` minutes in a row. Throttles are not watched: they come from concurrency the two versions
share, and a rollback would not cure them.

A failed, alarmed or stopped deployment is rolled back: CodeDeploy points the alias back at the old version,
and CloudFormation rolls the stack update back."""

from __future__ import annotations

from aws_cdk import Acknowledgment, CfnOutput, Duration, Validations
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_codedeploy as codedeploy
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

from infra.constants import ROLLBACK_ERROR_PERCENT, ROLLBACK_MIN_ERRORS, ROLLBACK_MINUTES
from infra.constructs.agent_functions import AgentFunctions
from infra.constructs.monitoring import alarm_name, described

_CONFIG = codedeploy.LambdaDeploymentConfig
ALL_AT_ONCE = "all_at_once"
# CDK context deploy_strategy -> CodeDeploy's predefined configuration (None: no CodeDeploy)
DEPLOY_STRATEGIES: dict[str, codedeploy.ILambdaDeploymentConfig | None] = {
    ALL_AT_ONCE: None,
    "canary_10pct_5m": _CONFIG.CANARY_10_PERCENT_5_MINUTES,
    "canary_10pct_10m": _CONFIG.CANARY_10_PERCENT_10_MINUTES,
    "canary_10pct_15m": _CONFIG.CANARY_10_PERCENT_15_MINUTES,
    "canary_10pct_30m": _CONFIG.CANARY_10_PERCENT_30_MINUTES,
    "linear_10pct_1m": _CONFIG.LINEAR_10_PERCENT_EVERY_1_MINUTE,
    "linear_10pct_2m": _CONFIG.LINEAR_10_PERCENT_EVERY_2_MINUTES,
    "linear_10pct_3m": _CONFIG.LINEAR_10_PERCENT_EVERY_3_MINUTES,
    "linear_10pct_10m": _CONFIG.LINEAR_10_PERCENT_EVERY_10_MINUTES,
}
CODEDEPLOY_POLICY = "service-role/AWSCodeDeployRoleForLambdaLimited"


def deploy_strategy(value: object) -> str:
    """The ``deploy_strategy`` context's value, checked (raises ValueError naming it and the choices)."""
    chosen = ALL_AT_ONCE if value in (None, "") else str(value)
    if chosen not in DEPLOY_STRATEGIES:
        raise ValueError(f"deploy_strategy {value!r}: one of {', '.join(DEPLOY_STRATEGIES)}")
    return chosen


class SafeDeploys(Construct):
    """``rollback_alarms``: one per function (empty for all_at_once), to route to the operators' topic;
    ``deployment_groups``: function name -> its CodeDeploy deployment group."""

    def __init__(self, scope: Construct, construct_id: str, *, functions: AgentFunctions, strategy: str) -> None:
        super().__init__(scope, construct_id)
        config = DEPLOY_STRATEGIES[deploy_strategy(strategy)]
        self.rollback_alarms: list[cloudwatch.Alarm] = []
        self.deployment_groups: dict[str, codedeploy.LambdaDeploymentGroup] = {}
        if config is None:
            return
        self.application = codedeploy.LambdaApplication(self, "Application")
        # one service role for every group: what CodeDeploy needs to shift an alias and read its alarms
        role = iam.Role(
            self,
            "Role",
            assumed_by=iam.ServicePrincipal("codedeploy.amazonaws.com"),
            managed_policies=[iam.ManagedPolicy.from_aws_managed_policy_name(CODEDEPLOY_POLICY)],
        )
        Validations.of(role).acknowledge(
            Acknowledgment(
                id=f"AwsSolutions::AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/{CODEDEPLOY_POLICY}]",
                reason="The AWS-maintained minimum for CodeDeploy to shift a Lambda alias and read its alarms.",
            )
        )
        for spec, function in functions:
            alias = functions.alias(spec.name)
            alarm = self._rollback_alarm(spec.name, function, alias)
            group = codedeploy.LambdaDeploymentGroup(
                self,
                f"{spec.name}Deployment",
                application=self.application,
                alias=alias,
                role=role,
                deployment_config=config,
                alarms=[alarm],
                auto_rollback=codedeploy.AutoRollbackConfig(
                    failed_deployment=True, deployment_in_alarm=True, stopped_deployment=True
                ),
            )
            # the alarm watches the new version before the alias's traffic starts to move to it
            alias.node.add_dependency(alarm)
            self.rollback_alarms.append(alarm)
            self.deployment_groups[spec.name] = group
        output = CfnOutput(self, "ApplicationName", value=self.application.application_name,
                           description="The CodeDeploy application of the functions' deployments")  # fmt: skip
        output.override_logical_id("DeployApplicationName")

    def _rollback_alarm(self, name: str, function: lambda_.IFunction, alias: lambda_.Alias) -> cloudwatch.Alarm:
        """The error rate of the version being deployed (invoked through the alias) over one-minute periods."""
        dimensions = {
            "FunctionName": function.function_name,
            "Resource": f"{function.function_name}:{alias.alias_name}",
            "ExecutedVersion": alias.version.version,
        }

        def per_minute(metric_name: str) -> cloudwatch.Metric:
            return cloudwatch.Metric(namespace="AWS/Lambda", metric_name=metric_name, dimensions_map=dimensions,
                                     statistic="Sum", period=Duration.minutes(1))  # fmt: skip

        error_rate = cloudwatch.MathExpression(
            expression=f"IF(errors >= {ROLLBACK_MIN_ERRORS}, 100 * errors / invocations, 0)",
            using_metrics={"errors": per_minute("Errors"), "invocations": per_minute("Invocations")},
            period=Duration.minutes(1),
            label=f"{name}: error rate of the version being deployed (%)",
        )
        return cloudwatch.Alarm(
            self,
            f"{name}RollbackAlarm",
            alarm_name=alarm_name(self, f"rollback-{name.replace('_', '-')}"),
            alarm_description=described(
                "rollback",
                f"Stepwise {name}: the version being deployed failed {ROLLBACK_ERROR_PERCENT} % or more of its "
                f"invocations (at least {ROLLBACK_MIN_ERRORS} a minute) for {ROLLBACK_MINUTES} minutes: "
                "CodeDeploy rolls the deployment back.",
            ),
            metric=error_rate,
            threshold=ROLLBACK_ERROR_PERCENT,
            evaluation_periods=ROLLBACK_MINUTES,
            datapoints_to_alarm=ROLLBACK_MINUTES,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
