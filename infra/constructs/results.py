"""The bucket for whole tool results too large for the table (functions/agent/results.py): encrypted, private,
TLS-only, objects expired after ``retention_days``. Keys start with the tenant."""

from __future__ import annotations

from aws_cdk import Acknowledgment, Duration, RemovalPolicy, Stack, Validations
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3
from constructs import Construct

from functions.adapters.settings import ApiSettings, ResultSettings, StepSettings, ToolSettings
from infra.constructs.agent_functions import AgentFunctions


class ToolResults(Construct):
    def __init__(
        self, scope: Construct, construct_id: str, *, retention_days: int, removal_policy: RemovalPolicy
    ) -> None:
        super().__init__(scope, construct_id)
        self.bucket = s3.Bucket(
            self,
            "Bucket",
            encryption=s3.BucketEncryption.S3_MANAGED,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            versioned=False,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            lifecycle_rules=[
                s3.LifecycleRule(
                    id="ExpireToolResults",
                    expiration=Duration.days(retention_days),
                    abort_incomplete_multipart_upload_after=Duration.days(1),
                )
            ],
            removal_policy=removal_policy,
        )
        Validations.of(self.bucket).acknowledge(
            Acknowledgment(
                id="AwsSolutions::AwsSolutions-S1",
                reason="Objects are written and read only by this stack's functions (CloudTrail data events cover "
                "access if needed); a second bucket of access logs would outlive the results it describes.",
            )
        )

    @property
    def settings(self) -> dict[str, str]:
        return {"STEPWISE_RESULTS_BUCKET": self.bucket.bucket_name}

    @property
    def _bucket_ref(self) -> str:
        stack = Stack.of(self)
        return str(stack.resolve(stack.get_logical_id(self.bucket.node.default_child)))  # type: ignore[arg-type]

    def grant(self, functions: AgentFunctions) -> None:
        """The tool and step functions put whole results (the step: of the fast calls it runs itself); the api function
        gets them (GET .../tool_results/{id}). Objects only: the writers may not list the bucket (keys name tenants and
        runs)."""
        for spec, function in functions:
            if not spec.reads(ResultSettings):
                continue
            action = "s3:PutObject" if spec.settings in (ToolSettings, StepSettings) else "s3:GetObject"
            if spec.settings is ApiSettings:  # without it S3 answers a missing (expired) object 403, not 404
                function.add_to_role_policy(iam.PolicyStatement(actions=["s3:ListBucket"],
                                                                resources=[self.bucket.bucket_arn]))  # fmt: skip
            assert spec.settings in (ToolSettings, StepSettings, ApiSettings), spec.name
            function.add_to_role_policy(
                iam.PolicyStatement(actions=[action], resources=[self.bucket.arn_for_objects("*")])
            )
            Validations.of(function).acknowledge(
                Acknowledgment(
                    id=f"AwsSolutions::AwsSolutions-IAM5[Resource::<{self._bucket_ref}.Arn>/*]",
                    reason="Objects of the results bucket only (keys are per tenant, run and call).",
                )
            )
