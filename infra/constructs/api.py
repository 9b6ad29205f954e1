"""HTTP API: the contract's routes, the deployment's authorizer on all but the public ones, access logs, throttling.

The authorizer is chosen at deploy time (CDK context ``auth``, see ``ApiAuth``): API keys (the stack's Lambda
authorizer, the default), JWTs of an OIDC issuer (API Gateway's JWT authorizer) or IAM (SigV4, principals
mapped to tenants by an allow-list). A route has one authorizer, so a deployment has one way in."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

from aws_cdk import Acknowledgment, Duration, RemovalPolicy, Validations
from aws_cdk import aws_apigatewayv2 as apigw
from aws_cdk import aws_apigatewayv2_authorizers as authorizers
from aws_cdk import aws_apigatewayv2_integrations as integrations
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct
from pydantic import Field, model_validator

from functions.handlers.openapi import ROUTES as OPERATIONS
from functions.handlers.tenancy import Auth

# every route, once (functions/handlers/openapi.py, which the API serves as its OpenAPI document)
ROUTES = [(op.path, apigw.HttpMethod(op.method)) for op in OPERATIONS if not op.public]
PUBLIC_ROUTES = [(op.path, apigw.HttpMethod(op.method)) for op in OPERATIONS if op.public]


PUBLIC_RATE_LIMIT, PUBLIC_BURST_LIMIT = 5, 10
MAX_IAM_TENANTS_BYTES = 2_048  # of the api function's 4 KB of environment (about 25 role ARNs)


class ApiAuth(Auth):
    """The deployment's ``auth`` context, checked at synth: a JWT needs an https issuer and an audience, IAM an
    allow-list; the local stack's open mode cannot be deployed."""

    jwt_issuer: str | None = None
    jwt_audience: tuple[str, ...] = Field(default=(), max_length=20)

    @model_validator(mode="after")
    def _complete(self) -> ApiAuth:
        if self.mode == "none":
            raise ValueError("auth 'none' is the local stack's; deploy with api_key, jwt or iam")
        if self.mode == "jwt":
            issuer = urlsplit(self.jwt_issuer or "")
            if issuer.scheme != "https" or not issuer.hostname:
                raise ValueError("auth 'jwt' needs jwt_issuer, the issuer's https URL (its OIDC discovery base)")
            if not self.jwt_audience or not all(0 < len(aud) <= 256 for aud in self.jwt_audience):
                raise ValueError("auth 'jwt' needs jwt_audience: the client ids (or aud values) tokens are for")
        elif self.jwt_issuer or self.jwt_audience:
            raise ValueError(f"jwt_issuer and jwt_audience are for auth 'jwt', not {self.mode!r}")
        if self.mode == "iam" and not self.iam_tenants:
            raise ValueError("auth 'iam' needs iam_tenants: {role or user ARN: tenant}, who may call as which tenant")
        if len(json.dumps(dict(self.iam_tenants))) > MAX_IAM_TENANTS_BYTES:
            raise ValueError(
                f"iam_tenants: at most {MAX_IAM_TENANTS_BYTES} bytes as JSON (a function's environment is 4 KB in "
                "all); map roles, not people, or use JWTs for many callers"
            )
        if self.mode != "iam" and self.iam_tenants:
            raise ValueError(f"iam_tenants is for auth 'iam', not {self.mode!r}")
        return self

    @property
    def settings(self) -> dict[str, str]:
        """What the api function reads to decide a request's tenant (functions/handlers/tenancy.py)."""
        return {
            "STEPWISE_AUTH": self.mode,
            "STEPWISE_TENANT_CLAIM": self.tenant_claim,
            "STEPWISE_IAM_TENANTS": json.dumps(dict(self.iam_tenants)) if self.iam_tenants else "",
        }

    def authorizer(self, authorizer_fn: lambda_.IFunction) -> apigw.IHttpRouteAuthorizer:
        if self.mode == "jwt":
            assert self.jwt_issuer is not None  # validated
            return authorizers.HttpJwtAuthorizer(
                "Jwt", self.jwt_issuer, jwt_audience=list(self.jwt_audience),
                identity_source=["$request.header.Authorization"],
            )  # fmt: skip
        if self.mode == "iam":
            return authorizers.HttpIamAuthorizer()
        # A request carries its key in one header or the other, so no identity source: API Gateway then caches
        # nothing, and the authorizer caches its answers itself (functions/handlers/authorizer.py).
        return authorizers.HttpLambdaAuthorizer(
            "ApiKeys",
            authorizer_fn,
            response_types=[authorizers.HttpLambdaResponseType.SIMPLE],
            identity_source=[],
            results_cache_ttl=Duration.seconds(0),
        )

    @classmethod
    def from_context(cls, context: Any) -> ApiAuth:
        """From CDK context (cdk.json or -c): ``auth``, ``jwt_issuer``, ``jwt_audience``, ``jwt_tenant_claim``,
        ``iam_tenants``; lists and objects as JSON text from -c."""

        def parsed(name: str) -> Any:
            value = context(name)
            return json.loads(value) if isinstance(value, str) and value[:1] in "[{" else value

        audience = parsed("jwt_audience")
        fields = {
            "mode": context("auth") or "api_key",
            "jwt_issuer": context("jwt_issuer") or None,
            "jwt_audience": [audience] if isinstance(audience, str) else (audience or []),
            "tenant_claim": context("jwt_tenant_claim") or "tenant",
            "iam_tenants": parsed("iam_tenants") or {},
        }
        return cls.model_validate(fields)


class Api(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        api_fn: lambda_.IFunction,
        authorizer_fn: lambda_.IFunction,
        auth: ApiAuth,
        log_retention: logs.RetentionDays,
        rate_limit: int,
        burst_limit: int,
    ) -> None:
        super().__init__(scope, construct_id)
        integration = integrations.HttpLambdaIntegration("ApiIntegration", api_fn)
        self.http_api = apigw.HttpApi(self, "HttpApi", description="Stepwise: durable, budgeted agent runs")
        authorizer = auth.authorizer(authorizer_fn)
        for path, method in ROUTES:
            self.http_api.add_routes(path=path, methods=[method], integration=integration, authorizer=authorizer)
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

        access_logs = logs.LogGroup(self, "AccessLogs", retention=log_retention, removal_policy=RemovalPolicy.DESTROY)
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
