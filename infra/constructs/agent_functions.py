"""The Lambda functions of infra/functions.py: Python 3.13 on ARM64, one shared dependency layer, JSON logs,
X-Ray. Each gets exactly the environment its settings model names (``configure``).

Each function is published as a version on every change of its code or configuration, behind the alias
``live``; whatever invokes a function (a workflow task, the API's integration and authorizer, an event source
mapping, a rule, a function URL) invokes ``alias(name)``, never the function itself, so that a deploy can shift
the alias's traffic gradually and roll back (infra/constructs/deploys.py). Old versions are kept: pointing the
alias back at one is the quickest rollback by hand (see the README)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from aws_cdk import Aws, Duration, RemovalPolicy
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from infra.functions import FUNCTIONS, FunctionSpec
from infra.packaging import dependencies_layer_code, function_code

XRAY_WRITE_POLICY = "AWSXRayDaemonWriteAccess"  # PutTraceSegments, PutTelemetryRecords, the sampling rules' reads
ALIAS = "live"  # the alias every invoker calls


# The AWS Lambda Web Adapter (github.com/aws/aws-lambda-web-adapter), published by AWS as a public layer per region
WEB_ADAPTER_ACCOUNT = "753240598075"
WEB_ADAPTER_LAYER_VERSION = 27  # CDK context web_adapter_layer_version (1.0.0 at 27)
WEB_ADAPTER_PORT = 8080
WEB_ADAPTER_ENVIRONMENT = {
    "AWS_LAMBDA_EXEC_WRAPPER": "/opt/bootstrap",  # the layer's wrapper runs the handler script, not the runtime
    "AWS_LWA_INVOKE_MODE": "response_stream",  # as the function URL's invoke mode
    "AWS_LWA_PORT": str(WEB_ADAPTER_PORT),
    "AWS_LWA_READINESS_CHECK_PATH": "/health",
    # the app's process never sees an invocation's trace id (the adapter passes it as a header): its tracer would
    # discard every AWS call's subsegment, logging a warning for each (two a second an open stream). Lambda's active
    # tracing still records each invocation.
    "POWERTOOLS_TRACE_DISABLED": "true",
}


class AgentFunctions(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        log_retention: logs.RetentionDays,
        web_adapter_layer_version: int = WEB_ADAPTER_LAYER_VERSION,
        snap_start: frozenset[str] = frozenset(),
        provisioned_concurrency: Mapping[str, int] | None = None,
        memory_mb: Mapping[str, int] | None = None,
    ) -> None:
        """``snap_start``: the functions whose published versions start from a SnapStart snapshot (CDK context
        step_snapstart); ``provisioned_concurrency``: environments kept initialised on a function's alias, by name
        (step_provisioned_concurrency); ``memory_mb``: a function's memory other than its spec's, by name
        (step_memory_mb). Raises ValueError for a function given both (SnapStart does not support
        provisioned concurrency) or an unknown name."""
        super().__init__(scope, construct_id)
        provisioned = {name: count for name, count in (provisioned_concurrency or {}).items() if count}
        self.memory_mb = dict(memory_mb or {})
        unknown = sorted((snap_start | provisioned.keys() | self.memory_mb.keys()) - FUNCTIONS.keys())
        if unknown:
            raise ValueError(f"no function named {', '.join(unknown)}")
        if both := sorted(snap_start & provisioned.keys()):
            raise ValueError(f"SnapStart does not support provisioned concurrency: choose one for {', '.join(both)}")
        self.snap_start = snap_start
        self.web_adapter_layer_version = web_adapter_layer_version
        self._web_adapter_layer: lambda_.ILayerVersion | None = None
        self.layer = lambda_.LayerVersion(
            self,
            "Dependencies",
            code=dependencies_layer_code(),
            compatible_runtimes=[lambda_.Runtime.PYTHON_3_13],
            compatible_architectures=[lambda_.Architecture.ARM_64],
            description="Stepwise runtime dependencies (requirements.txt) for Python 3.13 ARM64",
        )
        code = function_code()
        self.functions = {name: self._build_function(spec, code, log_retention) for name, spec in FUNCTIONS.items()}
        # the version is published from the function's final configuration (its hash is computed at synth, after
        # ``configure``); each deploy that changes a function publishes a new one and points the alias at it
        self.aliases = {
            name: function.add_alias(ALIAS, provisioned_concurrent_executions=provisioned.get(name))
            for name, function in self.functions.items()
        }

    def _build_function(
        self, spec: FunctionSpec, code: lambda_.Code, log_retention: logs.RetentionDays
    ) -> lambda_.Function:
        log_group = logs.LogGroup(
            self, f"{spec.name}Logs", retention=log_retention, removal_policy=RemovalPolicy.DESTROY
        )
        function = lambda_.Function(
            self,
            spec.name,
            runtime=lambda_.Runtime.PYTHON_3_13,
            architecture=lambda_.Architecture.ARM_64,
            handler=spec.handler,
            code=code,
            layers=[self.layer],
            memory_size=self.memory_mb.get(spec.name, spec.memory_mb),
            timeout=Duration.seconds(spec.timeout_seconds),
            log_group=log_group,
            logging_format=lambda_.LoggingFormat.JSON,
            current_version_options=lambda_.VersionOptions(removal_policy=RemovalPolicy.RETAIN),
            # initialised when a version is published; each new environment resumes from its snapshot
            snap_start=lambda_.SnapStartConf.ON_PUBLISHED_VERSIONS if spec.name in self.snap_start else None,
        )
        # X-Ray, active: set on the resource, the permission from the AWS-managed write-only policy (acknowledged by
        # its name), not as an inline Resource "*" statement, so that any Resource "*" on a role fails synth
        cfn = function.node.default_child
        assert isinstance(cfn, lambda_.CfnFunction)
        cfn.tracing_config = lambda_.CfnFunction.TracingConfigProperty(mode="Active")
        assert function.role is not None
        function.role.add_managed_policy(iam.ManagedPolicy.from_aws_managed_policy_name(XRAY_WRITE_POLICY))
        if spec.web_adapter:
            function.add_layers(self._web_adapter())
            for name, value in WEB_ADAPTER_ENVIRONMENT.items():
                function.add_environment(name, value)
        return function

    def _web_adapter(self) -> lambda_.ILayerVersion:
        """The Web Adapter's ARM64 layer in the stack's region (commercial regions)."""
        if self._web_adapter_layer is None:
            arn = (f"arn:{Aws.PARTITION}:lambda:{Aws.REGION}:{WEB_ADAPTER_ACCOUNT}:layer:LambdaAdapterLayerArm64:"
                   f"{self.web_adapter_layer_version}")  # fmt: skip
            self._web_adapter_layer = lambda_.LayerVersion.from_layer_version_arn(self, "WebAdapter", arn)
        return self._web_adapter_layer

    def configure(self, values: Mapping[str, str]) -> None:
        """Give every function the variables its settings name (raises naming one the stack lacks)."""
        for spec, function in self:
            for name, value in spec.environment(values).items():
                function.add_environment(name, value)

    def __iter__(self) -> Iterator[tuple[FunctionSpec, lambda_.Function]]:
        return ((FUNCTIONS[name], function) for name, function in self.functions.items())

    def __getitem__(self, name: str) -> lambda_.Function:
        """The function named as in infra/functions.py (api, intake, step, tool, ...): for its role, its grants
        and its configuration. To invoke it, use ``alias``."""
        return self.functions[name]

    def alias(self, name: str) -> lambda_.Alias:
        """What invokes function ``name`` invokes: its ``live`` alias (a workflow task's ``lambda_function``, an
        integration's or authorizer's handler, ``alias(name).add_event_source(...)``, a rule's target,
        ``alias(name).add_function_url(...)``). Grants to invoke it are on the alias's ARN alone."""
        return self.aliases[name]
