"""HTTP API: the contract's routes, the API-key authorizer on all but the public ones, access logs, throttling."""

from __future__ import annotations

import json

from aws_cdk import Acknowledgment, Duration, RemovalPolicy, Validations
from aws_cdk import aws_apigatewayv2 as apigw
from aws_cdk import aws_apigatewayv2_authorizers as authorizers
from aws_cdk import aws_apigatewayv2_integrations as integrations
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from functions.handlers.openapi import ROUTES as OPERATIONS

# every route, once (functions/handlers/openapi.py, which the API serves as its OpenAPI document)
ROUTES = [(op.path, apigw.HttpMethod(op.method)) for op in OPERATIONS if not op.public]
PUBLIC_ROUTES = [(op.path, apigw.HttpMethod(op.method)) for op in OPERATIONS if op.public]


PUBLIC_RATE_LIMIT, PUBLIC_BURST_LIMIT = 5, 10


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
        self.public_routes = [
            route
            for path, method in PUBLIC_ROUTES
            for route in self.http_api.add_routes(
                path=path, methods=[method], integration=integration, authorizer=apigw.HttpNoneAuthorizer()
            )
        ]
        for route in self.public_routes:
            Validations.of(route).acknowledge(
                Acknowledgment(
                    id="AwsSolutions::AwsSolutions-APIG4",
                    reason="GET /health (a liveness probe) and GET /openapi.json (the API's document) are public; "
                    "they return no tenant's data and are throttled on their own.",
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
            f"{method.value} {path}": {
                "ThrottlingRateLimit": PUBLIC_RATE_LIMIT,
                "ThrottlingBurstLimit": PUBLIC_BURST_LIMIT,
            }
            for path, method in PUBLIC_ROUTES
        }

    @property
    def url(self) -> str:
        return self.http_api.api_endpoint + "/"
