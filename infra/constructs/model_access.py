"""What the functions that call models need: the Anthropic API key (a secret) and, opt-in, Claude on Bedrock."""

from __future__ import annotations

from aws_cdk import Acknowledgment, Stack, Token, Validations
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

from infra.constants import MODEL_TIMEOUT_SECONDS
from infra.constructs.agent_functions import AgentFunctions

CLAUDE_FOUNDATION_MODELS = "arn:aws:bedrock:*::foundation-model/anthropic.claude-*"


class ModelAccess(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, secret: secretsmanager.ISecret, bedrock: bool) -> None:
        super().__init__(scope, construct_id)
        self.secret, self.bedrock = secret, bedrock
        Validations.of(self.secret).acknowledge(
            Acknowledgment(
                id="AwsSolutions::AwsSolutions-SMG4",
                reason="The secret holds an API key that Anthropic issues; a rotation Lambda cannot mint one.",
            )
        )

    @property
    def settings(self) -> dict[str, str]:
        return {
            "STEPWISE_MODEL_PROVIDER": "anthropic",
            "STEPWISE_ANTHROPIC_SECRET_ARN": self.secret.secret_arn,
            "STEPWISE_MODEL_TIMEOUT_SECONDS": str(MODEL_TIMEOUT_SECONDS),
            "STEPWISE_BEDROCK_FALLBACK": "true" if self.bedrock else "false",
        }

    def grant(self, functions: AgentFunctions) -> None:
        """Functions that call models read the key and, with Bedrock on, invoke Claude models and profiles."""
        for spec, function in functions:
            if not spec.calls_models:
                continue
            self.secret.grant_read(function)
            if self.bedrock:
                self._grant_bedrock(function)

    def _grant_bedrock(self, function: lambda_.Function) -> None:
        stack = Stack.of(self)
        profiles = stack.format_arn(
            service="bedrock", resource="inference-profile", resource_name="*anthropic.claude-*", region="*"
        )
        function.add_to_role_policy(
            iam.PolicyStatement(actions=["bedrock:InvokeModel"], resources=[CLAUDE_FOUNDATION_MODELS, profiles])
        )
        account = "<AWS::AccountId>" if Token.is_unresolved(stack.account) else stack.account
        for resource in (
            CLAUDE_FOUNDATION_MODELS,
            f"arn:<AWS::Partition>:bedrock:*:{account}:inference-profile/*anthropic.claude-*",
        ):
            Validations.of(function).acknowledge(
                Acknowledgment(
                    id=f"AwsSolutions::AwsSolutions-IAM5[Resource::{resource}]",
                    reason="Claude models and inference profiles on Bedrock, in any region a cross-region "
                    "profile routes to: the narrowest grant the Converse API allows for them.",
                )
            )
