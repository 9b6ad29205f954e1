"""HTTP API: the routes of the contract, IAM (SigV4) auth on every route but /health, access logs, throttling."""

from __future__ import annotations

import json

from aws_cdk import Acknowledgment, Duration, RemovalPolicy, Validations
from aws_cdk import aws_apigatewayv2 as apigw
from aws_cdk import aws_apigatewayv2_authorizers as authorizers
from aws_cdk import aws_apigatewayv2_integrations as integrations
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

ROUTES = [
    ("/runs", apigw.HttpMethod.POST),
    ("/runs/{run_id}", apigw.HttpMethod.GET),
    ("/runs/{run_id}/steps", apigw.HttpMethod.GET),
    ("/runs/{run_id}/cancel", apigw.HttpMethod.POST),
    ("/runs/{run_id}/tool_results/{tool_use_id}", apigw.HttpMethod.GET),
    ("/costs", apigw.HttpMethod.GET),
    # the Managed Agents API (functions/handlers/managed_agents.py)
    ("/v1/agents", apigw.HttpMethod.POST),
    ("/v1/agents", apigw.HttpMethod.GET),
    ("/v1/agents/{agent_id}", apigw.HttpMethod.GET),
    ("/v1/agents/{agent_id}", apigw.HttpMethod.POST),
    ("/v1/agents/{agent_id}/archive", apigw.HttpMethod.POST),
    ("/v1/agents/{agent_id}/versions", apigw.HttpMethod.GET),
    ("/v1/sessions", apigw.HttpMethod.POST),
    ("/v1/sessions", apigw.HttpMethod.GET),
    ("/v1/sessions/{session_id}", apigw.HttpMethod.GET),
    ("/v1/sessions/{session_id}", apigw.HttpMethod.DELETE),
    ("/v1/sessions/{session_id}", apigw.HttpMethod.POST),  # answers 400: not supported
    ("/v1/sessions/{session_id}/archive", apigw.HttpMethod.POST),
    ("/v1/sessions/{session_id}/events", apigw.HttpMethod.POST),
    ("/v1/sessions/{session_id}/events", apigw.HttpMethod.GET),
    ("/v1/sessions/{session_id}/events/stream", apigw.HttpMethod.GET),
    ("/v1/sessions/{session_id}/tool_results/{tool_use_id}", apigw.HttpMethod.GET),  # Stepwise
]


HEALTH_RATE_LIMIT, HEALTH_BURST_LIMIT = 5, 10


class Api(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        api_fn: lambda_.IFunction,
        authorizer_fn: lambda_.IFunction,
        rate_limit: int,
        burst_limit: int,
    ) -> None:
        super().__init__(scope, construct_id)
        integration = integrations.HttpLambdaIntegration("ApiIntegration", api_fn)
        self.http_api = apigw.HttpApi(self, "HttpApi", description="Stepwise: durable, budgeted agent runs")
        # every route but /health: the request's API key (x-api-key or Authorization: Bearer) decides its tenant.
        # No identity source (a request carries one header or the other), so API Gateway does not cache answers;
        # the authorizer caches them itself (functions/handlers/authorizer.py).
        keys = authorizers.HttpLambdaAuthorizer(
            "ApiKeys",
            authorizer_fn,
            response_types=[authorizers.HttpLambdaResponseType.SIMPLE],
            identity_source=[],
            results_cache_ttl=Duration.seconds(0),
        )
        for path, method in ROUTES:
            self.http_api.add_routes(path=path, methods=[method], integration=integration, authorizer=keys)
        (self.health_route,) = self.http_api.add_routes(
            path="/health",
            methods=[apigw.HttpMethod.GET],
            integration=integration,
            authorizer=apigw.HttpNoneAuthorizer(),
        )
        Validations.of(self.health_route).acknowledge(
            Acknowledgment(
                id="AwsSolutions::AwsSolutions-APIG4",
                reason="GET /health is a public liveness probe; it returns no data.",
            )
        )

        access_logs = logs.LogGroup(
            self, "AccessLogs", retention=logs.RetentionDays.ONE_MONTH, removal_policy=RemovalPolicy.DESTROY
        )
        stage = self.http_api.default_stage
        assert stage is not None
        cfn_stage = stage.node.default_child
        assert isinstance(cfn_stage, apigw.CfnStage)
        cfn_stage.access_log_settings = apigw.CfnStage.AccessLogSettingsProperty(
            destination_arn=access_logs.log_group_arn,
            format=json.dumps(
                {
                    "requestId": "$context.requestId",
                    "ip": "$context.identity.sourceIp",
                    "caller": "$context.identity.caller",
                    "routeKey": "$context.routeKey",
                    "status": "$context.status",
                    "latency": "$context.responseLatency",
                    "error": "$context.integrationErrorMessage",
                }
            ),
        )
        cfn_stage.default_route_settings = apigw.CfnStage.RouteSettingsProperty(
            throttling_rate_limit=rate_limit, throttling_burst_limit=burst_limit
        )
        # the public route is throttled on its own: anonymous callers cannot spend the API's rate on Lambdas
        cfn_stage.route_settings = {
            "GET /health": {"ThrottlingRateLimit": HEALTH_RATE_LIMIT, "ThrottlingBurstLimit": HEALTH_BURST_LIMIT}
        }

    @property
    def url(self) -> str:
        return self.http_api.api_endpoint + "/"
