"""The Lambda functions: Python 3.13 on ARM64, one shared dependency layer, JSON logs, X-Ray."""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from infra.constants import FUNCTIONS, METRICS_NAMESPACE, service_name
from infra.packaging import dependencies_layer_code, function_code


class AgentFunctions(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, environment: dict[str, str]) -> None:
        super().__init__(scope, construct_id)
        self.layer = lambda_.LayerVersion(
            self,
            "Dependencies",
            code=dependencies_layer_code(),
            compatible_runtimes=[lambda_.Runtime.PYTHON_3_13],
            compatible_architectures=[lambda_.Architecture.ARM_64],
            description="Stepwise runtime dependencies (requirements.txt) for Python 3.13 ARM64",
        )
        code = function_code()
        self.functions: dict[str, lambda_.Function] = {}
        for name, (handler, memory, timeout) in FUNCTIONS.items():
            self.functions[name] = self._build_function(name, handler, memory, timeout, code, environment)

    def _build_function(
        self, name: str, handler: str, memory: int, timeout: int, code: lambda_.Code, environment: dict[str, str]
    ) -> lambda_.Function:
        log_group = logs.LogGroup(
            self, f"{name}Logs", retention=logs.RetentionDays.ONE_MONTH, removal_policy=RemovalPolicy.DESTROY
        )
        return lambda_.Function(
            self,
            name,
            runtime=lambda_.Runtime.PYTHON_3_13,
            architecture=lambda_.Architecture.ARM_64,
            handler=handler,
            code=code,
            layers=[self.layer],
            memory_size=memory,
            timeout=Duration.seconds(timeout),
            tracing=lambda_.Tracing.ACTIVE,
            log_group=log_group,
            logging_format=lambda_.LoggingFormat.JSON,
            environment={
                **environment,
                "POWERTOOLS_METRICS_NAMESPACE": METRICS_NAMESPACE,
                "POWERTOOLS_SERVICE_NAME": service_name(name),
            },
        )

    def __getitem__(self, name: str) -> lambda_.Function:
        """The function named as in infra.constants.FUNCTIONS (api, intake, step, tool, ...)."""
        return self.functions[name]
